"""Rankings collected with `rlhf label` (driven by Textual's Pilot) train a reward model with data.format=ranking."""
import asyncio
import json

import pytest

from helpers import TINY, metrics, rlhf

pytestmark = pytest.mark.e2e


def test_label_output_trains_rm(tmp_path):
    pytest.importorskip("textual")
    from rlhf_cli.cli.label import prepare
    from rlhf_cli.feedback.label_app import LabelApp

    cands = tmp_path / "cands.jsonl"
    cands.write_text("".join(json.dumps({"prompt": f"Name fruit number {i}.", "responses": [
        f"The apple number {i}.", f"A lemon {i}.", f"Stone {i}."], "models": ["sft", "dpo", "base"]}) + "\n"
        for i in range(4)))
    out = tmp_path / "rankings.jsonl"

    async def session():
        app = LabelApp(**prepare([f"candidates={cands}", f"out={out}", "annotator=ann"], log=lambda *_: None))
        async with app.run_test() as pilot:
            for _ in range(4):
                order = sorted(range(3), key=lambda i: ["apple" not in r and (2 if "Stone" in r else 1)
                                                        for r in app.item.responses][i])
                await pilot.press(str(order[0] + 1), str(order[1] + 1), "enter")

    asyncio.run(session())
    assert len(out.read_text().splitlines()) == 4
    run = tmp_path / "rm"
    rlhf(["train", "rm", *TINY, f"data.path={out}", "data.format=ranking", "data.max_length=64",
          "train.max_steps=2", "train.micro_batch_size=2", "data.eval_fraction=0", f"output_dir={run}"])
    assert (run / "final" / "reward_config.json").exists() and len(metrics(run)) == 2
    elo = json.loads(rlhf(["elo", str(out), "bootstrap=20", "--json"]).stdout)
    assert [r["model"] for r in elo["ratings"]] == ["sft", "dpo", "base"]
