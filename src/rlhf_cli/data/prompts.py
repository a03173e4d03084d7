"""Prompt datasets for the RL stages: records -> chat-rendered prompt ids + the fields rewards need.

A record has a prompt (``data.prompt_field``: a string, rendered as one user turn, or a list of chat
messages) and any other fields (``answer``, ``tests``...), handed to the reward functions. GSM8K's
``{question, answer}`` works as is with ``prompt_field: question``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from rlhf_cli.data.chat import render_prompt, validate_messages
from rlhf_cli.data.preference import HH_ASSISTANT, hh_messages
from rlhf_cli.data.readers import parsed_records, read_records, source_for
from rlhf_cli.errors import DataError


@dataclass
class PromptExample:
    ids: List[int]          # chat-rendered prompt, generation prompt appended
    text: str               # the prompt as the reward functions see it (last user message)
    fields: Dict[str, Any] = field(default_factory=dict)


@dataclass
class PromptStats:
    records: int = 0
    skipped: int = 0
    too_long: int = 0


# Where public datasets keep the prompt, read when the default field 'prompt' is absent (GSM8K, MATH, Alpaca).
PROMPT_FALLBACKS = ("question", "problem", "instruction")


def prompt_messages(rec: dict, prompt_field: str, system_prompt: Optional[str] = None,
                    template: Optional[str] = None) -> Tuple[List[dict], str]:
    """(chat messages, prompt text) for one record, or ValueError saying what is wrong."""
    if prompt_field == "prompt" and prompt_field not in rec:
        prompt_field = next((f for f in PROMPT_FALLBACKS if f in rec), prompt_field)
    if prompt_field not in rec:
        raise ValueError(f"record has no '{prompt_field}' field (set data.prompt_field; fields: "
                         f"{', '.join(sorted(rec)) or 'none'})")
    p = rec[prompt_field]
    if isinstance(p, str) and p.startswith("\n\nHuman:") and HH_ASSISTANT in p:
        # an HH-RLHF transcript (e.g. prompt_field=chosen): the conversation before its last assistant turn;
        # reward functions get the messages (a reward model renders them as in training) when multi-turn
        msgs = hh_messages(p[:p.rfind(HH_ASSISTANT) + len(HH_ASSISTANT)])
        text = msgs[0]["content"] if len(msgs) == 1 else [dict(m) for m in msgs]
    elif isinstance(p, str):
        if not p.strip():
            raise ValueError(f"'{prompt_field}' is empty")
        text = template.format(prompt=p) if template else p
        msgs = [{"role": "user", "content": text}]
    else:
        why = validate_messages(p)
        if why:
            raise ValueError(f"'{prompt_field}': must be a string or chat messages ({why})")
        msgs = [dict(m) for m in p]
        users = [m["content"] for m in msgs if m["role"] == "user"]
        text = users[-1] if users else msgs[-1]["content"]
    if system_prompt and msgs[0]["role"] != "system":
        msgs = [{"role": "system", "content": system_prompt}] + msgs
    return msgs, text


def encode_prompt(tokenizer, messages: Sequence[dict]) -> List[int]:
    """Chat template when the tokenizer has one, else the plain text of the last message."""
    if getattr(tokenizer, "chat_template", None):
        return render_prompt(tokenizer, messages)
    return tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]


def load_prompts(path, tokenizer, *, prompt_field: str = "prompt", system_prompt: Optional[str] = None,
                 prompt_template: Optional[str] = None, reward_fields: Sequence[str] = (),
                 max_prompt_tokens: int = 0, skip_bad: bool = False,
                 limit: int = 0) -> Tuple[List[PromptExample], PromptStats]:
    """Read and render every prompt of ``path``. Bad records: DataError(file:line) or skipped+counted.
    Prompts longer than ``max_prompt_tokens`` (> 0) are skipped and counted."""
    stats, out = PromptStats(), []
    def parse(rec):
        msgs_text = prompt_messages(rec, prompt_field, system_prompt, prompt_template)
        missing = [f for f in reward_fields if f not in rec]
        if missing:
            raise ValueError(f"record has no reward field(s) {', '.join(map(repr, missing))}")
        return msgs_text

    for _, rec, (msgs, text) in parsed_records(path, parse, stats, skip_bad, limit,
                                               errors=(ValueError, KeyError, IndexError)):
        ids = encode_prompt(tokenizer, msgs)
        if max_prompt_tokens and len(ids) > max_prompt_tokens:
            stats.too_long += 1
            continue
        names = list(reward_fields) or [k for k in rec if k != prompt_field]
        out.append(PromptExample(ids, text, {k: rec[k] for k in names}))
    if not out:
        raise DataError(f"{path}: no usable prompts ({stats.records} read, {stats.skipped} bad, "
                        f"{stats.too_long} longer than the prompt budget)")
    return out, stats


def load_prompt_data(path, dcfg, tokenizer, max_prompt_tokens: int = 0,
                     limit: int = 0) -> Tuple[List[PromptExample], PromptStats]:
    """``load_prompts`` with the options of a PromptDataConfig."""
    return load_prompts(source_for(path, dcfg), tokenizer, prompt_field=dcfg.prompt_field,
                        system_prompt=dcfg.system_prompt,
                        prompt_template=dcfg.prompt_template, reward_fields=list(dcfg.reward_fields),
                        max_prompt_tokens=max_prompt_tokens, skip_bad=dcfg.skip_bad, limit=limit)


def reward_fields(examples: Sequence[PromptExample]) -> Dict[str, list]:
    """Column-wise fields for CombinedReward: {name: [value per example]} (keys common to all)."""
    if not examples:
        return {}
    keys = [k for k in examples[0].fields if all(k in e.fields for e in examples)]
    return {k: [e.fields[k] for e in examples] for k in keys}


def read_prompt_messages(path: str, prompt_field: str = "prompt", system_prompt: Optional[str] = None,
                         limit: int = 0, key: str = "data") -> List[Tuple[Any, List[dict]]]:
    """[(the prompt as in the file, its chat messages)] for tools that sample from several models
    (labelling, win-rate, KL); a bad record is a DataError naming file and line."""
    from rlhf_cli.data.readers import resolve_data_path

    out = []
    for line, rec in read_records(resolve_data_path(path, key=key), limit=limit):
        try:
            msgs, _ = prompt_messages(rec, prompt_field, system_prompt)
        except ValueError as e:
            raise DataError(f"{path}:{line}: {e}") from None
        out.append((rec[prompt_field], msgs))
    if not out:
        raise DataError(f"{path}: no prompts")
    return out
