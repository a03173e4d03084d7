"""Every registry kind takes a new entry without editing any stage: toy entries registered from outside
(tests/e2e/scripts/toy_registrations.py) pass config validation, show up in `rlhf config`'s choices, and a
real tiny training run (or eval / bench) calls them with the options their metadata names."""
import json
import subprocess
import sys
from collections import defaultdict

import pytest

from helpers import REPO, SCRIPTS, TINY, metrics
from prefdata import pairs, write_jsonl

pytestmark = pytest.mark.e2e
SHORT = [*TINY, "train.max_steps=2", "train.save_every=0", "train.eval_every=0"]
PREF = ["data.max_length=64", "data.template=plain", "train.micro_batch_size=4", "train.grad_accum=1",
        "data.eval_fraction=0"]


def run_cli(tmp_path, *commands):
    """run_cli.py with the toys registered; returns (completed process, {entry: [call records]})."""
    calls = tmp_path / "calls.jsonl"
    words = [w for cmd in commands for w in (*cmd, ";;")][:-1]
    proc = subprocess.run([sys.executable, str(SCRIPTS / "run_cli.py"), *words], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**__import__("os").environ, "TOY_CALLS": str(calls)})
    seen = defaultdict(list)
    if calls.exists():
        for line in calls.read_text().splitlines():
            row = json.loads(line)
            seen[row.pop("entry")].append(row)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc, seen


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", pairs(16))


def test_toy_dpo_and_rm_losses_train(tmp_path, pair_data):
    dpo, rm = tmp_path / "dpo", tmp_path / "rm"
    _, seen = run_cli(tmp_path,
                      ["train", "dpo", *SHORT, *PREF, f"data.path={pair_data}", "dpo.loss=toy_hinge",
                       "dpo.label_smoothing=0.1", "dpo.beta=0.5", f"output_dir={dpo}", "--nproc", "1"],
                      ["train", "rm", *SHORT, *PREF, f"data.path={pair_data}", "rm.loss=toy_rm_hinge",
                       "rm.centering_coef=0.01", f"output_dir={rm}", "--nproc", "1"])
    # one call per micro-batch (+ none for the precomputed reference): 2 steps x 1 micro-batch
    assert len(seen["toy_hinge"]) == 2 and all(c == {"label_smoothing": 0.1, "beta": 0.5} for c in seen["toy_hinge"])
    assert len(seen["toy_rm_hinge"]) == 2
    assert all(c == {"centering_coef": 0.01, "shape": [4, 2]} for c in seen["toy_rm_hinge"])
    for out in (dpo, rm):
        assert [r["step"] for r in metrics(out) if "loss" in r] == [1, 2]
        assert (out / "final" / "config.json").exists()


def test_toy_advantage_aggregation_kl_and_reward_train_grpo(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Name a color {i}."}) + "\n" for i in range(8)))
    out = tmp_path / "grpo"
    _, seen = run_cli(tmp_path, [
        "train", "grpo", *SHORT, f"data.path={prompts}", "data.prompt_field=prompt", "data.prompt_template=null",
        "data.reward_fields=[]", "data.max_length=64", "grpo.max_new_tokens=6", "grpo.prompts_per_step=2",
        "grpo.num_generations=2", "train.micro_batch_size=4", "grpo.advantage=toy_centered", "grpo.adv_eps=0.001",
        "grpo.loss_agg=toy_seq_sum", "grpo.kl_estimator=toy_sq", "grpo.kl_coef=0.1", "grpo.policy_loss=toy_vanilla",
        "grpo.clip_low=0.3", "reward.functions=[{name: toy_length, scale: 2.0}]", f"output_dir={out}", "--nproc", "1"])
    assert [c["n"] for c in seen["toy_length"]] == [4, 4] and seen["toy_length"][0]["scale"] == 2.0
    assert seen["toy_centered"] == [{"eps": 0.001, "group_size": 2}] * 2
    assert len(seen["toy_seq_sum"]) == 2 and all(c["max_len"] == 6 and c["normalizer"] == 4.0
                                                for c in seen["toy_seq_sum"])
    assert len(seen["toy_sq"]) == 2
    assert len(seen["toy_vanilla"]) == 2 and all(c["clip_low"] == 0.3 for c in seen["toy_vanilla"])
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2] and all("kl_loss" in r and r["kl_loss"] >= 0 for r in rows)
    assert rows[0]["reward"] > 0  # toy_length is 2 * len / 100 > 0 for any non-empty completion


def test_toy_names_are_choices_and_eval_bench_run(tmp_path, pair_data):
    proc, seen = run_cli(
        tmp_path,
        ["config", "dpo", "model=tiny", "dpo.loss=toy_hinge"],
        ["config", "rm", "model=tiny", "rm.loss=toy_rm_hinge"],
        ["config", "grpo", "model=tiny", "grpo.advantage=toy_centered", "grpo.loss_agg=toy_seq_sum",
         "grpo.kl_estimator=toy_sq", "reward.functions=[{name: toy_length}]"],
        ["eval", "toy_eval", "a=1"],
        ["bench", "toy_bench", "n=3"])
    lines = proc.stdout.splitlines()
    assert [ln for ln in lines if ln.startswith("EXIT ")] == ["EXIT 0"] * 5
    for key, value in [("loss", "toy_hinge"), ("loss", "toy_rm_hinge"), ("advantage", "toy_centered"),
                       ("loss_agg", "toy_seq_sum"), ("kl_estimator", "toy_sq"), ("name", "toy_length")]:
        hits = [ln for ln in lines if ln.strip().lstrip("- ").startswith(f"{key}: {value}  # choices:")]
        assert hits, (key, value)
        assert value in [x.strip() for x in hits[0].split("# choices:")[1].split(",")], hits
    assert seen["toy_eval"] == [{"words": ["a=1"]}] and seen["toy_bench"] == [{"opts": {"n": 3}}]
    assert '"eval": "toy_eval"' in proc.stdout and '"bench": "toy_bench"' in proc.stdout
