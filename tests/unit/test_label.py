"""`rlhf label`: drive the real Textual app with its Pilot through a full session, a stop and a resume; a
real SIGKILL through a pseudo-terminal; parse the output with the rm stage's loader; sample from tiny models."""
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("textual")

from rlhf_cli.cli.label import prepare  # noqa: E402
from rlhf_cli.feedback.label_app import LabelApp  # noqa: E402
from rlhf_cli.feedback.rankings_io import read_lines  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CANDS = [
    {"prompt": "What is 2+2?", "responses": ["4", "5", "four", "22"], "models": ["sft", "dpo", "sft", "dpo"]},
    {"prompt": "Capital of France?", "responses": ["Paris", "Lyon", "Rome"], "models": ["sft", "dpo", "dpo"]},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}],
     "responses": [{"text": "hi", "model": "dpo"}, {"text": "hello", "model": "sft"}]},
]
MODEL_OF = {"4": "sft", "5": "dpo", "four": "sft", "22": "dpo", "Paris": "sft", "Lyon": "dpo", "Rome": "dpo",
            "hi": "dpo", "hello": "sft"}


@pytest.fixture
def cands(tmp_path):
    p = tmp_path / "cands.jsonl"
    p.write_text("".join(json.dumps(c) + "\n" for c in CANDS))
    return p


def args(cands, out, annotator="ann"):
    return [f"candidates={cands}", f"out={out}", f"annotator={annotator}"]


def keys_for(app, *texts):
    """The digit keys that place the responses with these texts (the display order is shuffled)."""
    return [t if t in ("=",) else str(app.item.responses.index(t) + 1) for t in texts]


def by_text(rec):
    return {r: k for r, k in zip(rec["responses"], rec["ranks"])}


def check_models(rec):
    assert rec["models"] == [MODEL_OF[r] for r in rec["responses"]]


def test_full_session_with_ties_note_takeback_undo(cands, tmp_path):
    out = tmp_path / "rankings.jsonl"

    async def session():
        app = LabelApp(**prepare(args(cands, out), log=lambda *_: None))
        async with app.run_test() as pilot:
            assert sorted(app.item.responses) == sorted(CANDS[0]["responses"])
            await pilot.press(*keys_for(app, "5"), "backspace")  # placed by mistake, taken back
            await pilot.press(*keys_for(app, "4", "=", "four"))
            await pilot.press("enter")  # two left unranked: refused, nothing written
            assert not read_lines(out) and "left" in app.message
            await pilot.press(*keys_for(app, "22"), "n", *"typo in 22", "enter")
            assert app.note == "typo in 22"
            await pilot.press("enter")  # the one left (5) goes last
            assert app.pos == 1
            await pilot.press("b")  # all bad ...
            assert read_lines(tmp_path / "rankings.skipped.jsonl")[0]["verdict"] == "all_bad"
            await pilot.press("u")  # ... undone: the line is gone and the item is back
            assert app.pos == 1 and not read_lines(tmp_path / "rankings.skipped.jsonl")
            await pilot.press(*keys_for(app, "Paris", "Lyon"), "enter")
            await pilot.press(*keys_for(app, "hi", "=", "hello"), "enter")  # all tied: refused
            assert "all tied" in app.message and len(read_lines(out)) == 2
            await pilot.press("backspace", "enter")  # hello taken back -> it goes last
        return app.return_value

    saved = asyncio.run(session())
    assert saved == {"ranked": 3, "skipped": 0, "all_bad": 0}
    recs = read_lines(out)
    assert [by_text(r) for r in recs] == [{"4": 0, "four": 0, "22": 1, "5": 2}, {"Paris": 0, "Lyon": 1, "Rome": 2},
                                          {"hi": 0, "hello": 1}]
    for r, c in zip(recs, CANDS):
        check_models(r)
        assert r["prompt"] == c["prompt"] and r["annotator"] == "ann"
    assert recs[0]["note"] == "typo in 22" and "note" not in recs[1]
    # a rerun has nothing left; another annotator starts from the top
    assert prepare(args(cands, out), log=lambda *_: None)["items"] == []
    assert len(prepare(args(cands, out, "bob"), log=lambda *_: None)["items"]) == 3


def test_rm_loader_reads_rankings(cands, tmp_path, tokenizer):
    from rlhf_cli.config.stage_rm import PreferenceDataConfig
    from rlhf_cli.data.preference import load_preferences

    out = tmp_path / "rankings.jsonl"

    async def session():
        app = LabelApp(**prepare(args(cands, out), log=lambda *_: None))
        async with app.run_test() as pilot:
            await pilot.press(*keys_for(app, "four", "4", "=", "22"), "enter")
            await pilot.press(*keys_for(app, "Rome", "Paris", "=", "Lyon"), "enter")
            await pilot.press("s")

    asyncio.run(session())
    recs = read_lines(out)
    d = SimpleNamespace(**{**PreferenceDataConfig(path=str(out), format="ranking").__dict__, "template": "chat",
                           "max_length": 256, "skip_bad": False})
    items, stats = load_preferences(str(out), d, tokenizer, "outcome")
    assert stats.records == 2 and stats.skipped == 0 and len(items) == 2
    assert [it.ranks for it in items] == [r["ranks"] for r in recs]
    assert by_text(recs[0]) == {"four": 0, "4": 1, "22": 1, "5": 2}
    assert by_text(recs[1]) == {"Rome": 0, "Paris": 1, "Lyon": 1}  # a tied bottom group
    assert read_lines(tmp_path / "rankings.skipped.jsonl")[0]["verdict"] == "skip"


def test_stop_mid_session_then_resume(cands, tmp_path):
    out = tmp_path / "rankings.jsonl"

    async def first():
        app = LabelApp(**prepare(args(cands, out), log=lambda *_: None))
        async with app.run_test() as pilot:
            await pilot.press(*keys_for(app, "22", "4", "5"), "enter")
            await pilot.press(*keys_for(app, "Lyon"))  # half-ranked when the session dies
        # then a crash in the middle of the next write leaves a torn line
        with open(out, "a") as f:
            f.write('{"prompt": "Capital of France?", "respon')

    asyncio.run(first())
    s = prepare(args(cands, out), log=lambda *_: None)
    assert s["done_before"] == 1 and [it.prompt for it in s["items"]] == [CANDS[1]["prompt"], CANDS[2]["prompt"]]
    assert sorted(s["items"][0].responses) == sorted(CANDS[1]["responses"])

    async def second():
        app = LabelApp(**s)
        async with app.run_test() as pilot:
            assert "item 2/3" in str(app.query_one("#status").render())
            await pilot.press(*keys_for(app, "Paris", "Rome"), "enter")
            await pilot.press(*keys_for(app, "hello"), "enter")
        return app.return_value

    assert asyncio.run(second())["ranked"] == 2
    text = out.read_text()
    assert text.endswith("\n") and "respon\n" not in text and '"respon{' not in text
    recs = [json.loads(x) for x in text.splitlines()]
    assert [by_text(r) for r in recs] == [{"22": 0, "4": 1, "5": 2, "four": 3}, {"Paris": 0, "Rome": 1, "Lyon": 2},
                                          {"hello": 0, "hi": 1}]


def test_sigkill_in_a_terminal_then_resume(cands, tmp_path):
    """The real command in a pseudo-terminal: rank one item, kill -9 mid-item, rerun, finish."""
    pexpect = pytest.importorskip("pexpect")
    out = tmp_path / "rankings.jsonl"
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONPATH": str(REPO / "src"), "COLUMNS": "120", "LINES": "40"}
    cmd = [sys.executable, "-m", "rlhf_cli.cli.app", "label", *args(cands, out)]

    def spawn():
        return pexpect.spawn(cmd[0], cmd[1:], env=env, dimensions=(40, 120), timeout=60, encoding="utf-8")

    def wait_lines(n):
        deadline = time.time() + 30
        while time.time() < deadline and len(read_lines(out)) < n:
            time.sleep(0.1)
        return read_lines(out)

    child = spawn()
    child.expect("item 1/3")
    for key in "123\r":
        child.send(key)
    recs = wait_lines(1)
    assert len(recs) == 1
    assert recs[0]["ranks"] == [0, 1, 2, 3]  # 1, 2, 3, and the one left goes last
    child.expect("item 2/3")
    child.send("2")
    time.sleep(0.3)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child = spawn()
    child.expect("item 2/3")
    for key in "31\r":
        child.send(key)
    child.expect("item 3/3")
    child.send("b")
    child.expect("ranked 1, skipped 0, all bad 1")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    recs = read_lines(out)
    assert len(recs) == 2 and recs[1]["prompt"] == CANDS[1]["prompt"] and recs[1]["ranks"] == [1, 2, 0]
    assert read_lines(tmp_path / "rankings.skipped.jsonl")[0]["verdict"] == "all_bad"


def test_sampling_from_tiny_checkpoints(tmp_path, tokenizer):
    import torch
    from transformers import LlamaForCausalLM

    from rlhf_cli.config.schema import TinyModelConfig
    from rlhf_cli.models.loading import save_hf_model, tiny_config

    dirs = []
    for seed in (1, 2):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            lm = LlamaForCausalLM(tiny_config(TinyModelConfig(seed=seed), tokenizer))
        d = tmp_path / f"m{seed}"
        save_hf_model(lm, None, tokenizer, d)
        dirs.append(str(d))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Hi there", "Name a fruit", "Count to 3"]))
    out = tmp_path / "r.jsonl"
    words = [f"prompts={prompts}", f"models=[{dirs[0]},{dirs[1]}]", "k=4", f"out={out}", "annotator=ann",
             "max_new_tokens=8", "seed=3"]
    s = prepare(words, log=lambda *_: None)
    assert len(s["items"]) == 3
    for it in s["items"]:
        assert len(it.responses) == 4 and sorted(it.models) == sorted(dirs * 2)
    again = prepare(words, log=lambda *_: None)
    assert [it.responses for it in again["items"]] == [it.responses for it in s["items"]]  # seeded
    assert len({r for it in s["items"] for r in it.responses}) > 3  # sampled, not one repeated string

    async def session():
        app = LabelApp(**s)
        async with app.run_test() as pilot:
            await pilot.press("1", "2", "3", "enter", "q")

    asyncio.run(session())
    s2 = prepare(words, log=lambda *_: None)
    assert s2["done_before"] == 1 and [it.responses for it in s2["items"]] == [it.responses for it in s["items"][1:]]
