"""SFT training throughput of SmolLM2-135M at seq 512, through the real training path (one process)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from rlhf_cli.bench.peak import peak_rss_mb

N_PARAMS_135M = 134_515_008

# Steps a training-throughput benchmark drops before it measures (``warmup=N`` overrides). A run's heap
# grows to its high-water mark over its first steps (the Adam states at the end of step 1, then the
# largest batch so far): on the 2-core CPU, steps 2 and 3 of an SFT run still page-fault ~1 GB in
# (1.6-2.1 s of sys time; 117 tokens/s against 139-143 once no step faults). A long run pays that once,
# so the benchmarks report the rate held after it; TRL's runs drop the same count (bench/peer_trl).
WARMUP_STEPS = 3


def warmup_option(opts: dict, steps: int) -> int:
    """The ``warmup=N`` option (default WARMUP_STEPS), checked to leave ``steps`` something to measure."""
    warmup = int(opts.get("warmup", WARMUP_STEPS))
    check_measured_steps(steps, warmup)
    return warmup


def check_measured_steps(steps: int, warmup: int) -> None:
    from rlhf_cli.errors import ConfigError

    if steps <= warmup:
        raise ConfigError(f"bench: steps={steps} leaves nothing to measure after warmup={warmup} warm-up steps")


def run_training_bench(stage: str, overrides, steps: int, key: str = "step_time", warmup: int = 1):
    """Run ``steps`` real optimizer steps in-process; return the metrics rows (those with ``key``: by default
    every stage's step rows, not its eval rows) after the first ``warmup``."""
    from rlhf_cli.config.compose import compose, to_yaml
    from rlhf_cli.models.embedded import prepare_model
    from rlhf_cli.training.run_dir import prepare_output_dir
    from rlhf_cli.worker import run_worker

    check_measured_steps(steps, warmup)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(stage, None, list(overrides) + [f"train.max_steps={steps}", f"output_dir={tmp}/run",
                                                      "train.save_every=0", "log.progress=false",
                                                      "data.eval_fraction=0"])
        prepare_model(cfg)
        code = run_worker(str(prepare_output_dir(cfg, to_yaml(cfg))))
        if code != 0:
            raise RuntimeError(f"benchmark run failed with exit code {code}")
        rows = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    measured = [r for r in rows if key in r][warmup:]
    if not measured:  # a renamed metric must fail here, by name, not as a division by zero in the caller
        raise RuntimeError(f"benchmark: no {stage} metrics row has {key!r} after {warmup} warm-up step(s)")
    return measured


def throughput(rows):
    """(tokens/s over all the rows' steps, their total seconds, mean padding fraction) of metrics rows."""
    t = sum(r["step_time"] for r in rows)
    return (sum(r["tokens_per_s"] * r["step_time"] for r in rows) / t, t,
            sum(r["padding_fraction"] for r in rows) / len(rows))


def run(peak_gflops: float, opts: dict) -> dict:
    seq = int(opts.get("seq", 512))
    steps = int(opts.get("steps", 6))
    compile_ = str(opts.get("compile", "false")).lower()
    rows = run_training_bench("sft", ["model=smollm2-135m", "engine=zero0", f"data.max_length={seq}",
                                      "train.micro_batch_size=4", "data.packing=true", f"model.compile={compile_}"],
                              steps, warmup=warmup_option(opts, steps))
    tok_s, _, padding = throughput(rows)
    flops = 6 * N_PARAMS_135M * tok_s
    return {"bench": "sft", "model": "SmolLM2-135M", "seq": seq, "compile": compile_, "tokens_per_s": round(tok_s, 1),
            "achieved_gflops_6N": round(flops / 1e9, 2), "fraction_of_matmul_peak": round(flops / 1e9 / peak_gflops, 3),
            "padding_fraction": round(padding, 4),
            "peak_rss_mb": round(peak_rss_mb())}
