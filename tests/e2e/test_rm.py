"""End-to-end reward models on a tiny random Llama: pairs, K-wise rankings, process RM, 2-process ZeRO-3."""
import json

import pytest

from helpers import TINY, metrics, rlhf, train_losses
from prefdata import pairs, rankings, write_jsonl

pytestmark = pytest.mark.e2e
BASE = ["train", "rm", *TINY, "data.max_length=64", "data.template=plain", "train.micro_batch_size=4",
        "optim.lr=1e-3", "data.eval_fraction=0.25", "train.save_every=0"]


def late_accuracy(out, key="accuracy"):
    acc = train_losses(out, key)
    last = sorted(acc)[-5:]
    return sum(acc[s] for s in last) / len(last)


def test_pairwise_rm_learns_and_reloads(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs())
    out = tmp_path / "run"
    rlhf([*BASE, f"data.path={data}", "train.max_steps=20", f"output_dir={out}"])
    assert late_accuracy(out) >= 0.8
    assert train_losses(out, "eval/accuracy")[20] >= 0.8
    rc = json.loads((out / "final" / "reward_config.json").read_text())
    assert rc["score_position"] == "last_token" and rc["template"] == "plain"
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(str(out / "final"))
    assert hf.config.num_labels == 1
    from rlhf_cli.models.reward_model import RewardModelScorer

    sc = RewardModelScorer(str(out), batch_size=2)
    good, bad = sc.score(["Tell me about the apple number 500."] * 2, ["The apple is great.", "The lemon is awful."])
    assert good > bad
    proc = rlhf(["eval", "rm-accuracy", f"model={out}", f"data={data}", "limit=40"])
    res = json.loads(proc.stdout)
    assert res["pairs"] == 40 and res["accuracy"] >= 0.8


@pytest.mark.parametrize("loss", ["plackett_luce", "pairwise_from_ranking"])
def test_kwise_rm_learns(tmp_path, loss):
    data = write_jsonl(tmp_path / "rank.jsonl", rankings())
    out = tmp_path / "run"
    rlhf([*BASE, f"data.path={data}", f"rm.loss={loss}", "train.max_steps=16", f"output_dir={out}"])
    assert late_accuracy(out) >= 0.7


def test_process_rm_runs(tmp_path):
    rows = [{"prompt": f"Add {i} and 1.", "steps": [f"We add {i} and 1.", f"The sum is {i + 1 if i % 2 else i + 5}."],
             "labels": [1, int(i % 2)]} for i in range(64)]
    data = write_jsonl(tmp_path / "steps.jsonl", rows)
    out = tmp_path / "run"
    rlhf([*BASE, f"data.path={data}", "rm.type=process", "train.max_steps=6", f"output_dir={out}"])
    assert "step_accuracy" in metrics(out)[0]
    from rlhf_cli.models.reward_model import RewardModelScorer

    sc = RewardModelScorer(str(out))
    (probs,) = sc.score_steps(["Add 3 and 1."], [["We add 3 and 1.", "The sum is 4."]])
    assert len(probs) == 2 and all(0 < p < 1 for p in probs)
    assert 0 < sc.score(["Add 3 and 1."], ["We add 3 and 1.\nThe sum is 4."])[0] < 1


def test_two_process_zero3(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(32))
    out = tmp_path / "run"
    rlhf([*BASE, f"data.path={data}", "train.max_steps=2", "engine=zero3", f"output_dir={out}", "--nproc", "2"])
    assert sorted(train_losses(out)) == [1, 2] and (out / "final" / "model.safetensors").exists()


def test_bad_record_names_file_and_line(tmp_path):
    rows = pairs(4)
    del rows[2]["rejected"]
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    proc = rlhf([*BASE, f"data.path={data}", "train.max_steps=1", f"output_dir={tmp_path / 'run'}"], check=False)
    assert proc.returncode != 0
    assert f"{data}:3: missing 'rejected'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_soft_labels_train_toward_the_judged_probability(tmp_path):
    """Soft Bradley-Terry (Lee et al. 2023): pairs labelled p = 0.5 pull the two scores together, where
    the hard label (data.soft_labels=false, as main always did) pushes them apart."""
    import json

    from helpers import TINY, metrics, rlhf
    from prefdata import pairs

    coin = tmp_path / "coin.jsonl"
    coin.write_text("".join(json.dumps({**r, "judge_prob": 0.5}) + "\n" for r in pairs()))
    margin = {}
    for soft in ("true", "false"):
        out = tmp_path / soft
        rlhf(["train", "rm", *TINY, f"data.path={coin}", "data.max_length=64", "data.template=plain",
              "train.micro_batch_size=8", "optim.lr=1e-3", "train.max_steps=10", "data.eval_fraction=0",
              "train.save_every=0", f"data.soft_labels={soft}", f"output_dir={out}"])
        margin[soft] = [r["margin"] for r in metrics(out) if "margin" in r]
        assert json.loads((out / "manifest.json").read_text())["metrics"]["pairs_soft_labels"] == \
            (96 if soft == "true" else 0)
    assert abs(sum(margin["true"][-3:]) / 3) < 0.1 < sum(margin["false"][-3:]) / 3, margin
