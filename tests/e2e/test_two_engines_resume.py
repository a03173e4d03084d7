"""Two trainable engines in one run ("actor", "critic"), each with its own optimizer settings, checkpoint
into checkpoints/step-N/<name>/ and resume exactly: 1 process, and 2 processes under ZeRO-2 and ZeRO-3."""
import json

import pytest
import torch

from helpers import run_script

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("nproc,engine", [(1, "zero2"), (2, "zero3")])  # (ZeRO-2 == ZeRO-3 on 2 processes: test_ppo.py)
def test_actor_and_critic_resume_exactly(tmp_path, nproc, engine):
    out = tmp_path / "run"
    for mode in ("save", "resume"):
        run_script("two_engines.py", [mode, str(out), f"engine={engine}"], nproc=nproc)
    ckpt = out / "checkpoints" / "step-3"
    assert sorted(p.name for p in ckpt.iterdir() if p.is_dir()) == ["actor", "critic"]
    assert (ckpt / "actor" / "ds").is_dir() and (ckpt / "critic" / "ds").is_dir()
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 3
    assert sorted(p.name for p in ckpt.glob("rng-rank*.json")) == [f"rng-rank{r}.json" for r in range(nproc)]

    saved, resumed = (json.loads((out / f"{m}.json").read_text()) for m in ("save", "resume"))
    assert saved["engines"] == resumed["engines"] == ["actor", "critic"]
    assert sorted(saved["steps"]) == ["1", "2", "3", "4", "5"] and sorted(resumed["steps"]) == ["4", "5"]
    for step in ("1", "2", "3", "4", "5"):  # each engine follows its own optimizer settings (lr 1e-3 vs 5e-3)
        row = saved["steps"][step]
        assert row["critic_lr"] == pytest.approx(5 * row["actor_lr"], rel=1e-9) and row["actor_lr"] > 0
    for step in ("4", "5"):
        for key, value in saved["steps"][step].items():
            assert resumed["steps"][step][key] == pytest.approx(value, rel=1e-6, abs=1e-7), (step, key)

    a = torch.load(out / "save-weights.pt", weights_only=True)
    b = torch.load(out / "resume-weights.pt", weights_only=True)
    assert set(a) == set(b) == {"actor", "critic"}
    for name in a:
        assert set(a[name]) == set(b[name]) and len(a[name]) > 0
        for k in a[name]:
            torch.testing.assert_close(b[name][k], a[name][k], rtol=0, atol=1e-6, msg=f"{name}.{k}")
    # the critic's value head trained and is in its own state (not mixed into the actor's)
    assert any("score" in k for k in a["critic"]) and not any("score" in k for k in a["actor"])
