"""End-to-end DPO family on a tiny random Llama: every loss learns a synthetic preference, precomputed
and live reference agree, a 2-process ZeRO-3 run with a live (sharded) reference works."""
import pytest

from helpers import TINY, interrupted_then_resumed, rlhf, train_losses
from prefdata import kto, pairs, write_jsonl

pytestmark = pytest.mark.e2e
BASE = ["train", "dpo", *TINY, "data.max_length=64", "data.template=plain", "train.micro_batch_size=4",
        "train.grad_accum=1", "optim.lr=1e-3", "data.eval_fraction=0.25", "train.save_every=0"]
KW = {"dpo": ["dpo.beta=0.5"], "cdpo": ["dpo.beta=0.5"], "ipo": ["dpo.tau=0.5"], "simpo": ["dpo.beta=2.0"],
      "kto": ["dpo.beta=0.5"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    return {"pairs": write_jsonl(d / "pairs.jsonl", pairs()), "kto": write_jsonl(d / "kto.jsonl", kto())}


@pytest.mark.parametrize("loss", ["dpo", "cdpo", "ipo", "simpo", "kto"])
def test_loss_learns(tmp_path, data, loss):
    out = tmp_path / "run"
    path = data["kto" if loss == "kto" else "pairs"]
    rlhf([*BASE, f"data.path={path}", f"dpo.loss={loss}", *KW[loss], "train.max_steps=12", f"output_dir={out}"])
    acc = train_losses(out, "accuracy")
    assert sum(acc[s] for s in (8, 9, 10, 11, 12)) / 5 >= 0.75, acc
    assert (out / "final" / "model.safetensors").exists()
    if loss != "simpo":
        assert (out / "ref_logps.json").exists()


def test_precomputed_and_live_reference_agree(tmp_path, data):
    losses = {}
    for pre in ("true", "false"):
        out = tmp_path / pre
        rlhf([*BASE, f"data.path={data['pairs']}", "train.max_steps=1", f"ref.precompute={pre}", f"output_dir={out}"])
        losses[pre] = train_losses(out)[1]
    assert losses["true"] == pytest.approx(losses["false"], abs=1e-5)


def test_two_process_zero3_live_reference(tmp_path, data):
    out = tmp_path / "run"
    rlhf([*BASE, f"data.path={data['pairs']}", "train.max_steps=2", "engine=zero3", "ref.precompute=false",
          f"output_dir={out}", "--nproc", "2"])
    assert sorted(train_losses(out)) == [1, 2]


def test_identical_pair_is_a_clear_error(tmp_path):
    rows = pairs(4)
    rows[1]["rejected"] = rows[1]["chosen"]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    proc = rlhf([*BASE, f"data.path={bad}", "train.max_steps=1", f"output_dir={tmp_path / 'run'}"], check=False)
    assert proc.returncode != 0 and f"{bad}:2: chosen and rejected are identical" in proc.stderr


def test_sigterm_and_resume_match_uninterrupted(tmp_path, data):
    args = [*BASE, f"data.path={data['pairs']}", "train.max_steps=8", "train.eval_every=0"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    rlhf([*args, f"output_dir={full}"])
    interrupted_then_resumed(args, cut, after_steps=3)  # resume reuses output_dir/ref_logps.json
    a, b = train_losses(full), train_losses(cut)
    assert sorted(b) == list(range(1, 9))
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-5), (s, a, b)


def test_soft_labels_reach_the_loss(tmp_path, data):
    """Every pair labelled p = 0.5 (a coin-flip judge): at step 1 the policy equals the reference, so the
    soft-label DPO gradient is 0 (main trained on the hard label: loss log 2 with a full gradient). With
    data.soft_labels=false the same file trains on hard labels."""
    import json

    from helpers import metrics

    coin = tmp_path / "coin.jsonl"
    coin.write_text("".join(json.dumps({**r, "judge_prob": 0.5}) + "\n" for r in pairs()))
    rows = {}
    for soft in ("true", "false"):
        out = tmp_path / soft
        proc = rlhf([*BASE, f"data.path={coin}", "train.max_steps=1", "ref.precompute=false",
                     f"data.soft_labels={soft}", f"output_dir={out}"])
        rows[soft] = metrics(out)[0]
        assert ("pairs with soft labels (judge_prob)" in proc.stdout) == (soft == "true")
    assert rows["true"]["grad_norm"] < 1e-6 < 1e-2 < rows["false"]["grad_norm"], rows
    assert rows["true"]["loss"] == pytest.approx(rows["false"]["loss"], abs=1e-5)  # log 2 either way at h = 0
