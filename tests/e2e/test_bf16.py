"""precision=bf16 on every stage, end to end on the tiny model on CPU (DeepSpeed's bf16 path: bf16 weights and
activations, fp32 master weights): losses stay finite and fall (rewards rise for the RL stages), and the
log-probs behind ratios and KL are fp32. precision=fp16 (DeepSpeed's dynamic loss scaling) runs on CPU too and is
tested here for SFT and DPO; on CUDA it is a row of make gpu-check."""
import json

import pytest

from helpers import LOWERCASE_REWARD, TINY, metrics, rlhf
from prefdata import pairs, write_jsonl

pytestmark = pytest.mark.e2e
BF16 = [*TINY, "precision=bf16", "train.save_every=0"]


def mean(rows, key, steps):
    return sum(r[key] for r in rows if r["step"] in steps) / len(steps)


def prompts(tmp):
    qs = ["Say hi.", "Name a color.", "Count to three.", "Greet me."]
    p = tmp / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": qs[i % 4]}) + "\n" for i in range(32)))
    return p


def rl(stage, data, steps):
    return ["train", stage, *BF16, f"data.path={data}", "data.prompt_field=prompt", "data.prompt_template=null",
            "data.reward_fields=[]", "data.max_length=64", f"{stage}.max_new_tokens=2", f"{stage}.top_k=8",
            f"{stage}.prompts_per_step=4", f"{stage}.num_generations=4", "train.micro_batch_size=16",
            f"train.max_steps={steps}", "optim.lr=2e-2", LOWERCASE_REWARD]


def check_finite(rows):
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float):
                assert v == v and abs(v) != float("inf"), (r["step"], k, v)


def supervised_runs(tmp_path, precision, stages):
    """Ten steps of each of ``stages`` (sft / rm / dpo) in ``precision``: {stage: (output dir, loss rows)},
    each run's losses finite and falling."""
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(64))
    common = [*TINY, f"precision={precision}", "train.save_every=0", "train.micro_batch_size=4", "train.max_steps=10"]
    pair_data = [f"data.path={data}", "data.max_length=64", "data.template=plain", "data.eval_fraction=0"]
    args = {"sft": ["data.limit=64", "optim.lr=3e-3"], "rm": [*pair_data, "optim.lr=1e-3"],
            "dpo": [*pair_data, "optim.lr=1e-3", "dpo.beta=0.5"]}
    out = {}
    for stage in stages:
        run = tmp_path / stage
        proc = rlhf(["train", stage, *common, *args[stage], f"output_dir={run}"])
        assert f"precision {precision}" in proc.stdout, stage
        rows = [r for r in metrics(run) if "loss" in r]
        check_finite(rows)
        assert mean(rows, "loss", (8, 9, 10)) < mean(rows, "loss", (1, 2, 3)), (stage, rows)
        out[stage] = run, rows
    return out


def test_sft_rm_dpo_in_bf16(tmp_path):
    for run, _ in supervised_runs(tmp_path, "bf16", ("sft", "rm", "dpo")).values():
        weights = json.loads((run / "final" / "config.json").read_text())
        assert weights.get("dtype", weights.get("torch_dtype")) in ("bfloat16", "float32"), weights


def test_sft_and_dpo_in_fp16_with_loss_scaling(tmp_path):
    for stage, (_, rows) in supervised_runs(tmp_path, "fp16", ("sft", "dpo")).items():
        # A step DeepSpeed skipped on overflow reports no grad_norm and halves the scale; the others apply.
        skipped = [r["skipped_steps"] for r in rows]
        assert skipped == sorted(skipped) and skipped[-1] < 10, (stage, skipped)
        for prev, r in zip([0, *skipped], rows):
            assert (r["grad_norm"] is None) == (r["skipped_steps"] > prev), (stage, r)
        assert 1 <= rows[-1]["fp16_loss_scale"] <= 2 ** 16, (stage, rows[-1])


@pytest.mark.parametrize("stage", ["grpo", "ppo"])
def test_rl_in_bf16_raises_the_reward(stage, tmp_path):
    extra = ["critic.init=policy", "critic.optim.lr=1e-3", "ppo.kl_coef=0.01", "ppo.epochs=2"] if stage == "ppo" \
        else ["grpo.kl_coef=0.01"]  # group-std advantages: with scale_rewards=none (advantages ~0.05) the KL
    # term's pull is as large as the reward's and the reward plateaus near 0.9 from 0.83, in fp32 as in bf16
    out = tmp_path / "run"
    proc = rlhf([*rl(stage, prompts(tmp_path), 16), *extra, f"output_dir={out}"])
    assert "precision bf16" in proc.stdout
    rows = metrics(out)
    check_finite(rows)
    assert mean(rows, "reward", range(13, 17)) > mean(rows, "reward", (1, 2)) + 0.05, [r["reward"] for r in rows]


def test_bf16_ppo_takes_old_logprobs_from_the_training_forward(tmp_path):
    """ppo.old_logprobs=auto in bf16 recomputes the rollout policy's log-probs with the training forward: one
    epoch over one micro-batch then sees ratio exactly 1 (approx_kl 0), whatever the sampler's kernels did.
    (On this CPU the sampler's own bf16 log-probs happen to match too; on a GPU its KV-cache kernels do not.)"""
    out = tmp_path / "run"
    rlhf([*rl("ppo", prompts(tmp_path), 2), "critic.init=policy", "ppo.epochs=1", f"output_dir={out}"])
    assert [r["approx_kl"] for r in metrics(out)] == [0.0, 0.0]


def test_rlaif_then_dpo_in_bf16(tmp_path):
    out = tmp_path / "run"
    rlhf(["train", "rlaif", *BF16, "data.limit=6", "rlaif.max_new_tokens=8", "judge.max_new_tokens=6",
          "rlaif.num_responses=3", "rlaif.phases=preferences", "rlaif.then=dpo",
          "rlaif.then_overrides=['train.max_steps=2','data.eval_fraction=0','train.micro_batch_size=2']",
          f"output_dir={out}"])
    rows = [r for r in metrics(out / "dpo") if "loss" in r]
    check_finite(rows)
    assert len(rows) == 2 and json.loads((out / "dpo" / "manifest.json").read_text())["precision"] == "bf16"
