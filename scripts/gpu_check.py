"""`make gpu-check`: on a CUDA machine, every stage end to end in bf16 over NCCL with the real Strategy (ZeRO-2,
and ZeRO-3 for sft / dpo / grpo; one GPU, and two when present), then `rlhf bench` for SFT and the rollout
engine, in one table. A SmolLM2-135M-shaped random model (model=tiny at that shape) keeps it to minutes and
needs no download: only a tokenizer (the embedded model's, or --tokenizer DIR).

    python scripts/gpu_check.py [--tokenizer DIR] [--out DIR] [--quick]
    python scripts/gpu_check.py --plan           # the runs it would make, composed here (any machine)
    python scripts/gpu_check.py --prepare DIR    # copy the embedded model's tokenizer to DIR (to carry it)

What it needs beyond the project: torch with CUDA, transformers, deepspeed, hydra-core, omegaconf, datasets,
typer, rich, safetensors, pyarrow, accelerate (the GPU image of ../shared/gpu-wheels/README.md has them).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# SmolLM2-135M's shape as the tiny preset (random weights, the real tokenizer)
SMOLLM2 = ["model=tiny", "model.tiny.hidden_size=576", "model.tiny.intermediate_size=1536",
           "model.tiny.num_hidden_layers=30", "model.tiny.num_attention_heads=9", "model.tiny.num_key_value_heads=3"]
COMMON = ["precision=bf16", "log.progress=false", "train.save_every=0", "optim.warmup_steps=1"]
PROMPTS = ["data.path=builtin:gsm8k_prompts.jsonl", "data.max_length=320"]


def runs(quick: bool, gpus: int):
    """(label, stage, overrides, nproc) of every run."""
    steps = 3 if quick else 6
    stages = {
        "sft": ["data.path=builtin:gsm8k_sft.jsonl", "data.max_length=1024", "train.micro_batch_size=8",
                f"train.max_steps={steps}", "optim.lr=1e-4"],
        "rm": ["data.path=builtin:hh_harmless_sample.jsonl", "data.max_length=512", "train.micro_batch_size=8",
               f"train.max_steps={steps}", "data.eval_fraction=0"],
        "dpo": ["data.path=builtin:hh_harmless_sample.jsonl", "data.max_length=512", "train.micro_batch_size=4",
                f"train.max_steps={steps}", "data.eval_fraction=0", "ref.precompute=false"],
        "grpo": [*PROMPTS, "grpo.prompts_per_step=8", "grpo.num_generations=8", "grpo.max_new_tokens=64",
                 "train.micro_batch_size=16", f"train.max_steps={max(2, steps // 2)}", "grpo.kl_coef=0.01"],
        "ppo": [*PROMPTS, "ppo.prompts_per_step=8", "ppo.num_generations=2", "ppo.max_new_tokens=64",
                "train.micro_batch_size=16", f"train.max_steps={max(2, steps // 2)}", "critic.init=policy",
                "ppo.epochs=2"],
        "rlaif": ["data.limit=16", "rlaif.max_new_tokens=48", "judge.max_new_tokens=32", "rlaif.num_responses=2",
                  "rlaif.then=dpo", "rlaif.then_overrides=['train.max_steps=2','data.eval_fraction=0']"],
    }
    out = []
    for nproc in ([1, 2] if gpus >= 2 else [1]):
        for stage, over in stages.items():
            engines = ["zero2", "zero3"] if stage in ("sft", "dpo", "grpo") else ["zero2"]
            if nproc == 2 and stage not in ("sft", "grpo"):
                continue  # two GPUs: the data-parallel paths of one trainer and one RL stage
            for engine in engines:
                out.append((f"{stage} {engine} x{nproc}", stage, [*SMOLLM2, *COMMON, f"engine={engine}", *over], nproc))
    # fp16 with DeepSpeed's dynamic loss scaling (bf16 is the default on GPUs that have it)
    out.append(("sft fp16 zero2 x1", "sft", [*SMOLLM2, *COMMON, "precision=fp16", "engine=zero2", *stages["sft"]], 1))
    return out


def summarise(label: str, out: Path, seconds: float, rc: int, err: str) -> dict:
    row = {"run": label, "ok": rc == 0, "seconds": round(seconds, 1)}
    if rc != 0:
        row["note"] = (err.strip().splitlines() or ["?"])[-1][:160]
        return row
    target = out / "dpo" if (out / "dpo" / "metrics.jsonl").exists() else out
    rows = [json.loads(x) for x in (target / "metrics.jsonl").read_text().splitlines() if x.strip()]
    loss_key = next((k for k in ("loss", "policy_loss") if any(k in r for r in rows)), None)
    losses = [r[loss_key] for r in rows if loss_key and loss_key in r]
    tps = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
    gen = [r["gen_tokens_per_s"] for r in rows if "gen_tokens_per_s" in r]
    row.update(loss=f"{losses[0]:.3f}->{losses[-1]:.3f}" if losses else "", tokens_per_s=round(max(tps), 0) if tps
               else None, gen_tokens_per_s=round(max(gen), 0) if gen else None,
               step_s=round(sum(r.get("step_time", 0) for r in rows) / max(len(rows), 1), 2))
    return row


def table(rows) -> str:
    cols = ["run", "ok", "seconds", "step_s", "loss", "tokens_per_s", "fraction_of_peak", "gen_tokens_per_s",
            "note"]
    used = [c for c in cols if any(r.get(c) not in (None, "") for r in rows)]
    lines = ["| " + " | ".join(used) + " |", "|" + "---|" * len(used)]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in used) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", help="tokenizer dir for the SmolLM2-shaped model (default: the embedded model's)")
    ap.add_argument("--out", default="runs/gpu-check")
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    ap.add_argument("--plan", action="store_true", help="print the runs, composing each config, and exit")
    ap.add_argument("--prepare", metavar="DIR", help="copy the embedded model's tokenizer files to DIR and exit")
    a = ap.parse_args()
    if a.prepare:
        from rlhf_cli.models.embedded import ensure_embedded_model

        src, dst = ensure_embedded_model(), Path(a.prepare)
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template")):
                shutil.copy(f, dst / f.name)
        print(f"tokenizer copied to {dst}")
        return 0
    tok = [f"model.tiny.tokenizer={Path(a.tokenizer).absolute()}"] if a.tokenizer else []
    import torch

    gpus = torch.cuda.device_count()
    plan = runs(a.quick, max(gpus, 2 if a.plan else 1))
    if a.plan:
        from rlhf_cli.config.compose import compose

        for label, stage, over, nproc in plan:
            compose(stage, None, [*over, *tok, f"output_dir={a.out}/{label.replace(' ', '-')}"])
            print(f"{label}: rlhf train {stage} {' '.join(over + tok)} --nproc {nproc}")
        return 0
    if gpus == 0:
        print("error: gpu-check needs a CUDA GPU (torch.cuda.device_count() is 0)", file=sys.stderr)
        return 2
    out_root = Path(a.out)
    shutil.rmtree(out_root, ignore_errors=True)
    results = []
    t_all = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for label, stage, over, nproc in plan:
        out = out_root / label.replace(" ", "-")
        cmd = [sys.executable, "-m", "rlhf_cli.cli.app", "train", stage, *over, *tok, f"output_dir={out}",
               "--nproc", str(nproc)]
        t0 = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        results.append(summarise(label, out, time.time() - t0, p.returncode, p.stderr))
        print(json.dumps(results[-1]), flush=True)
    # SFT throughput as a fraction of the bf16 matmul peak (6 N FLOPs a token), from the sft zero2 x1 run
    from rlhf_cli.bench.peak import matmul_peak_gflops
    from rlhf_cli.bench.sft import N_PARAMS_135M

    peak = matmul_peak_gflops()
    sft = next((r for r in results if r["run"] == "sft zero2 x1" and r.get("tokens_per_s")), None)
    if sft:
        sft["fraction_of_peak"] = round(6 * N_PARAMS_135M * sft["tokens_per_s"] / 1e9 / peak, 3)
    # the rollout engine against HF generate, B = 64, 128 new tokens
    for name, cmd in (("bench rollout", [sys.executable, "-m", "rlhf_cli.bench.generate", "--batch", "64",
                                         "--new-tokens", "128", "--device", "cuda", "--dtype", "bfloat16"]),):
        t0 = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        row = {"run": name, "ok": p.returncode == 0, "seconds": round(time.time() - t0, 1)}
        if p.returncode == 0:
            res = json.loads(p.stdout[p.stdout.index("{"):])
            row.update(gen_tokens_per_s=res["engine_tok_s"], note=f"HF generate {res['hf_tok_s']} tok/s, "
                                                                 f"speedup {res['speedup']}x")
        else:
            row["note"] = (p.stderr.strip().splitlines() or ["?"])[-1][:160]
        results.append(row)
        print(json.dumps(row), flush=True)
    print(f"\ngpu-check on {torch.cuda.get_device_name(0)} x{gpus}, {time.time() - t_all:.0f} s "
          f"(bf16 matmul peak {peak / 1e3:.0f} TFLOP/s):\n")
    print(table(results))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
