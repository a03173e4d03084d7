"""Preference data -> token ids, for the rm and dpo stages.

Record shapes (``data.format=auto`` detects them per record; field names are configurable):

- pairwise: ``prompt``, ``chosen``, ``rejected`` (strings, or chat messages: the prompt a message list,
  each answer a string or a list ending in the assistant message), optional ``margin`` and soft label
  ``judge_prob`` (P(chosen is better), read when ``data.soft_labels``);
- hh: ``chosen`` / ``rejected`` full "\\n\\nHuman: ... \\n\\nAssistant: ..." transcripts (Anthropic HH-RLHF),
  split into the shared prompt (everything up to the last "\\n\\nAssistant:") and two final answers;
- ranking: ``prompt``, ``responses`` ordered best -> worst, or with explicit ``ranks`` (0 = best, ties
  allowed);
- kto: ``prompt``, ``completion``, ``label`` (true = desirable); pairwise/hh records also work (the
  chosen answer becomes desirable, the rejected one undesirable);
- process: ``prompt``, ``steps`` (list of strings), ``labels`` (0/1 per step).

Rendering: a message-list prompt (and HH transcripts, with ``data.template=chat``) goes through the
tokenizer's chat template, the answer as the assistant turn (its end-of-turn token included). A string
prompt is wrapped as one user turn (template=chat) or concatenated as plain text + EOS (template=plain).
``Encoder`` does this once for training and for scoring (``RewardModelScorer``), so both agree.

Over-long examples: the prompt is cut from the left (keeping at least half of max_length when it is
that long) and the answers from the right; the count is reported.
"""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from rlhf_cli.data.chat import render_messages, render_prompt, validate_messages
from rlhf_cli.data.readers import parsed_records, source_for
from rlhf_cli.errors import DataError

HH_ASSISTANT = "\n\nAssistant:"


@dataclass
class PrefItem:
    """One training example: candidate sequences (prompt + answer) and what is known about them."""

    seqs: List[List[int]]
    prompt_lens: List[int]  # each sequence's answer starts here
    ranks: List[int]  # 0 = best; equal = tie. Pairs: [0, 1]
    margin: Optional[float] = None
    prob: Optional[float] = None  # pairs: soft label, P(seqs[0] is better); None = a hard label (1)
    label: Optional[bool] = None  # kto: desirable?  (seqs[1] is the mismatched KL pair)
    step_ends: List[int] = field(default_factory=list)  # process: last token of each step in seqs[0]
    step_labels: List[int] = field(default_factory=list)
    ref_logps: Optional[List[float]] = None  # dpo: reference log-probs per sequence (precomputed)

    def __len__(self) -> int:
        return sum(len(s) for s in self.seqs)


@dataclass
class LoadStats:
    records: int = 0
    skipped: int = 0
    truncated: int = 0
    soft: int = 0  # pairs trained on a soft label


class Encoder:
    """Renders (prompt, answer) to token ids the same way for training and for scoring."""

    def __init__(self, tokenizer, template: str, max_length: int):
        self.tok, self.template, self.max_length = tokenizer, template, max_length

    def _ids(self, text: str) -> List[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def as_messages(self, prompt) -> Optional[list]:
        """The prompt as chat messages, or None when it is rendered as plain text."""
        if isinstance(prompt, list):
            why = validate_messages(prompt)
            if why:
                raise ValueError(f"prompt: {why}")
            return prompt
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a string or a list of chat messages")
        return [{"role": "user", "content": prompt}] if self.template == "chat" else None

    def prompt_ids(self, prompt) -> List[int]:
        msgs = self.as_messages(prompt)
        return self._ids(prompt) if msgs is None else render_prompt(self.tok, msgs)

    def answer_ids(self, prompt, prompt_ids: List[int], answer: str) -> List[int]:
        msgs = self.as_messages(prompt)
        if msgs is None:
            return self._ids(answer) + [self.tok.eos_token_id]
        full = render_messages(self.tok, list(msgs) + [{"role": "assistant", "content": answer}],
                               add_generation_prompt=False)
        if full[: len(prompt_ids)] != prompt_ids:
            raise ValueError("the chat template does not render the prompt as a token prefix of prompt + answer")
        return full[len(prompt_ids):]

    def fit(self, p: List[int], answers: Sequence[List[int]]) -> Tuple[List[int], List[List[int]], bool]:
        """Cut prompt (left) and answers (right) to max_length; returns (prompt, answers, truncated)."""
        L = self.max_length
        longest = max(len(a) for a in answers)
        if len(p) + longest <= L:
            return p, list(answers), False
        keep = max(L - longest, min(len(p), L // 2))
        p = p[len(p) - keep:] if keep > 0 else []
        return p, [a[: L - len(p)] for a in answers], True

    def encode(self, prompt, answers: Sequence[str]) -> Tuple[List[int], List[List[int]], bool]:
        p = self.prompt_ids(prompt)
        return self.fit(p, [self.answer_ids(prompt, p, a) for a in answers])

    def encode_steps(self, prompt, steps: Sequence[str], step_delimiter: str) -> Tuple[List[int], List[int]]:
        """Process supervision: prompt ids + each step's ids + delimiter ids; returns (ids, step end index)."""
        ids = self.prompt_ids(prompt)
        p_len, ends = len(ids), []
        room = self.max_length - min(p_len, self.max_length // 2)
        body: List[int] = []
        for s in steps:
            piece = self._ids(s) + self._ids(step_delimiter)
            if len(body) + len(piece) > room:
                break
            body += piece
            ends.append(len(body) - 1)
        ids = ids[max(0, p_len + len(body) - self.max_length):]
        return ids + body, [len(ids) + e for e in ends]


# ---- record parsing ---------------------------------------------------------------------------------

def detect_format(rec: dict, d) -> Optional[str]:
    if d.format != "auto":
        return d.format
    if d.steps_field in rec:
        return "process"
    if d.responses_field in rec:
        return "ranking"
    if d.completion_field in rec and d.label_field in rec:
        return "kto"
    if d.chosen_field in rec or d.rejected_field in rec:
        return "pairwise" if d.prompt_field in rec else "hh"
    return None


def _answer_text(value, name: str) -> str:
    if isinstance(value, list):  # a conversation or [assistant message]: the answer is its last message
        why = validate_messages(value)
        if why or value[-1]["role"] != "assistant":
            raise ValueError(f"'{name}' must be a string or messages ending with an assistant message")
        return value[-1]["content"]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{name}' must be a non-empty string")
    return value


def hh_messages(prompt_text: str) -> list:
    """'\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant:' -> user/assistant messages."""
    parts = re.split(r"\n\n(Human|Assistant):", prompt_text)
    msgs = [{"role": "user" if role == "Human" else "assistant", "content": text.strip()}
            for role, text in zip(parts[1::2], parts[2::2])]
    if msgs and msgs[-1]["role"] == "assistant" and not msgs[-1]["content"]:
        msgs.pop()
    if not msgs or msgs[0]["role"] != "user":
        raise ValueError("not an HH transcript (expected it to start with '\\n\\nHuman:')")
    return msgs


def split_hh(chosen: str, rejected: str, template: str):
    """Shared prompt (up to the last "\\n\\nAssistant:" both transcripts share) and the two final answers."""
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(HH_ASSISTANT)
    if cut < 0:
        raise ValueError("not an HH transcript pair: no shared '\\n\\nAssistant:' turn "
                         "(give a 'prompt' field for plain pairs)")
    prompt = chosen[: cut + len(HH_ASSISTANT)]
    a, b = chosen[len(prompt):], rejected[len(prompt):]
    if template == "chat":
        return hh_messages(prompt), a.strip(), b.strip()
    return prompt, a, b


def parse_pair(rec: dict, d, fmt: str):
    """-> (prompt, chosen text, rejected text, margin or None)."""
    for key in (d.chosen_field, d.rejected_field):
        if key not in rec:
            raise ValueError(f"missing '{key}'")
    chosen, rejected = rec[d.chosen_field], rec[d.rejected_field]
    if fmt == "hh":
        if isinstance(chosen, list) and isinstance(rejected, list):  # conversations with an implicit prompt
            if chosen[:-1] != rejected[:-1]:
                raise ValueError("chosen and rejected conversations differ before the final answer")
            prompt = chosen[:-1]
            c, r = _answer_text(chosen, d.chosen_field), _answer_text(rejected, d.rejected_field)
        elif isinstance(chosen, str) and isinstance(rejected, str):
            prompt, c, r = split_hh(chosen, rejected, d.template)
        else:
            raise ValueError(f"'{d.chosen_field}' and '{d.rejected_field}' must both be transcripts or both messages")
    else:
        if d.prompt_field not in rec:
            raise ValueError(f"missing '{d.prompt_field}'")
        prompt = rec[d.prompt_field]
        c, r = _answer_text(chosen, d.chosen_field), _answer_text(rejected, d.rejected_field)
    if not c.strip() or not r.strip():
        raise ValueError("chosen and rejected answers must be non-empty")
    if c == r:
        raise ValueError("chosen and rejected are identical")
    margin = rec.get(d.margin_field)
    if margin is not None and not isinstance(margin, (int, float)):
        raise ValueError(f"'{d.margin_field}' must be a number")
    return prompt, c, r, margin


def soft_label(rec: dict, d) -> Optional[float]:
    """The pair's P(chosen is better) from ``data.prob_field`` (None: absent, or data.soft_labels=false)."""
    if not d.soft_labels or rec.get(d.prob_field) is None:
        return None
    p = rec[d.prob_field]
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"'{d.prob_field}' must be a probability in [0, 1] (data.soft_labels=false ignores it)")
    return float(p)


def parse_ranking(rec: dict, d):
    responses = rec.get(d.responses_field)
    if not isinstance(responses, list) or not responses:
        raise ValueError(f"'{d.responses_field}' must be a non-empty list (an empty ranking has nothing to learn)")
    if len(responses) < 2:
        raise ValueError(f"'{d.responses_field}' has 1 response; a ranking needs at least 2")
    if d.prompt_field not in rec:
        raise ValueError(f"missing '{d.prompt_field}'")
    texts = [_answer_text(x, f"{d.responses_field}[{i}]") for i, x in enumerate(responses)]
    ranks = rec.get(d.ranks_field, list(range(len(texts))))
    if (not isinstance(ranks, list) or len(ranks) != len(texts)
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in ranks)):
        raise ValueError(f"'{d.ranks_field}' must be a list of {len(texts)} integers (0 = best)")
    if len(set(ranks)) < 2:
        raise ValueError("all responses are tied: the ranking has nothing to learn")
    return rec[d.prompt_field], texts, ranks


def _kto_label(value, d) -> bool:
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise ValueError(f"'{d.label_field}' must be true/false (desirable or not)")


def parse_record(rec: dict, d, enc: Encoder, kind: str, step_delimiter: str = "\n") -> Tuple[List[PrefItem], bool]:
    """One record -> items (a pair gives 2 KTO items); raise ValueError saying what is wrong with it.

    kind: 'outcome' (rm: pairs + rankings) | 'pairs' (dpo) | 'kto' | 'process'.
    """
    fmt = detect_format(rec, d)
    allowed = {"outcome": ("pairwise", "hh", "ranking"), "pairs": ("pairwise", "hh"),
               "kto": ("kto", "pairwise", "hh"), "process": ("process",)}[kind]
    if fmt is None:
        raise ValueError(f"unrecognised record (fields: {', '.join(sorted(rec)) or 'none'}); expected "
                         f"{' or '.join(allowed)} data")
    if fmt not in allowed:
        raise ValueError(f"a {fmt} record, but this run takes {' or '.join(allowed)} data")
    if fmt == "process":
        steps, labels = rec.get(d.steps_field), rec.get(d.labels_field)
        if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s for s in steps):
            raise ValueError(f"'{d.steps_field}' must be a non-empty list of non-empty strings")
        if not isinstance(labels, list) or len(labels) != len(steps) or not all(x in (0, 1) for x in labels):
            raise ValueError(f"'{d.labels_field}' must be a list of {len(steps)} labels, 0/1 or true/false")
        ids, ends = enc.encode_steps(rec.get(d.prompt_field, ""), steps, step_delimiter)
        if not ends:
            raise ValueError("no step fits in data.max_length")
        return [PrefItem([ids], [0], [0], step_ends=ends, step_labels=[int(x) for x in labels[:len(ends)]])], \
            len(ends) < len(steps)
    if fmt == "ranking":
        prompt, texts, ranks = parse_ranking(rec, d)
        p, answers, cut = enc.encode(prompt, texts)
        return [PrefItem([p + a for a in answers], [len(p)] * len(answers), list(ranks))], cut
    if fmt == "kto":
        if d.prompt_field not in rec:
            raise ValueError(f"missing '{d.prompt_field}'")
        text = _answer_text(rec[d.completion_field], d.completion_field)
        p, (a,), cut = enc.encode(rec[d.prompt_field], [text])
        return [PrefItem([p + a], [len(p)], [0], label=_kto_label(rec[d.label_field], d))], cut
    prompt, c, r, margin = parse_pair(rec, d, fmt)
    p, (ca, ra), cut = enc.encode(prompt, [c, r])
    if ca == ra:
        raise ValueError("chosen and rejected are identical after tokenisation/truncation")
    if kind == "kto":
        return [PrefItem([p + ca], [len(p)], [0], label=True),
                PrefItem([p + ra], [len(p)], [0], label=False)], cut
    return [PrefItem([p + ca, p + ra], [len(p)] * 2, [0, 1], margin=margin, prob=soft_label(rec, d))], cut


def add_kto_mismatched(items: List[PrefItem], seed: int, max_length: int) -> None:
    """KTO's KL term uses mismatched (prompt i, completion j) pairs; fix them once, at load time, so the
    reference log-probs can be precomputed: each item gets a second sequence with another item's answer."""
    if len(items) < 2:
        raise DataError("kto needs at least 2 examples (the KL reference point pairs prompts with other answers)")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    for a, b in zip(order, order[1:] + order[:1]):
        it, other = items[a], items[b]
        p = it.seqs[0][: it.prompt_lens[0]]
        ans = other.seqs[0][other.prompt_lens[0]:]
        it.seqs.append((p + ans)[:max_length])
        it.prompt_lens.append(len(p))
        it.ranks.append(0)


def load_preferences(path, d, tokenizer, kind: str, limit: int = 0, seed: int = 0,
                     step_delimiter: str = "\n") -> Tuple[List[PrefItem], LoadStats]:
    """Read + tokenise ``path``; bad records raise DataError(file:line) or are skipped+counted (skip_bad)."""
    enc = Encoder(tokenizer, d.template, d.max_length)
    stats, out = LoadStats(), []
    for _, _, (items, cut) in parsed_records(source_for(path, d),
                                             lambda rec: parse_record(rec, d, enc, kind, step_delimiter),
                                             stats, d.skip_bad, limit):
        stats.truncated += int(cut)
        stats.soft += sum(it.prob is not None for it in items)
        out.extend(items)
    if not out:
        raise DataError(f"{path}: no usable records ({stats.records} read, {stats.skipped} skipped)")
    if kind == "kto":
        add_kto_mismatched(out, seed, d.max_length)
    return out, stats
