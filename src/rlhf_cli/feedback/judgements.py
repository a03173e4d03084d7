"""Read judgements between models from JSONL files, whatever produced them.

Accepted record shapes (detected per record; a file may mix them):

- ranking (``rlhf label``): ``responses`` (list), ``ranks`` (0 = best, equal = tie; default the list
  order) and ``models`` (the model that produced each response). Two or more responses. Lines of the
  label's skipped file are read too: ``verdict: all_bad`` is an all-way tie, ``verdict: skip`` is ignored.
- pairwise: ``winner`` and ``loser`` (model names), optional ``tie: true``.
- arena: ``model_a``, ``model_b``, ``winner`` in ``a | b | tie`` (also ``model_a | model_b | tie (bothbad)
  | both_bad``, as in Chatbot Arena's exports).
- rlaif preference: ``chosen``, ``rejected`` (the answers), with ``model_chosen`` and ``model_rejected``
  naming the models that wrote them; ``judge_prob`` (P(chosen is better) by the judge) is used as a soft
  label when ``soft=true``. A preference record without the model fields cannot be rated and is an error.

Optional on every record: ``annotator`` (a person or a judge; enables inter-annotator agreement) and
``prompt`` (identifies the item for agreement, with the responses' texts when present).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

from rlhf_cli.data.readers import read_records, resolve_data_path
from rlhf_cli.errors import DataError

ARENA_WINNER = {"a": "a", "model_a": "a", "b": "b", "model_b": "b", "tie": "tie", "tie (bothbad)": "tie",
                "both_bad": "tie", "bothbad": "tie"}


@dataclass
class Judgement:
    """One judged item: candidates (by model), their ranks (0 = best, ties equal) and who judged."""

    models: List[str]
    ranks: List[int]
    annotator: Optional[str] = None
    item: Optional[str] = None  # the judged item's identity (prompt), for agreement
    candidates: Optional[List[str]] = None  # each candidate's identity within the item (its text)
    p_first: Optional[float] = None  # pairs only: soft P(candidate 0 beats candidate 1)
    source: str = ""  # file:line


def _str(rec: dict, key: str) -> str:
    v = rec.get(key)
    if not isinstance(v, str) or not v:
        raise ValueError(f"'{key}' must be a non-empty string (a model name)")
    return v


def _item_key(rec: dict) -> Optional[str]:
    return json.dumps(rec["prompt"], sort_keys=True) if "prompt" in rec else None


def parse_judgement(rec: dict, soft: bool = False) -> Optional[Judgement]:
    """One record -> a Judgement (None for a skipped item); ValueError says what is wrong."""
    ann = rec.get("annotator")
    if ann is not None and not isinstance(ann, str):
        raise ValueError("'annotator' must be a string")
    item = _item_key(rec)
    if "responses" in rec:
        responses, models = rec["responses"], rec.get("models")
        if not isinstance(responses, list) or len(responses) < 2:
            raise ValueError("'responses' must be a list of at least 2 answers")
        if not isinstance(models, list) or len(models) != len(responses) or not all(
                isinstance(m, str) and m for m in models):
            raise ValueError(f"'models' must list the model of each of the {len(responses)} responses")
        verdict = rec.get("verdict")
        if verdict not in (None, "all_bad", "skip"):
            raise ValueError(f"'verdict' must be all_bad or skip (got {verdict!r})")
        if verdict == "skip":
            return None
        # all bad (rlhf label's skipped file): every response equally bad -> all tied
        ranks = [0] * len(responses) if verdict == "all_bad" else rec.get("ranks", list(range(len(responses))))
        if (not isinstance(ranks, list) or len(ranks) != len(responses)
                or not all(isinstance(r, int) and not isinstance(r, bool) for r in ranks)):
            raise ValueError(f"'ranks' must be a list of {len(responses)} integers (0 = best)")
        texts = [r if isinstance(r, str) else json.dumps(r, sort_keys=True) for r in responses]
        return Judgement(list(models), list(ranks), ann, item, texts)
    if "model_a" in rec or "model_b" in rec:
        a, b = _str(rec, "model_a"), _str(rec, "model_b")
        w = ARENA_WINNER.get(str(rec.get("winner", "")).lower())
        if w is None:
            raise ValueError(f"'winner' must be a, b or tie (got {rec.get('winner')!r})")
        ranks = {"a": [0, 1], "b": [1, 0], "tie": [0, 0]}[w]
        return Judgement([a, b], ranks, ann, item, [a, b])
    if "winner" in rec or "loser" in rec:
        w, loser = _str(rec, "winner"), _str(rec, "loser")
        tie = rec.get("tie", False)
        if not isinstance(tie, bool):
            raise ValueError("'tie' must be true or false")
        return Judgement([w, loser], [0, 0] if tie else [0, 1], ann, item, [w, loser])
    if "chosen" in rec and "rejected" in rec:
        if "model_chosen" not in rec or "model_rejected" not in rec:
            raise ValueError("a preference record needs 'model_chosen' and 'model_rejected' to rate models")
        mc, mr = _str(rec, "model_chosen"), _str(rec, "model_rejected")
        p = None
        if soft and "judge_prob" in rec:
            p = rec["judge_prob"]
            if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
                raise ValueError("'judge_prob' must be a number in [0, 1]")
            p = float(p)
        texts = [x if isinstance(x, str) else json.dumps(x, sort_keys=True) for x in (rec["chosen"], rec["rejected"])]
        return Judgement([mc, mr], [0, 1], ann or rec.get("judge"), item, texts, p_first=p)
    raise ValueError(f"unrecognised judgement (fields: {', '.join(sorted(rec)) or 'none'}); expected a ranking "
                     "(responses, ranks, models), {winner, loser}, {model_a, model_b, winner} or a preference "
                     "with model_chosen/model_rejected")


def read_judgements(paths: Iterable[str], soft: bool = False) -> List[Judgement]:
    out: List[Judgement] = []
    for path in paths:
        resolved = resolve_data_path(path, key="file")
        for line, rec in read_records(resolved):
            try:
                j = parse_judgement(rec, soft)
            except ValueError as e:
                raise DataError(f"{path}:{line}: {e}") from None
            if j is None:
                continue
            j.source = f"{path}:{line}"
            out.append(j)
    if not out:
        raise DataError(f"{', '.join(paths)}: no judgements")
    return out


def battles(j: Judgement) -> List[Tuple[str, str, float]]:
    """The pairwise battles in a judgement: (model_a, model_b, score of a: 1 win, 0.5 tie, 0 loss).
    Pairs of candidates from the same model are not battles."""
    out = []
    n = len(j.models)
    for x in range(n):
        for y in range(x + 1, n):
            a, b = j.models[x], j.models[y]
            if a == b:
                continue
            if j.p_first is not None and n == 2:
                s = j.p_first
            else:
                s = 1.0 if j.ranks[x] < j.ranks[y] else 0.0 if j.ranks[x] > j.ranks[y] else 0.5
            out.append((a, b, s))
    return out
