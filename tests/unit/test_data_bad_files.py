"""Unreadable data: bad bytes, broken/non-gzip .gz files and broken JSON lines give `file:line: why`,
and data.skip_bad=true skips and counts them like any other bad record (SFT, preference, prompt and
RLAIF prompt loaders alike). The SFT default config accepts every record shape the README lists."""
import gzip
import json

import pytest
from omegaconf import OmegaConf

from rlhf_cli.config.compose import compose
from rlhf_cli.config.stage_rlaif import RLAIFDataConfig
from rlhf_cli.config.stage_rm import PreferenceDataConfig
from rlhf_cli.config.stages import SFTDataConfig
from rlhf_cli.data.preference import load_preferences
from rlhf_cli.data.prompts import load_prompts
from rlhf_cli.data.readers import read_records
from rlhf_cli.data.rlaif import load_rlaif_prompts
from rlhf_cli.data.sft import load_sft_examples
from rlhf_cli.errors import DataError


def sft_cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(SFTDataConfig), {"path": "x", **kw})


def lines(*rows):
    return b"".join((json.dumps(r).encode() if isinstance(r, dict) else r) + b"\n" for r in rows)


GOOD1, GOOD2 = {"text": "first good"}, {"text": "second good"}


@pytest.mark.parametrize("bad_line, why", [
    (b'{"text": "caf\xe9 latin-1"}', r"invalid UTF-8 \(byte 0xe9"),
    (b"\xff\xfe\x00garbage", r"invalid UTF-8 \(byte 0xff"),
    (b'{"text": "unterminated', r"invalid JSON"),
    (b"[1, 2, 3]", r"a record must be a JSON object, got list"),
])
def test_bad_line_names_file_and_line_and_skip_bad_counts_it(tmp_path, tokenizer, bad_line, why):
    p = tmp_path / "d.jsonl"
    p.write_bytes(lines(GOOD1, bad_line, GOOD2))
    with pytest.raises(DataError, match=rf"d\.jsonl:2: {why}"):
        load_sft_examples(p, sft_cfg(), tokenizer)
    with pytest.raises(DataError, match=rf"d\.jsonl:2: {why}"):
        list(read_records(p))
    examples, stats = load_sft_examples(p, sft_cfg(skip_bad=True), tokenizer)
    assert len(examples) == 2 and stats.skipped == 1 and stats.records == 3


def test_gzip_truncated_and_not_gzip(tmp_path, tokenizer):
    payload = lines(*[{"text": f"row {i} " + "x" * 50} for i in range(200)])
    whole = gzip.compress(payload)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"cut\.jsonl\.gz:\d+: truncated gzip file"):
        load_sft_examples(cut, sft_cfg(), tokenizer)
    examples, stats = load_sft_examples(cut, sft_cfg(skip_bad=True), tokenizer)
    assert 0 < len(examples) < 200 and stats.skipped == 1

    fake = tmp_path / "plain.jsonl.gz"
    fake.write_bytes(lines(GOOD1, GOOD2))  # not compressed at all
    with pytest.raises(DataError, match=r"plain\.jsonl\.gz:1: not a gzip file"):
        load_sft_examples(fake, sft_cfg(), tokenizer)
    with pytest.raises(DataError, match=r"plain\.jsonl\.gz: no usable records \(1 read, 1 skipped\)"):
        load_sft_examples(fake, sft_cfg(skip_bad=True), tokenizer)

    corrupt = bytearray(whole)
    corrupt[len(corrupt) // 2] ^= 0xFF  # a flipped byte inside the deflate stream
    bad = tmp_path / "corrupt.jsonl.gz"
    bad.write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match=r"corrupt\.jsonl\.gz:\d+: (corrupt gzip data|truncated gzip|not a gzip)"):
        load_sft_examples(bad, sft_cfg(), tokenizer)


def test_json_document_with_bad_bytes_names_line(tmp_path, tokenizer):
    p = tmp_path / "d.json"
    p.write_bytes(b'[\n{"text": "ok"},\n{"text": "\xff"}\n]')
    with pytest.raises(DataError, match=r"d\.json:3: invalid UTF-8"):
        load_sft_examples(p, sft_cfg(skip_bad=True), tokenizer)


def test_preference_and_prompt_loaders_skip_bad_lines(tmp_path, tokenizer):
    pair = {"prompt": "Say hi", "chosen": "hi", "rejected": "go away"}
    p = tmp_path / "pairs.jsonl"
    p.write_bytes(lines(pair, b'{"prompt": "x", "chosen": \xff}', b"{oops", pair))
    d = OmegaConf.merge(OmegaConf.structured(PreferenceDataConfig), {"path": str(p)})
    with pytest.raises(DataError, match=r"pairs\.jsonl:2: invalid UTF-8"):
        load_preferences(p, d, tokenizer, kind="pairs")
    d.skip_bad = True
    items, stats = load_preferences(p, d, tokenizer, kind="pairs")
    assert len(items) == 2 and stats.skipped == 2

    q = tmp_path / "prompts.jsonl"
    q.write_bytes(lines({"prompt": "1+1?"}, b"\xc3\x28", {"prompt": "2+2?"}))
    with pytest.raises(DataError, match=r"prompts\.jsonl:2: invalid UTF-8"):
        load_prompts(q, tokenizer)
    examples, stats = load_prompts(q, tokenizer, skip_bad=True)
    assert len(examples) == 2 and stats.skipped == 1

    # RLAIF prompts follow the same rule (an unreadable line used to stop them even under skip_bad)
    r = OmegaConf.merge(OmegaConf.structured(RLAIFDataConfig), {"path": str(q)})
    with pytest.raises(DataError, match=r"prompts\.jsonl:2: invalid UTF-8"):
        load_rlaif_prompts(q, r, tokenizer, max_prompt_tokens=64)
    r.skip_bad = True
    prompts, stats = load_rlaif_prompts(q, r, tokenizer, max_prompt_tokens=64)
    assert [p.text for p in prompts] == ["1+1?", "2+2?"] and stats.skipped == 1 and stats.records == 3


@pytest.mark.parametrize("rows", [
    [{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}] * 3,
    [{"prompt": "2+2?", "completion": " 4"}] * 3,
    [{"text": "Two plus two is four."}] * 3,
], ids=["messages", "prompt_completion", "text"])
def test_sft_default_config_accepts_every_shape(tmp_path, tokenizer, rows):
    p = tmp_path / "train.jsonl"
    p.write_bytes(lines(*rows))
    cfg = compose("sft", overrides=[f"data.path={p}", "model=tiny"])
    examples, stats = load_sft_examples(cfg.data.path, cfg.data, tokenizer)
    assert len(examples) == 3 and stats.skipped == 0
