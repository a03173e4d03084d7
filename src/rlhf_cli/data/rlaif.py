"""Prompts for the rlaif stage from any prompt-bearing record, and the records it writes.

Record shapes read (per record):
- ``prompt`` (``data.prompt_field``): a string (one user turn) or chat messages;
- HH-RLHF transcripts (``chosen`` / ``rejected`` strings "\\n\\nHuman: ... \\n\\nAssistant: ..."): the FIRST
  human turn is the prompt; with ``rlaif.responses=data`` the pair's final answers are the responses;
- chat ``messages``: the conversation before its last assistant turn.

Written (one JSON object per line):
- ``sl_data.jsonl``: ``{"messages": [..., {"role": "assistant", "content": final revision}]}`` (sft reads it);
- ``sl_chains.jsonl``: ``{"prompt", "initial_response", "rounds": [{"principle", "critique_request",
  "critique", "revision_request", "revision"}], "final_response"}``;
- ``preferences.jsonl``: ``{"prompt", "chosen", "rejected", "judge_prob", "principle", "order_flip"}``
  (rm and dpo read it as pairwise records; ``judge_prob`` = P(chosen is better) after order averaging,
  ``orders`` = that probability in each presentation order [chosen shown first, chosen shown second],
  ``order_flip`` = the two orders disagree on the winner; ``agrees_with_data`` with rlaif.responses=data).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from rlhf_cli.data.chat import validate_messages
from rlhf_cli.data.preference import hh_messages, split_hh
from rlhf_cli.data.prompts import encode_prompt, prompt_messages
from rlhf_cli.data.readers import parsed_records, source_for
from rlhf_cli.errors import DataError

CHAIN_FIELDS = ("prompt", "initial_response", "rounds", "final_response")
ROUND_FIELDS = ("principle", "critique_request", "critique", "revision_request", "revision")
PREF_FIELDS = ("prompt", "chosen", "rejected", "judge_prob", "principle", "order_flip")


@dataclass
class RLAIFPrompt:
    index: int                 # position in the file (after skips): seeds the draws of this prompt
    messages: List[dict]       # the conversation the policy answers
    text: str                  # the prompt as the judge sees it (last user message)
    ids: List[int]             # policy token ids, generation prompt appended
    pair: Optional[Tuple[str, str]] = None  # rlaif.responses=data: (human-chosen, human-rejected) answers


@dataclass
class PromptStats:
    records: int = 0
    skipped: int = 0
    too_long: int = 0
    no_pair: int = 0  # rlaif.responses=data: records without a (single-turn) chosen/rejected pair


def record_prompt(rec: dict, d) -> Tuple[List[dict], str, Optional[Tuple[str, str]]]:
    """(messages, judge-visible prompt text, (chosen, rejected) answers or None); ValueError if unusable."""
    if d.prompt_field in rec:
        msgs, text = prompt_messages(rec, d.prompt_field, d.system_prompt, d.prompt_template)
        pair = None
        c, r = rec.get(d.chosen_field), rec.get(d.rejected_field)
        if isinstance(c, str) and isinstance(r, str) and c.strip() and r.strip() and c != r:
            pair = (c.strip(), r.strip())
        return msgs, text, pair
    chosen = rec.get(d.chosen_field)
    if isinstance(chosen, str):
        first = hh_messages(chosen)[0]["content"]  # ValueError when not a transcript
        if not first:
            raise ValueError("the transcript's first human turn is empty")
        text = d.prompt_template.format(prompt=first) if d.prompt_template else first
        msgs = [{"role": "user", "content": text}]
        pair = None
        rejected = rec.get(d.rejected_field)
        if isinstance(rejected, str):
            prompt, a, b = split_hh(chosen, rejected, "chat")
            if len([m for m in prompt if m["role"] == "user"]) == 1 and a and b and a != b:
                pair = (a, b)  # single-turn pairs only: the answer must follow the first human turn
    elif isinstance(rec.get(d.messages_field), list):
        conv = rec[d.messages_field]
        why = validate_messages(conv)
        if why:
            raise ValueError(f"'{d.messages_field}': {why}")
        last_user = max((i for i, m in enumerate(conv) if m["role"] == "user"), default=-1)
        if last_user < 0:
            raise ValueError(f"'{d.messages_field}' has no user message")
        msgs = [dict(m) for m in conv[: last_user + 1]]
        text, pair = msgs[-1]["content"], None
    else:
        raise ValueError(f"record has no '{d.prompt_field}', HH '{d.chosen_field}' transcript or "
                         f"'{d.messages_field}' (fields: {', '.join(sorted(rec)) or 'none'})")
    if d.system_prompt and msgs[0]["role"] != "system":
        msgs = [{"role": "system", "content": d.system_prompt}] + msgs
    return msgs, text, pair


def load_rlaif_prompts(path, d, tokenizer, max_prompt_tokens: int, limit: int = 0,
                       need_pair: bool = False) -> Tuple[List[RLAIFPrompt], PromptStats]:
    """Every usable prompt of ``path``. Bad records: DataError(file:line), or skipped and counted with
    data.skip_bad. Prompts over the budget (and, with need_pair, records without a single-turn pair) are
    skipped and counted."""
    stats, out = PromptStats(), []
    for _, _, (msgs, text, pair) in parsed_records(source_for(path, d), lambda rec: record_prompt(rec, d), stats,
                                                   d.skip_bad, limit, errors=(ValueError, KeyError, IndexError)):
        if need_pair and pair is None:
            stats.no_pair += 1
            continue
        ids = encode_prompt(tokenizer, msgs)
        if len(ids) > max_prompt_tokens:
            stats.too_long += 1
            continue
        out.append(RLAIFPrompt(len(out), msgs, text, ids, pair))
    if not out:
        raise DataError(f"{path}: no usable prompts ({stats.records} read, {stats.skipped} skipped, "
                        f"{stats.too_long} longer than the prompt budget, {stats.no_pair} without a pair)")
    return out, stats


def pref_prompt(p: RLAIFPrompt):
    """The ``prompt`` field written to preferences.jsonl: a string for one user turn, else the messages."""
    if len(p.messages) == 1:
        return p.messages[0]["content"]
    return p.messages


def sl_record(p: RLAIFPrompt, final: str) -> dict:
    return {"messages": list(p.messages) + [{"role": "assistant", "content": final}]}
