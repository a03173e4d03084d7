"""Reward-model training throughput (pairs/s) of SmolLM2-135M on HH pairs up to 512 tokens, one process."""
from __future__ import annotations

from rlhf_cli.bench.peak import peak_rss_mb
from rlhf_cli.bench.sft import N_PARAMS_135M, run_training_bench, throughput, warmup_option


def pairs_bench(stage: str, name: str, overrides, opts: dict, peak_gflops: float, flops_per_token: float) -> dict:
    """Run a few real steps of ``stage`` on bundled HH pairs; pairs/s and the fraction of the matmul peak."""
    seq, steps, mb = int(opts.get("seq", 512)), int(opts.get("steps", 5)), int(opts.get("micro_batch", 2))
    rows = run_training_bench(stage, ["model=smollm2-135m", "engine=zero0", f"data.max_length={seq}",
                                      f"train.micro_batch_size={mb}", "train.grad_accum=1", "data.limit=16",
                                      *overrides], steps, warmup=warmup_option(opts, steps))
    tok_s, t, padding = throughput(rows)
    flops = flops_per_token * N_PARAMS_135M * tok_s
    return {"bench": name, "model": "SmolLM2-135M", "max_length": seq, "pairs_per_step": mb,
            "pairs_per_s": round(mb * len(rows) / t, 3), "tokens_per_s": round(tok_s, 1),
            "achieved_gflops": round(flops / 1e9, 2), "fraction_of_matmul_peak": round(flops / 1e9 / peak_gflops, 3),
            "padding_fraction": round(padding, 4),
            "peak_rss_mb": round(peak_rss_mb())}


def run(peak_gflops: float, opts: dict) -> dict:
    # forward + backward of the backbone: 6 N FLOPs per token (the scalar head is negligible)
    return pairs_bench("rm", "rm", [], opts, peak_gflops, 6.0)
