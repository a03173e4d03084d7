"""SFT examples: records of shape ``messages`` | ``conversations`` | ``prompt`` + ``completion`` | ``text`` ->
token ids + loss mask.

- messages: the model's chat template; loss on assistant tokens only (see chat.py).
- conversations (ShareGPT / Capybara): ``[{from: human|gpt|system, value}]`` (or role/content) turns, read
  as messages.
- prompt + completion: lists of messages are rendered with the chat template (prompt as the conversation,
  completion as the answer); strings too when the tokenizer has a chat template (``data.template=auto``,
  as TRL renders conversational data), else (or with ``data.template=plain``) concatenated as plain text.
  Loss on the completion (+ EOS / end of turn). Public pairs of field names are read as prompt + completion
  with no mapping: question/answer (GSM8K), problem/solution (MATH), instruction/output (Alpaca).
- text: plain text, loss on every token + EOS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from rlhf_cli.data.chat import tokenize_chat, validate_messages
from rlhf_cli.data.readers import parsed_records, source_for
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


# Field pairs public datasets use for a prompt and its completion (read when the configured ones are absent).
PROMPT_COMPLETION_FIELDS = (("question", "answer"), ("problem", "solution"), ("instruction", "output"))
# ShareGPT turn speakers -> chat roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "bard": "assistant", "system": "system"}


def detect_format(rec: dict, dcfg) -> Optional[str]:
    if dcfg.format != "auto":
        return dcfg.format
    if dcfg.messages_field in rec:
        return "messages"
    if dcfg.conversations_field in rec:
        return "conversations"
    if prompt_completion_fields(rec, dcfg) is not None:
        return "prompt_completion"
    if dcfg.text_field in rec:
        return "text"
    return None


def prompt_completion_fields(rec: dict, dcfg) -> Optional[Tuple[str, str]]:
    """The (prompt, completion) field names of ``rec``: the configured ones, else a public pair."""
    if dcfg.prompt_field in rec and dcfg.completion_field in rec:
        return dcfg.prompt_field, dcfg.completion_field
    for pair in PROMPT_COMPLETION_FIELDS:
        if all(k in rec for k in pair):
            return pair
    return None


def sharegpt_messages(turns, field: str) -> List[dict]:
    """``[{from, value}]`` (or ``[{role, content}]``) turns -> chat messages; ValueError naming what is wrong."""
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"'{field}' must be a non-empty list of turns")
    msgs = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise ValueError(f"'{field}'[{i}] must be an object")
        speaker, text = (t.get("from"), t.get("value")) if "from" in t else (t.get("role"), t.get("content"))
        role = SHAREGPT_ROLES.get(str(speaker).lower())
        if role is None:
            raise ValueError(f"'{field}'[{i}]: unknown speaker {speaker!r} (human, gpt, system)")
        msgs.append({"role": role, "content": text})
    return msgs


def chat_strings(tokenizer, dcfg) -> bool:
    """Whether string prompt/completion records go through the chat template."""
    template = getattr(dcfg, "template", None) or "auto"
    return template == "chat" or (template == "auto" and bool(getattr(tokenizer, "chat_template", None)))


def _as_text_ids(tokenizer, text: str) -> List[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_record(rec: dict, dcfg, tokenizer) -> Tuple[List[int], List[int]]:
    """Return (ids, loss_mask) for one record or raise ValueError saying what is wrong with it."""
    fmt = detect_format(rec, dcfg)
    eos = [tokenizer.eos_token_id]
    if fmt is None:
        raise ValueError(f"record has none of '{dcfg.messages_field}', '{dcfg.conversations_field}', "
                         f"'{dcfg.prompt_field}'+'{dcfg.completion_field}', '{dcfg.text_field}'")
    if fmt in ("messages", "conversations"):
        field = dcfg.messages_field if fmt == "messages" else dcfg.conversations_field
        msgs = rec.get(field) if fmt == "messages" else sharegpt_messages(rec.get(field), field)
        why = validate_messages(msgs)
        if why:
            raise ValueError(f"'{field}': {why}")
        return tokenize_chat(tokenizer, msgs)
    if fmt == "prompt_completion":
        p_key, c_key = prompt_completion_fields(rec, dcfg) or (dcfg.prompt_field, dcfg.completion_field)
        prompt, completion = rec.get(p_key), rec.get(c_key)
        if isinstance(prompt, str) and isinstance(completion, str) and completion and chat_strings(tokenizer, dcfg):
            prompt, completion = [{"role": "user", "content": prompt}], [{"role": "assistant", "content": completion}]
        if isinstance(prompt, list) and isinstance(completion, list):
            msgs = prompt + completion
            why = validate_messages(msgs)
            if why:
                raise ValueError(why)
            return tokenize_chat(tokenizer, msgs)
        if not isinstance(prompt, str) or not isinstance(completion, str) or not completion:
            raise ValueError(f"'{p_key}' and '{c_key}' must be strings "
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
    for _, _, (ids, mask) in parsed_records(source_for(path, dcfg), lambda rec: tokenize_record(rec, dcfg, tokenizer),
                                            stats,
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
