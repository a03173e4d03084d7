"""Preference record parsing: shapes, HH transcript split, rankings, KTO, process steps, bad records."""
import json

import pytest

from rlhf_cli.config.stage_rm import PreferenceDataConfig
from rlhf_cli.data.preference import load_preferences, split_hh
from rlhf_cli.data.preference_batch import collate_preferences
from rlhf_cli.errors import DataError


class CharTok:
    """Minimal tokenizer: one id per character, EOS = 1."""
    eos_token_id = 1
    pad_token_id = 1

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def load(tmp_path, rows, kind="outcome", **kw):
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = PreferenceDataConfig(path=str(p), template="plain", max_length=kw.pop("max_length", 64), **kw)
    return load_preferences(str(p), d, CharTok(), kind)


def test_pairwise_ids_and_labels(tmp_path):
    items, st = load(tmp_path, [{"prompt": "ab", "chosen": "c", "rejected": "dd", "margin": 2}])
    (it,) = items
    assert it.seqs == [[97, 98, 99, 1], [97, 98, 100, 100, 1]] and it.prompt_lens == [2, 2] and it.margin == 2
    b = collate_preferences(items, pad_id=0)
    assert b.index.tolist() == [[0, 1]] and b.attention_mask.tolist()[0] == [1, 1, 1, 1, 0]
    assert b.labels[0].tolist() == [-100, 99, 1, -100, -100]  # targets of answer tokens only


def test_hh_split_shares_prompt():
    c = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: x?\n\nAssistant: yes"
    r = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: x?\n\nAssistant: no"
    msgs, a, b = split_hh(c, r, "chat")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"] and (a, b) == ("yes", "no")
    prompt, a, b = split_hh(c, r, "plain")
    assert prompt.endswith("\n\nAssistant:") and (a, b) == (" yes", " no")


def test_ranking_with_ties(tmp_path):
    items, _ = load(tmp_path, [{"prompt": "p", "responses": ["a", "b", "c"], "ranks": [0, 0, 1]}])
    assert items[0].ranks == [0, 0, 1] and len(items[0].seqs) == 3


def test_kto_items_get_mismatched_pairs(tmp_path):
    rows = [{"prompt": "p", "completion": "a", "label": True}, {"prompt": "q", "completion": "b", "label": False}]
    items, _ = load(tmp_path, rows, kind="kto")
    assert [len(it.seqs) for it in items] == [2, 2]
    assert items[0].seqs[1] == [ord("p"), ord("b"), 1]


def test_process_steps(tmp_path):
    items, _ = load(tmp_path, [{"prompt": "q", "steps": ["s1", "s2"], "labels": [1, 0]}], kind="process")
    (it,) = items
    assert it.seqs[0] == [ord(c) for c in "qs1\ns2\n"] and it.step_ends == [3, 6] and it.step_labels == [1, 0]


def test_truncation_keeps_answers(tmp_path):
    items, st = load(tmp_path, [{"prompt": "x" * 40, "chosen": "y" * 20, "rejected": "z" * 10}], max_length=32)
    assert st.truncated == 1 and all(len(s) <= 32 for s in items[0].seqs) and items[0].prompt_lens[0] == 16


@pytest.mark.parametrize("rec, msg", [
    ({"prompt": "p", "chosen": "a"}, "missing 'rejected'"),
    ({"prompt": "p", "chosen": "a", "rejected": "a"}, "chosen and rejected are identical"),
    ({"prompt": "p", "responses": []}, "must be a non-empty list"),
    ({"prompt": "p", "responses": ["a", "b"], "ranks": [1, 1]}, "tied"),
    ({"foo": 1}, "unrecognised record"),
])
def test_bad_records_name_file_and_line(tmp_path, rec, msg):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    with pytest.raises(DataError, match=rf"d.jsonl:2: .*{msg}"):
        load(tmp_path, [good, rec])


def test_skip_bad(tmp_path):
    items, st = load(tmp_path, [{"prompt": "p", "chosen": "a", "rejected": "a"},
                                {"prompt": "p", "chosen": "a", "rejected": "b"}], skip_bad=True)
    assert len(items) == 1 and st.skipped == 1
