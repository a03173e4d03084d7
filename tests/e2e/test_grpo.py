"""GRPO end to end on the tiny random Llama (real tokenizer), CPU."""
import json

import pytest

from helpers import LOWERCASE_REWARD as REWARD
from helpers import TINY, interrupted_then_resumed, metrics, rlhf


def base(prompts, out, steps=2):
    return ["train", "grpo", *TINY, f"data.path={prompts}", "data.prompt_field=prompt", "data.prompt_template=null",
            "data.reward_fields=[]", "data.max_length=64", "grpo.max_new_tokens=8", "grpo.prompts_per_step=2",
            "grpo.num_generations=4", "train.micro_batch_size=4", f"train.max_steps={steps}", "optim.lr=1e-2",
            REWARD, f"output_dir={out}"]


@pytest.mark.e2e
def test_grpo_kl0_loads_no_reference(prompts, tmp_path):
    proc = rlhf(base(prompts, tmp_path / "run"))
    assert "no reference model loaded" in proc.stdout
    rows = metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward", "reward_std", "reward/lower", "zero_signal_fraction", "clip_low_fraction",
                "clip_high_fraction", "entropy", "response_length", "time/generation", "time/scoring",
                "time/update", "gen_tokens_per_s"):
        assert key in rows[-1], key
    assert "kl_loss" not in rows[-1] and "kl" not in rows[-1]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["metrics"]["reference_model"] is False
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


@pytest.mark.e2e
def test_grpo_two_processes_kl_iterations_dynamic_sampling(prompts, tmp_path):
    proc = rlhf(base(prompts, tmp_path / "run") + ["grpo.kl_coef=0.05", "grpo.epochs=2",
                                                   "grpo.dynamic_sampling=true", "grpo.overlong=mask",
                                                   "--nproc", "2"])
    assert "Reference model loaded" in proc.stdout
    rows = metrics(tmp_path / "run")
    assert len(rows) == 2 and all("kl_loss" in r and r["kl_loss"] >= 0 for r in rows)
    assert all(r["update_epochs"] == 2 for r in rows)
    # overlong=mask with 8-token budget: every response is truncated and masked out of the loss
    assert rows[-1]["truncated_fraction"] == 1.0


@pytest.mark.e2e
def test_dynamic_sampling_resamples_until_every_trained_group_has_signal(prompts, tmp_path):
    """Half the prompts (odd ids) score a constant: their groups have no signal. Dynamic sampling must spend
    extra rounds and train only on groups whose rewards differ (two processes: rounds are collective)."""
    from helpers import REPO

    reward = (f'reward.functions=[{{name: "python:{REPO}/tests/fixtures/grpo/rewards.py:lowercase_share_even_ids", '
              'alias: lower}]')
    args = [a for a in base(prompts, tmp_path / "run", steps=3) if not a.startswith("reward.functions")]
    rlhf(args + [reward, "grpo.dynamic_sampling=true", "grpo.max_resample_rounds=6", "--nproc", "2"])
    rows = metrics(tmp_path / "run")
    assert len(rows) == 3
    assert sum(r["resample_rounds"] for r in rows) >= 1, rows
    assert any(r["zero_signal_fraction"] > 0 for r in rows), rows
    assert all(r["trained_zero_signal_fraction"] == 0.0 for r in rows), rows
    # without it, the zero-signal groups are trained on (and waste the step)
    rlhf(args + [reward, f"output_dir={tmp_path / 'off'}"])
    off = metrics(tmp_path / "off")
    assert all(r["resample_rounds"] == 0 for r in off)
    assert any(r["trained_zero_signal_fraction"] > 0 for r in off), off


@pytest.mark.e2e
def test_grpo_bad_reward_fails_in_one_line(prompts, tmp_path):
    proc = rlhf(["train", "grpo", *TINY, "grpo.max_new_tokens=8", "reward.functions=[{name: gsmk}]",
                 f"output_dir={tmp_path}"], check=False)
    assert proc.returncode != 0
    assert "did you mean 'gsm8k'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_reward_rises_on_a_learnable_verifiable_task(prompts, tmp_path):
    """top_k=8 and 2 new tokens make the first token a per-prompt choice among 8 candidates; the
    lowercase-share reward differs between them, so a working policy gradient must raise it."""
    out = tmp_path / "learn"
    args = base(prompts, out, steps=24) + ["grpo.top_k=8", "grpo.max_new_tokens=2", "grpo.prompts_per_step=4",
                                           "optim.lr=2e-2", "train.save_every=0", "grpo.scale_rewards=none"]
    rlhf(args)
    reward = {r["step"]: r["reward"] for r in metrics(out) if "reward" in r}
    first = (reward[1] + reward[2]) / 2  # before any update has had much effect (~0.8 at random init)
    last = sum(reward[s] for s in range(19, 25)) / 6
    assert last > first + 0.1 and last > 0.95, reward


@pytest.mark.e2e
def test_sigterm_and_resume_match_uninterrupted(prompts, tmp_path):
    args = base(prompts, tmp_path / "unused", steps=6)[:-1] + ["train.save_every=0"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    rlhf([*args, f"output_dir={full}"])
    interrupted_then_resumed(args, cut, after_steps=2)
    a = {r["step"]: r["reward"] for r in metrics(full)}
    b = {r["step"]: r["reward"] for r in metrics(cut)}
    assert sorted(b) == list(range(1, 7))
    for s in a:  # same prompts, same sampling seeds, same weights -> the same rewards after resuming
        assert b[s] == pytest.approx(a[s], rel=1e-5), (s, a, b)


@pytest.mark.e2e
@pytest.mark.parametrize("scale", ["batch", "group"])
def test_advantages_do_not_depend_on_the_number_of_processes(scale):
    """scale_rewards=batch divided by each process's own std on main: 2 processes gave other advantages."""
    from helpers import run_script

    def adv(nproc):
        out = run_script("grpo_advantages.py", [f"grpo.scale_rewards={scale}"], nproc=nproc).stdout
        return json.loads(next(ln for ln in out.splitlines() if ln.startswith("ADV "))[4:])

    one, two = adv(1), adv(2)
    assert len(one) == 32
    assert two == pytest.approx(one, rel=1e-6, abs=1e-7)
