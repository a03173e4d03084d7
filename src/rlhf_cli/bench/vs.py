"""`rlhf bench --vs trl [sft rm dpo grpo] [key=value ...]`: our stage and TRL's trainer side by side.

Same model (the embedded SmolLM2-135M, fp32 on CPU), same data (``data=hh|gsm8k``, bench/data.py: by
default the bundled GSM8K chats for SFT and the bundled HH pairs for RM and DPO; the bundled GSM8K prompts
with the gsm8k verifier for GRPO), same micro-batch and maximum length, one process each. TRL runs without
activation checkpointing unless ``trl_gc=true`` (its default) or ``trl_gc=both`` (a mode each). SFT, RM
and DPO compare training tokens/s; GRPO compares the whole step (generation, scoring, update) in seconds.
Every run is a fresh Python process, ours and TRL's alternate (``rounds=N`` repeats the pair), and each side keeps its
best round: this machine's speed moves 2x with its neighbours, so the ratio of two runs taken minutes
apart is what we quote, never an absolute time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, List, Tuple

ROUNDS = 2  # ours/TRL pairs per row unless rounds=N; each side keeps its best round

# Per stage, the benchmark options and their defaults (`rlhf bench --vs trl sft seq=512` overrides one).
# SFT, RM and DPO runs measure the steps after bench/sft.WARMUP_STEPS (both sides); GRPO's after the first.
DEFAULTS = {"sft": {"seq": 256, "micro_batch": 4, "steps": 7, "limit": 64},
            "rm": {"seq": 512, "micro_batch": 2, "steps": 6, "limit": 32},
            "dpo": {"seq": 512, "micro_batch": 2, "steps": 6, "limit": 32},
            "grpo": {"prompts": 2, "generations": 4, "tokens": 64, "steps": 4, "limit": 64}}


TRL_GC = {"false": [False], "true": [True], "both": [False, True]}


def trl_gc_option(opts: dict) -> List[bool]:
    from rlhf_cli.errors import ConfigError

    value = str(opts.get("trl_gc", "false")).lower()
    if value not in TRL_GC:
        raise ConfigError(f"bench: trl_gc={value}: must be one of {', '.join(TRL_GC)}")
    return TRL_GC[value]


def plan(stage: str, opts: dict) -> List[Tuple[str, dict, List[Tuple[str, dict]]]]:
    """(row label, our kwargs, [(TRL mode label, TRL kwargs)]) for one stage."""
    from rlhf_cli.bench.data import data_option

    o = {k: opts.get(k, v) for k, v in DEFAULTS[stage].items()}
    gcs = trl_gc_option(opts)

    def modes(name: str, kw: dict) -> List[Tuple[str, dict]]:  # one TRL mode per activation-checkpointing choice
        return [("_".join(filter(None, [name, "gc" if gc else ""])), {**kw, "gc": gc}) for gc in gcs]

    if stage == "grpo":
        kw = {k: int(v) for k, v in o.items()}
        return [("grpo step", kw, modes("", kw))]
    from rlhf_cli.bench.sft import warmup_option

    warmup = warmup_option(opts, int(o["steps"]))  # checked here, before any run starts
    data = data_option(stage, opts)
    base = {"seq": o["seq"], "batch": o["micro_batch"], "steps": o["steps"], "limit": o["limit"], "warmup": warmup,
            "data": data}
    tag = f"{data} seq {o['seq']}"
    if stage == "sft":
        trl = modes("packed", {**base, "packing": True}) + modes("padded", {**base, "packing": False})
        return [(f"sft {tag}", base, trl)]
    if stage == "rm":
        return [(f"rm {tag}", base, modes("", base))]
    return [(f"dpo precomputed ref {tag}", {**base, "precompute": True}, modes("", {**base, "precompute": True})),
            (f"dpo live ref {tag}", {**base, "precompute": False}, modes("", {**base, "precompute": False}))]


def ours(stage: str, **kw) -> Dict[str, float]:
    return ours_grpo(**kw) if stage == "grpo" else ours_training(stage, **kw)


def ours_training(stage: str, seq: int, batch: int, steps: int, limit: int, warmup: int, data: str,
                  precompute: bool = False) -> Dict[str, float]:
    """Our stage through its real training path (one process, engine=zero0), matching the TRL run."""
    import tempfile

    from rlhf_cli.bench import data as bench_data
    from rlhf_cli.bench.peak import matmul_peak_gflops, sustained_matmul_gflops
    from rlhf_cli.bench.sft import run_training_bench, throughput

    before = matmul_peak_gflops()  # measured here, next to the run, not at the start of the table
    held = [sustained_matmul_gflops()]
    with tempfile.TemporaryDirectory() as tmp:
        over = ["model=smollm2-135m", "engine=zero0", f"data.max_length={seq}", f"train.micro_batch_size={batch}",
                "train.grad_accum=1", f"data.limit={limit}", "optim.lr=1e-5",
                f"data.path={bench_data.write(stage, data, limit, tmp)}"]
        if stage == "dpo":
            over.append(f"ref.precompute={str(precompute).lower()}")
        rows = run_training_bench(stage, over, steps, warmup=warmup)
    held.append(sustained_matmul_gflops())
    peak = max(before, matmul_peak_gflops())  # a neighbour can slow one measurement; the faster is the peak
    tok_s, t, padding = throughput(rows)
    return {"tokens_per_s": round(tok_s, 1), "step_time": round(t / len(rows), 3),
            "padding_fraction": round(padding, 4), "peak_gflops": round(peak, 1),
            "sustained_gflops": round(sum(held) / len(held), 1)}


def ours_grpo(prompts: int, generations: int, tokens: int, steps: int, limit: int) -> Dict[str, float]:
    """Our GRPO stage's step (defaults: gsm8k verifier, no KL term, one update per rollout), as TRL's run."""
    from rlhf_cli.bench.sft import run_training_bench

    rows = run_training_bench("grpo", ["model=smollm2-135m", "engine=zero0", f"grpo.prompts_per_step={prompts}",
                                       f"grpo.num_generations={generations}", f"grpo.max_new_tokens={tokens}",
                                       f"train.micro_batch_size={prompts * generations}", "train.grad_accum=1",
                                       f"data.limit={limit}", "optim.lr=1e-5"], steps)
    def mean(key):
        return sum(r[key] for r in rows) / len(rows)

    return {"step_time": round(mean("step_time"), 3), "time/generation": round(mean("time/generation"), 3),
            "generated_tokens_per_step": round(mean("response_length") * prompts * generations, 1)}


def _fresh(side: str, stage: str, kwargs: dict) -> Dict[str, float]:
    """One run in a fresh process; its JSON result."""
    cmd = [sys.executable, "-m", "rlhf_cli.bench.vs", side, stage, json.dumps(kwargs)]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
    raise RuntimeError(f"{side} {stage} benchmark run failed (exit {p.returncode}): {tail[0]}")


def best(runs: List[Dict[str, float]]) -> Dict[str, float]:
    return max(runs, key=lambda r: r["tokens_per_s"])


def compare_tokens(mine: List[dict], theirs: Dict[str, List[dict]]) -> dict:
    """Training tokens/s, ours and each TRL mode's (best round each); the ratio to TRL's fastest mode."""
    from rlhf_cli.bench.sft import N_PARAMS_135M

    a = best(mine)
    gflops_6n = 6 * N_PARAMS_135M * a["tokens_per_s"] / 1e9
    row = {"ours_tokens_per_s": a["tokens_per_s"], "ours_padding_fraction": a["padding_fraction"],
           "ours_cpu_steal_fraction": a.get("cpu_steal_fraction", 0.0),
           "ours_fraction_of_matmul_peak": round(gflops_6n / a["peak_gflops"], 3)}
    if "sustained_gflops" in a:  # diagnostic: the same 6N rate over a GEMM loop's mean rate next to the run
        row["ours_fraction_of_sustained_matmul"] = round(gflops_6n / a["sustained_gflops"], 3)
    for m, runs in theirs.items():
        row[f"trl_{m}_tokens_per_s" if m else "trl_tokens_per_s"] = best(runs)["tokens_per_s"]
    fastest = max(v for k, v in row.items() if k.startswith("trl_") and k.endswith("tokens_per_s"))
    row["ratio_vs_trl_fastest"] = round(a["tokens_per_s"] / fastest, 3)
    return row


def compare_steps(mine: List[dict], theirs: Dict[str, List[dict]]) -> dict:
    """Seconds per RL step (best round each side); the ratio is TRL's time over ours (> 1: we are faster)."""
    a = min(mine, key=lambda r: r["step_time"])
    b = min((r for runs in theirs.values() for r in runs), key=lambda r: r["step_time"])
    return {"ours_step_time": a["step_time"], "trl_step_time": b["step_time"],
            "ours_generated_tokens_per_step": a["generated_tokens_per_step"],
            "trl_generated_tokens_per_step": b["generated_tokens_per_step"],
            "ratio_vs_trl_fastest": round(b["step_time"] / a["step_time"], 3)}


def run_vs(peer: str, names: List[str], opts: dict) -> List[dict]:
    """Print (and return) one comparison row per stage mode; ``peer`` is 'trl' (checked by the CLI)."""
    from rlhf_cli.bench.peer_trl import require_trl

    version = require_trl()
    # Two rounds by default: one round let a slow minute of the machine decide a row (SFT 88 tokens/s in one
    # round, 146 in the best of the next three, with TRL's figure steady).
    rounds = int(opts.get("rounds", ROUNDS))
    out = []
    plans = [(stage, plan(stage, opts)) for stage in names]  # every bad option fails before the first run
    for stage, rows in plans:
        for label, our_kw, modes in rows:
            mine, theirs = [], {m: [] for m, _ in modes}
            for _ in range(rounds):  # alternate: ours, then each TRL mode, then ours again...
                mine.append(_fresh("ours", stage, our_kw))
                for m, kw in modes:
                    theirs[m].append(_fresh("trl", stage, kw))
            row = {"bench": f"vs-trl {label}", "trl": version, **(compare_steps(mine, theirs) if stage == "grpo"
                                                                    else compare_tokens(mine, theirs))}
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


if __name__ == "__main__":  # one side of one comparison: python -m rlhf_cli.bench.vs SIDE STAGE JSON
    from rlhf_cli.quiet import quiet_libraries

    quiet_libraries(False)
    from rlhf_cli.bench.peak import cpu_times, steal_fraction

    side, stage, kw = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    t0 = cpu_times()
    if side == "ours":
        res = ours(stage, **kw)
    else:
        from rlhf_cli.bench import peer_trl

        res = getattr(peer_trl, stage)(**kw)
    res["cpu_steal_fraction"] = steal_fraction(t0, cpu_times())
    print("RESULT " + json.dumps(res), flush=True)
