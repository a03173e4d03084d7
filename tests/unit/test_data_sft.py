"""SFT data: readers, record shapes, assistant-only loss mask, bad records with file:line."""
import gzip
import json

import pytest
from omegaconf import OmegaConf

from rlhf_cli.config.stages import SFTDataConfig
from rlhf_cli.data.chat import tokenize_chat
from rlhf_cli.data.readers import read_records
from rlhf_cli.data.sft import load_sft_examples, tokenize_record
from rlhf_cli.errors import DataError


def dcfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(SFTDataConfig), {"path": "x", **kw})


CONVO = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+3?"},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "And 4+4?"},
    {"role": "assistant", "content": "It is 8."},
]


def test_only_assistant_tokens_carry_loss(tokenizer):
    ids, mask = tokenize_chat(tokenizer, CONVO)
    assert len(ids) == len(mask)
    learned = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    # exactly the two answers, each with its end-of-turn marker (so the model learns to stop)
    assert learned == "5<|im_end|>\nIt is 8.<|im_end|>\n"
    ignored = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    assert "What is 2+3?" in ignored and "Be brief." in ignored and "It is 8." not in ignored
    # the full rendering equals the template's own rendering of the whole conversation
    assert ids == list(tokenizer.apply_chat_template(CONVO, tokenize=True, return_dict=True)["input_ids"])


def test_prompt_completion_and_text_shapes(tokenizer):
    rec = {"prompt": "Q: 2+2?\nA:", "completion": " 4"}
    ids, mask = tokenize_record(rec, dcfg(template="plain"), tokenizer)
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m]) == " 4<|im_end|>"
    assert tokenizer.decode([t for t, m in zip(ids, mask) if not m]) == "Q: 2+2?\nA:"
    # template=auto with a chat tokenizer (as TRL renders conversational data): user/assistant turns
    ids, mask = tokenize_record(rec, dcfg(), tokenizer)
    chat = tokenize_chat(tokenizer, [{"role": "user", "content": rec["prompt"]},
                                     {"role": "assistant", "content": rec["completion"]}])
    assert (ids, mask) == tuple(chat) and "<|im_start|>user" in tokenizer.decode(ids)
    ids, mask = tokenize_record({"text": "hello world"}, dcfg(), tokenizer)
    assert all(mask) and ids[-1] == tokenizer.eos_token_id
    ids, mask = tokenize_record({"q": CONVO}, dcfg(messages_field="q"), tokenizer)  # renamed field
    assert sum(mask) > 0


def write_jsonl(path, rows, raw_lines=()):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        for line in raw_lines:
            f.write(line + "\n")


def test_bad_records_name_file_and_line(tmp_path, tokenizer):
    p = tmp_path / "d.jsonl"
    write_jsonl(p, [{"text": "ok"}, {"messages": [{"role": "user", "content": "no answer"}]}])
    with pytest.raises(DataError, match=r"d.jsonl:2: .*no assistant message"):
        load_sft_examples(p, dcfg(), tokenizer)
    write_jsonl(p, [{"text": "ok"}, {"foo": 1}])
    with pytest.raises(DataError, match=r"d.jsonl:2: record has none of 'messages'"):
        load_sft_examples(p, dcfg(), tokenizer)
    write_jsonl(p, [{"text": "ok"}], raw_lines=["{not json"])
    with pytest.raises(DataError, match=r"d.jsonl:2: invalid JSON"):
        load_sft_examples(p, dcfg(), tokenizer)
    write_jsonl(p, [{"text": "ok"}, {"messages": [{"role": "robot", "content": "x"}]}, {"text": "fine"}])
    examples, stats = load_sft_examples(p, dcfg(skip_bad=True), tokenizer)
    assert len(examples) == 2 and stats.skipped == 1


def test_truncation_is_counted(tmp_path, tokenizer):
    p = tmp_path / "d.jsonl"
    write_jsonl(p, [{"text": "word " * 100}, {"text": "short"}])
    examples, stats = load_sft_examples(p, dcfg(max_length=16), tokenizer)
    assert stats.truncated == 1 and max(len(e.input_ids) for e in examples) == 16


def test_readers_all_formats_agree(tmp_path):
    rows = [{"text": f"r{i}", "n": i} for i in range(5)]
    write_jsonl(tmp_path / "a.jsonl", rows)
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "a.json").write_text(json.dumps({"data": rows}))
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    for name in ("a.jsonl", "a.jsonl.gz", "a.json", "a.parquet", "ds"):
        got = [r for _, r in read_records(tmp_path / name)]
        assert got == rows, name
    assert len(list(read_records(tmp_path / "a.jsonl", limit=2))) == 2


def test_reads_shared_hh_gzip_when_present():
    from pathlib import Path

    p = Path(__file__).resolve().parents[2].parent / "shared/data/hh-rlhf-harmless/test.jsonl.gz"
    if not p.exists():
        pytest.skip("../shared not beside the checkout")
    first = next(read_records(p))
    assert first[0] == 1 and "chosen" in first[1] and "rejected" in first[1]
