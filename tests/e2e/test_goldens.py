"""Goldens per stage: a fixed-seed tiny-model run of every stage whose per-step metrics and final weights are
pinned in tests/golden/stages/<stage>.json. They were written before the RL core and the rooms of
ARCHITECTURE.md were built (issue 24) and must stay equal: behaviour did not change.

    RLHF_WRITE_GOLDENS=1 pytest tests/e2e/test_goldens.py     # rewrite them (only for a deliberate change)

Compared to 1e-5 relative (1e-6 absolute): another CPU's fp32 kernels (AVX2 vs AVX-512) differ in the last
bits, which a few steps do not grow past that. Timings and throughput are not pinned.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from helpers import LOWERCASE_REWARD, TINY, metrics, rlhf
from prefdata import pairs, write_jsonl

pytestmark = pytest.mark.e2e
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "stages"
WRITE = os.environ.get("RLHF_WRITE_GOLDENS") == "1"
# Metrics that measure the machine, not the computation.
UNPINNED = ("time", "tokens_per_s", "step_time", "seconds", "per_minute", "train_seconds", "peak_rss")
# Metric names that changed on purpose since the goldens were written: golden name -> current name.
# (issue 24: one name per concept: GRPO's loss is the policy loss, its in-loss KL term kl_loss, PPO's
# ppo_epochs the core's update_epochs.) Metrics added since are not in the goldens and are not compared.
RENAMED = {"grpo": {"loss": "policy_loss", "kl": "kl_loss"}, "ppo": {"ppo_epochs": "update_epochs"},
           "sft": {}, "rm": {}, "dpo": {}, "rlaif": {}}
PREF = ["data.max_length=64", "data.template=plain", "train.micro_batch_size=4", "optim.lr=1e-3",
        "data.eval_fraction=0.25", "train.eval_every=2", "train.save_every=0"]


def prompts_file(tmp: Path) -> Path:
    qs = ["Say hi.", "Name a color.", "Count to three.", "What is two plus two?", "Tell me a word.",
          "Describe the sky.", "Name an animal.", "Greet me."]
    path = tmp / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": qs[i % 8], "id": i}) + "\n" for i in range(32)))
    return path


def rl(stage: str, data: Path) -> list:
    return [*TINY, f"data.path={data}", "data.prompt_field=prompt", "data.prompt_template=null",
            "data.reward_fields=[]", "data.max_length=64", f"{stage}.max_new_tokens=6", f"{stage}.prompts_per_step=2",
            f"{stage}.num_generations=4", "train.micro_batch_size=4", "train.max_steps=3", "optim.lr=1e-2",
            "train.save_every=0", LOWERCASE_REWARD]


def runs(tmp: Path) -> dict:
    data = prompts_file(tmp)
    prefs = write_jsonl(tmp / "pairs.jsonl", pairs(48))
    return {
        "sft": ["train", "sft", *TINY, "data.limit=64", "train.micro_batch_size=2", "train.grad_accum=2",
                "optim.lr=3e-3", "train.max_steps=4", "train.eval_every=2", "train.save_every=0"],
        "rm": ["train", "rm", *TINY, f"data.path={prefs}", *PREF, "train.max_steps=4", "rm.centering_coef=0.01"],
        "dpo": ["train", "dpo", *TINY, f"data.path={prefs}", *PREF, "train.max_steps=4", "dpo.beta=0.5"],
        "grpo": ["train", "grpo", *rl("grpo", data), "grpo.kl_coef=0.05", "grpo.epochs=2",
                 "grpo.scale_rewards=batch"],
        "ppo": ["train", "ppo", *rl("ppo", data), "ppo.epochs=2", "ppo.mini_batches=2", "ppo.kl_controller=adaptive",
                "ppo.target_kl=0.1", "ppo.reward_norm=running", "ppo.missing_eos_penalty=-1", "ppo.entropy_coef=0.01",
                "ppo.ptx_coef=0.1", "ppo.ptx_data=builtin:gsm8k_sft.jsonl"],
        "rlaif": ["train", "rlaif", *TINY, "data.limit=4", "rlaif.max_new_tokens=8", "judge.max_new_tokens=6",
                  "rlaif.num_responses=3", "rlaif.chunk_prompts=2"],
    }


def weights_digest(final: Path) -> dict:
    """(sum, sum of squares) of every tensor of final/model.safetensors, in float64."""
    from safetensors.torch import load_file

    return {k: [float(t.double().sum()), float((t.double() ** 2).sum())]
            for k, t in sorted(load_file(str(final / "model.safetensors")).items())}


def pinned_metrics(out: Path) -> list:
    return [{k: v for k, v in row.items() if isinstance(v, (int, float)) and not any(u in k for u in UNPINNED)}
            for row in metrics(out)]


def rlaif_records(out: Path) -> dict:
    return {name: [json.loads(x) for x in (out / name).read_text().splitlines()]
            for name in ("sl_data.jsonl", "sl_chains.jsonl", "preferences.jsonl")}


def close(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))} differ"
        for k in a:
            close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{where}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), f"{where}: golden {a} vs now {b}"
    else:
        assert a == b, f"{where}: golden {a!r} vs now {b!r}"


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo", "grpo", "ppo", "rlaif"])
def test_stage_matches_its_golden(stage, tmp_path):
    out = tmp_path / "run"
    rlhf([*runs(tmp_path)[stage], f"output_dir={out}"])
    now = {"metrics": pinned_metrics(out)}
    if stage == "rlaif":
        now["records"] = rlaif_records(out)
    else:
        now["weights"] = weights_digest(out / "final")
    if stage == "ppo":
        now["critic"] = weights_digest(out / "critic")
    path = GOLDEN / f"{stage}.json"
    if WRITE:
        path.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        return
    golden = json.loads(path.read_text())
    for old, new in RENAMED[stage].items():
        for row in golden["metrics"]:
            if old in row:
                row[new] = row.pop(old)
    assert len(golden["metrics"]) == len(now["metrics"]), "a different number of logged rows"
    now["metrics"] = [{k: v for k, v in row.items() if k in old} for row, old in zip(now["metrics"], golden["metrics"])]
    close(golden, now, stage)
