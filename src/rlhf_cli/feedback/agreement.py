"""Inter-annotator agreement on pairwise preferences.

A *unit* is one unordered pair of candidates within one item (the prompt, plus the candidates' texts or,
without texts, their models); each annotator's label on it is ``first`` / ``second`` / ``tie`` (the pair's
members sorted, so the label does not depend on the order shown). A K-wise ranking gives K(K-1)/2 units.
Only judgements with an ``annotator`` and a ``prompt`` count; an annotator's last label on a unit wins.

- pairwise agreement: the fraction of (unit, annotator pair) with equal labels;
- Cohen's kappa (Cohen 1960) per annotator pair on the units both labelled:
  ``kappa = (p_o - p_e) / (1 - p_e)``, ``p_e = sum_k p1(k) p2(k)``;
- Fleiss' kappa (Fleiss 1971, eq. for P_i and P_e), in its form for a varying number of raters per unit:
  ``P_i = (sum_k n_ik^2 - n_i) / (n_i (n_i - 1))``, ``P_bar = mean_i P_i``,
  ``p_k = sum_i n_ik / sum_i n_i``, ``P_e = sum_k p_k^2``, ``kappa = (P_bar - P_e) / (1 - P_e)``.
A kappa is None where it is undefined (p_e = 1: everyone always gave the same label).
"""
from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Dict, Optional, Sequence

from rlhf_cli.feedback.judgements import Judgement

LABELS = ("first", "second", "tie")


def unit_labels(judgements: Sequence[Judgement]) -> Dict[tuple, Dict[str, str]]:
    """{unit: {annotator: label}}."""
    units: Dict[tuple, Dict[str, str]] = defaultdict(dict)
    for jd in judgements:
        if not jd.annotator or jd.item is None:
            continue
        ids = jd.candidates or jd.models
        for x, y in combinations(range(len(ids)), 2):
            if ids[x] == ids[y]:
                continue
            (first, rf), (second, rs) = sorted([(ids[x], jd.ranks[x]), (ids[y], jd.ranks[y])])
            label = "tie" if rf == rs else "first" if rf < rs else "second"
            units[(jd.item, first, second)][jd.annotator] = label
    return units


def _kappa(p_o: float, p_e: float) -> Optional[float]:
    return None if p_e >= 1.0 - 1e-12 else (p_o - p_e) / (1.0 - p_e)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> Optional[float]:
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b)) / n
    p_e = sum((a.count(k) / n) * (b.count(k) / n) for k in LABELS)
    return _kappa(p_o, p_e)


def fleiss_kappa(counts: Sequence[Dict[str, int]]) -> Optional[float]:
    """counts: per unit, how many raters gave each label (units with >= 2 raters)."""
    rows = [c for c in counts if sum(c.values()) >= 2]
    if not rows:
        return None
    p_bar = 0.0
    totals = defaultdict(int)
    n_all = 0
    for c in rows:
        n = sum(c.values())
        p_bar += (sum(v * v for v in c.values()) - n) / (n * (n - 1))
        for k, v in c.items():
            totals[k] += v
        n_all += n
    p_bar /= len(rows)
    p_e = sum((v / n_all) ** 2 for v in totals.values())
    return _kappa(p_bar, p_e)


def agreement(judgements: Sequence[Judgement]) -> Optional[dict]:
    """Agreement figures, or None when no unit was labelled by two annotators."""
    units = {u: labs for u, labs in unit_labels(judgements).items() if len(labs) >= 2}
    if not units:
        return None
    agree = pairs = 0
    per_pair: Dict[tuple, tuple] = defaultdict(lambda: ([], []))
    for labs in units.values():
        for x, y in combinations(sorted(labs), 2):
            pairs += 1
            agree += labs[x] == labs[y]
            per_pair[x, y][0].append(labs[x])
            per_pair[x, y][1].append(labs[y])
    cohen = {f"{x}|{y}": {"units": len(a), "agreement": sum(p == q for p, q in zip(a, b)) / len(a),
                          "kappa": cohen_kappa(a, b)} for (x, y), (a, b) in sorted(per_pair.items())}
    counts = []
    for labs in units.values():
        c: Dict[str, int] = defaultdict(int)
        for v in labs.values():
            c[v] += 1
        counts.append(c)
    kappas = [v["kappa"] for v in cohen.values() if v["kappa"] is not None]
    return {"annotators": sorted({a for labs in units.values() for a in labs}), "units": len(units),
            "pairwise_agreement": agree / pairs, "fleiss_kappa": fleiss_kappa(counts),
            "cohen_kappa_mean": sum(kappas) / len(kappas) if kappas else None, "cohen_kappa": cohen}
