"""GRPO step time split (generation / scoring / update) of SmolLM2-135M through the real stage (one process)."""
from __future__ import annotations


def run(peak_gflops: float, opts: dict) -> dict:
    from rlhf_cli.bench.sft import run_training_bench

    P, G, T = int(opts.get("prompts", 2)), int(opts.get("generations", 4)), int(opts.get("tokens", 64))
    rows = run_training_bench("grpo", ["model=smollm2-135m", "engine=zero0", f"grpo.prompts_per_step={P}",
                                       f"grpo.num_generations={G}", f"grpo.max_new_tokens={T}",
                                       f"train.micro_batch_size={P * G}", "data.limit=64"], int(opts.get("steps", 3)))
    avg = {k: sum(r[k] for r in rows) / len(rows) for k in ("time/generation", "time/scoring", "time/update",
                                                              "step_time", "gen_tokens_per_s")}
    return {"bench": "grpo", "model": "SmolLM2-135M", "prompts": P, "generations": G, "max_new_tokens": T,
            **{k: round(v, 3) for k, v in avg.items()},
            "note": "TRL GRPOTrainer anchor: 11.1 s/step on one H100 for 8 prompts x 8 gens x 256 tokens"}
