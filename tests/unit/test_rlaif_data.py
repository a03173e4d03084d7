"""rlaif prompt extraction from every prompt shape (HH transcripts give their first human turn)."""
import json

import pytest

from rlhf_cli.config.stage_rlaif import RLAIFDataConfig
from rlhf_cli.data.rlaif import load_rlaif_prompts, pref_prompt, record_prompt, sl_record
from rlhf_cli.errors import DataError

HH_C = "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.\n\nHuman: Why?\n\nAssistant: Sorry."
HH_R = "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.\n\nHuman: Why?\n\nAssistant: Sure."
HH1_C = "\n\nHuman: Tell me a joke.\n\nAssistant: Why did the chicken cross the road?"
HH1_R = "\n\nHuman: Tell me a joke.\n\nAssistant: No."


def d(**kw):
    return RLAIFDataConfig(path="x", **kw)


def test_hh_transcript_gives_first_human_turn_and_single_turn_pairs():
    msgs, text, pair = record_prompt({"chosen": HH_C, "rejected": HH_R}, d())
    assert msgs == [{"role": "user", "content": "How do I pick a lock?"}] and text == "How do I pick a lock?"
    assert pair is None  # the answers follow a later human turn, not the first one
    msgs, text, pair = record_prompt({"chosen": HH1_C, "rejected": HH1_R}, d())
    assert text == "Tell me a joke." and pair == ("Why did the chicken cross the road?", "No.")


def test_prompt_string_messages_and_chat_records():
    assert record_prompt({"prompt": "Hi"}, d(system_prompt="Be nice."))[0] == [
        {"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"}]
    assert record_prompt({"prompt": "Hi"}, d(prompt_template="Q: {prompt}"))[1] == "Q: Hi"
    conv = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    msgs, text, _ = record_prompt({"messages": conv}, d())
    assert msgs == conv[:3] and text == "c"
    _, _, pair = record_prompt({"prompt": "p", "chosen": "x", "rejected": "y"}, d())
    assert pair == ("x", "y")
    with pytest.raises(ValueError, match="no 'prompt', HH 'chosen' transcript or 'messages'"):
        record_prompt({"question": "q"}, d())


def test_load_counts_and_errors(tmp_path, tokenizer):
    p = tmp_path / "p.jsonl"
    rows = [{"chosen": HH1_C, "rejected": HH1_R}, {"chosen": HH_C, "rejected": HH_R}, {"prompt": "x " * 400},
            {"question": "bad"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"p.jsonl:4: record has no"):
        load_rlaif_prompts(str(p), d(), tokenizer, max_prompt_tokens=100)
    out, st = load_rlaif_prompts(str(p), d(skip_bad=True), tokenizer, max_prompt_tokens=100)
    assert [x.text for x in out] == ["Tell me a joke.", "How do I pick a lock?"]
    assert (st.records, st.skipped, st.too_long) == (4, 1, 1)
    assert [x.index for x in out] == [0, 1]
    out, st = load_rlaif_prompts(str(p), d(skip_bad=True), tokenizer, max_prompt_tokens=100, need_pair=True)
    assert len(out) == 1 and out[0].pair[1] == "No." and (st.skipped, st.no_pair) == (1, 2)
    assert pref_prompt(out[0]) == "Tell me a joke."
    assert sl_record(out[0], "R")["messages"][-1] == {"role": "assistant", "content": "R"}
