"""SFT examples: records of shape ``messages`` | ``prompt`` + ``completion`` | ``text`` -> token ids + loss mask.

- messages: the model's chat template; loss on assistant tokens only (see chat.py).
- prompt + completion: strings are concatenated as plain text (loss on the completion + EOS); lists of
  messages are rendered with the chat template (prompt as the conversation, completion as the answer).
- text: plain text, loss on every token + EOS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from rlhf_cli.data.chat import tokenize_chat, validate_messages
from rlhf_cli.data.readers import parsed_records
from rlhf_cli.errors import DataError


@dataclass
class Example:
    input_ids: List[int]
    loss_mask: List[int]


@dataclass
class LoadStats:
    records: int = 0
    skipped: int = 0
    truncated: int = 0


def detect_format(rec: dict, dcfg) -> Optional[str]:
    if dcfg.format != "auto":
        return dcfg.format
    if dcfg.messages_field in rec:
        return "messages"
    if dcfg.prompt_field in rec and dcfg.completion_field in rec:
        return "prompt_completion"
    if dcfg.text_field in rec:
        return "text"
    return None


def _as_text_ids(tokenizer, text: str) -> List[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_record(rec: dict, dcfg, tokenizer) -> Tuple[List[int], List[int]]:
    """Return (ids, loss_mask) for one record or raise ValueError saying what is wrong with it."""
    fmt = detect_format(rec, dcfg)
    eos = [tokenizer.eos_token_id]
    if fmt is None:
        raise ValueError(f"record has none of '{dcfg.messages_field}', '{dcfg.prompt_field}'+"
                         f"'{dcfg.completion_field}', '{dcfg.text_field}'")
    if fmt == "messages":
        msgs = rec.get(dcfg.messages_field)
        why = validate_messages(msgs)
        if why:
            raise ValueError(f"'{dcfg.messages_field}': {why}")
        return tokenize_chat(tokenizer, msgs)
    if fmt == "prompt_completion":
        prompt, completion = rec.get(dcfg.prompt_field), rec.get(dcfg.completion_field)
        if isinstance(prompt, list) and isinstance(completion, list):
            msgs = prompt + completion
            why = validate_messages(msgs)
            if why:
                raise ValueError(why)
            return tokenize_chat(tokenizer, msgs)
        if not isinstance(prompt, str) or not isinstance(completion, str) or not completion:
            raise ValueError(f"'{dcfg.prompt_field}' and '{dcfg.completion_field}' must be strings "
                             "(completion non-empty) or both lists of messages")
        p, c = _as_text_ids(tokenizer, prompt), _as_text_ids(tokenizer, completion) + eos
        return p + c, [0] * len(p) + [1] * len(c)
    text = rec.get(dcfg.text_field)
    if not isinstance(text, str) or not text:
        raise ValueError(f"'{dcfg.text_field}' must be a non-empty string")
    ids = _as_text_ids(tokenizer, text) + eos
    return ids, [1] * len(ids)


def load_sft_examples(path, dcfg, tokenizer, limit: int = 0) -> Tuple[List[Example], LoadStats]:
    """Tokenise every record of ``path``; bad records raise DataError(file:line) or are skipped+counted."""
    stats, out = LoadStats(), []
    for _, _, (ids, mask) in parsed_records(path, lambda rec: tokenize_record(rec, dcfg, tokenizer), stats,
                                            dcfg.skip_bad, limit):
        if len(ids) > dcfg.max_length:
            ids, mask = ids[: dcfg.max_length], mask[: dcfg.max_length]
            stats.truncated += 1
        if sum(mask[1:]) == 0:  # nothing left to learn after truncation
            stats.skipped += 1
            continue
        out.append(Example(ids, mask))
    if not out:
        raise DataError(f"{path}: no usable records ({stats.records} read, {stats.skipped} skipped)")
    return out, stats
