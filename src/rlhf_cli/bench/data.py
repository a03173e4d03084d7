"""The data sets of `rlhf bench --vs trl`, written once per run as files both sides read in the same shape.

``data=`` picks one per stage (different prompt / answer length profiles, because a peer's padding and its
LM head over prompt tokens cost more or less with them):

- ``hh``: the bundled HH-RLHF harmless pairs: long multi-turn prompts (~150 tokens), short answers;
- ``gsm8k``: the bundled GSM8K chats: a short question, a long worked solution (~120 tokens). As
  preference pairs (rm, dpo) the rejected answer is the next problem's solution (throughput only: the
  task is trivially learnable, the shapes are real).

Every record is prompt + completion / chosen + rejected in the conversational form both our stages and
TRL's trainers take: the prompt a list of chat messages, each answer one assistant message.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

DATASETS = ("hh", "gsm8k")
DEFAULT_DATA = {"sft": "gsm8k", "rm": "hh", "dpo": "hh"}


def builtin_records(name: str, limit: int) -> List[dict]:
    """The first ``limit`` records of a bundled example file."""
    from rlhf_cli.data.readers import read_records

    out = []
    for _, rec in read_records(f"builtin:{name}"):
        out.append(rec)
        if len(out) == limit:
            break
    return out


def _hh_pair(rec: dict) -> dict:
    from rlhf_cli.data.preference import split_hh

    prompt, a, b = split_hh(rec["chosen"], rec["rejected"], "chat")
    return {"prompt": prompt, "chosen": a, "rejected": b}


def pairs(data: str, limit: int) -> List[dict]:
    """``{prompt: messages, chosen: str, rejected: str}`` records."""
    if data == "hh":
        return [_hh_pair(r) for r in builtin_records("hh_harmless_sample.jsonl", limit)]
    chats = builtin_records("gsm8k_sft.jsonl", limit + 1)
    return [{"prompt": a["messages"][:-1], "chosen": a["messages"][-1]["content"],
             "rejected": b["messages"][-1]["content"]} for a, b in zip(chats, chats[1:])][:limit]


def completions(data: str, limit: int) -> List[dict]:
    """``{prompt: messages, completion: [assistant message]}`` records (SFT, loss on the completion)."""
    if data == "gsm8k":
        return [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]}
                for r in builtin_records("gsm8k_sft.jsonl", limit)]
    return [{"prompt": p["prompt"], "completion": [{"role": "assistant", "content": p["chosen"]}]}
            for p in pairs("hh", limit)]


def records(stage: str, data: str, limit: int) -> List[dict]:
    return completions(data, limit) if stage == "sft" else pairs(data, limit)


def trl_records(stage: str, data: str, limit: int) -> List[dict]:
    """The same records as TRL's conversational dataset rows (answers as assistant-message lists)."""
    rows = records(stage, data, limit)
    if stage == "sft":
        return rows
    return [{"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]


def write(stage: str, data: str, limit: int, directory: Path) -> Path:
    """The records as a jsonl file for our stage's data.path."""
    path = Path(directory) / f"bench-{stage}-{data}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records(stage, data, limit)))
    return path


def data_option(stage: str, opts: Dict) -> str:
    """``data=`` for a stage (checked), or its default."""
    from rlhf_cli.errors import ConfigError

    value = str(opts.get("data", DEFAULT_DATA.get(stage, "")))
    if stage in DEFAULT_DATA and value not in DATASETS:
        raise ConfigError(f"bench: data={value}: must be one of {', '.join(DATASETS)}")
    return value
