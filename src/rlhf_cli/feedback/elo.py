"""Model ratings from judgements: online Elo, and the Bradley-Terry / Plackett-Luce maximum-likelihood fit
with bootstrap confidence intervals (the way Chatbot Arena reports them: Chiang et al. 2024, sec. 5).

Likelihood (one strength ``theta_m`` per model, natural-log odds scale). Every judgement contributes terms
``c * [theta_w - log sum_m R[m] exp(theta_m)]`` (a "winner" w against a multiset R of models):

- a two-way judgement is Bradley-Terry (Bradley & Terry 1952): ``P(a beats b) = sigma(theta_a - theta_b)``,
  i.e. the terms (w=a, R={a,b}, c=s) and (w=b, R={a,b}, c=1-s) with s = 1 for a win, 0.5 for a TIE (a
  half win each way), or the judge's probability for soft labels;
- a K-wise ranking (K >= 3) is Plackett-Luce (Plackett 1975, Luce 1959):
  ``P(ranking) = prod_i exp(theta_i) / sum_{j ranked at or below i} exp(theta_j)``, ties by Breslow's
  approximation exactly as the rm stage's PL loss (``algos.reward_model.plackett_luce``): each member of a tie
  group gets its own term with every item ranked at or below it in the denominator; the worst group adds
  nothing. For K = 2 this is Bradley-Terry again.

The negative log-likelihood plus ``reg/2 * ||theta||^2`` (a weak ridge, as Chatbot Arena's logistic
regression, that keeps an undefeated model finite) is minimised with scipy's L-BFGS on the analytic
gradient. Ratings are reported on the Elo scale ``scale * theta / ln(base)`` (400 * log10 odds), shifted
so the mean over models is ``init`` (1000). The bootstrap resamples judgements with replacement
(multinomial weights on each judgement's terms), refits and takes percentiles.

Online Elo (Elo 1978): for each battle in file order, ``E_a = 1 / (1 + base^((R_b - R_a) / scale))``,
``R_a += K (S_a - E_a)``, ``R_b -= K (S_a - E_a)``; order-dependent, reported next to the fit.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from rlhf_cli.feedback.judgements import Judgement, battles


@dataclass
class Terms:
    """The fit's design: term t says model winner[t] wins against counts[t] (a multiset), weight c[t]."""

    winner: np.ndarray  # [T] int
    counts: np.ndarray  # [T, M] float (how often each model is in the term's denominator)
    weight: np.ndarray  # [T] float
    judgement: np.ndarray  # [T] index of the judgement the term comes from


def build_terms(judgements: Sequence[Judgement], models: List[str]) -> Terms:
    idx = {m: i for i, m in enumerate(models)}
    M = len(models)
    win, rows, w, src = [], [], [], []

    def add(winner: int, members: List[int], c: float, j: int) -> None:
        if c <= 0:
            return
        row = np.zeros(M)
        for m in members:
            row[m] += 1
        win.append(winner)
        rows.append(row)
        w.append(c)
        src.append(j)

    for j, jd in enumerate(judgements):
        ms = [idx[m] for m in jd.models]
        if len(ms) == 2:
            if ms[0] == ms[1]:
                continue
            if jd.p_first is not None:
                s = jd.p_first
            else:
                s = 1.0 if jd.ranks[0] < jd.ranks[1] else 0.0 if jd.ranks[0] > jd.ranks[1] else 0.5
            add(ms[0], ms, s, j)
            add(ms[1], ms, 1.0 - s, j)
            continue
        worst = max(jd.ranks)
        for i, r in enumerate(jd.ranks):
            if r < worst:
                add(ms[i], [ms[k] for k, rk in enumerate(jd.ranks) if rk >= r], 1.0, j)
    if not win:
        return Terms(np.zeros(0, dtype=int), np.zeros((0, M)), np.zeros(0), np.zeros(0, dtype=int))
    return Terms(np.array(win), np.stack(rows), np.array(w), np.array(src))


def _nll_grad(theta: np.ndarray, terms: Terms, weight: np.ndarray, reg: float) -> Tuple[float, np.ndarray]:
    with np.errstate(divide="ignore"):
        logits = theta[None, :] + np.log(terms.counts)  # -inf where a model is absent from a term
    mx = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - mx)
    z = e.sum(axis=1, keepdims=True)
    lse = (np.log(z) + mx)[:, 0]
    nll = float(np.sum(weight * (lse - theta[terms.winner])))
    p = e / z  # [T, M] softmax over the term's denominator
    grad = (weight[:, None] * p).sum(axis=0)
    np.subtract.at(grad, terms.winner, weight)
    # reg: ridge; the (sum theta)^2 term only fixes the gauge (the likelihood is shift invariant)
    s = theta.sum()
    return nll + 0.5 * reg * float(theta @ theta) + 0.5 * s * s, grad + reg * theta + s


def fit_strengths(terms: Terms, n_models: int, reg: float = 1e-3, weight: Optional[np.ndarray] = None,
                  init: Optional[np.ndarray] = None) -> np.ndarray:
    """Maximum-likelihood log-strengths (mean 0) by L-BFGS."""
    from scipy.optimize import minimize

    wt = terms.weight if weight is None else weight
    x0 = np.zeros(n_models) if init is None else init.copy()
    if len(wt) == 0:
        return x0
    res = minimize(_nll_grad, x0, args=(terms, wt, reg), jac=True, method="L-BFGS-B",
                   options={"maxiter": 1000, "gtol": 1e-9, "ftol": 1e-13})
    return res.x - res.x.mean()


def to_elo_scale(theta: np.ndarray, scale: float, base: float, init: float) -> np.ndarray:
    return init + scale * (theta - theta.mean()) / math.log(base)


def online_elo(judgements: Sequence[Judgement], models: List[str], k: float = 4.0, scale: float = 400.0,
               base: float = 10.0, init: float = 1000.0) -> Dict[str, float]:
    r = {m: init for m in models}
    for jd in judgements:
        for a, b, s in battles(jd):
            e = 1.0 / (1.0 + base ** ((r[b] - r[a]) / scale))
            r[a] += k * (s - e)
            r[b] -= k * (s - e)
    return r


def win_rates(judgements: Sequence[Judgement], models: List[str]):
    """(win-rate matrix {a: {b: P(a beats b), ties half}}, battles per model, wins, ties, losses per model)."""
    score = defaultdict(float)
    games = defaultdict(int)
    per = {m: {"battles": 0, "wins": 0.0, "ties": 0.0, "losses": 0.0} for m in models}
    for jd in judgements:
        for a, b, s in battles(jd):
            score[a, b] += s
            score[b, a] += 1.0 - s
            games[a, b] += 1
            games[b, a] += 1
            for m, sm in ((a, s), (b, 1.0 - s)):
                per[m]["battles"] += 1
                if sm == 0.5:
                    per[m]["ties"] += 1
                else:
                    per[m]["wins"] += sm
                    per[m]["losses"] += 1.0 - sm
    matrix = {a: {b: (score[a, b] / games[a, b] if games[a, b] else None) for b in models if b != a} for a in models}
    return matrix, per


def bootstrap(terms: Terms, n_judgements: int, n_models: int, theta: np.ndarray, rounds: int, seed: int,
              reg: float) -> np.ndarray:
    """[rounds, M] refits on judgements resampled with replacement."""
    rng = np.random.default_rng(seed)
    out = np.empty((rounds, n_models))
    for b in range(rounds):
        counts = rng.multinomial(n_judgements, np.full(n_judgements, 1.0 / n_judgements))
        out[b] = fit_strengths(terms, n_models, reg, terms.weight * counts[terms.judgement], init=theta)
    return out


def rate(judgements: Sequence[Judgement], k: float = 4.0, scale: float = 400.0, base: float = 10.0,
         init: float = 1000.0, rounds: int = 1000, seed: int = 0, reg: float = 1e-3, ci: float = 0.95) -> dict:
    """Everything `rlhf elo` reports, as a JSON-ready dict (ratings sorted by the BT rating)."""
    from rlhf_cli.feedback.agreement import agreement

    models = sorted({m for jd in judgements for m in jd.models})
    terms = build_terms(judgements, models)
    theta = fit_strengths(terms, len(models), reg)
    bt = to_elo_scale(theta, scale, base, init)
    lo = hi = None
    if rounds > 0 and len(terms.weight):
        boot = np.array([to_elo_scale(t, scale, base, init) for t in
                         bootstrap(terms, len(judgements), len(models), theta, rounds, seed, reg)])
        q = (1.0 - ci) / 2
        lo, hi = np.quantile(boot, q, axis=0), np.quantile(boot, 1.0 - q, axis=0)
    elo = online_elo(judgements, models, k, scale, base, init)
    matrix, per = win_rates(judgements, models)
    ratings = []
    for i, m in enumerate(models):
        ratings.append({"model": m, "bt": round(float(bt[i]), 2),
                        "ci_low": None if lo is None else round(float(lo[i]), 2),
                        "ci_high": None if hi is None else round(float(hi[i]), 2),
                        "elo": round(elo[m], 2), **per[m],
                        "win_rate": (per[m]["wins"] + 0.5 * per[m]["ties"]) / per[m]["battles"]
                        if per[m]["battles"] else None})
    ratings.sort(key=lambda r: -r["bt"])
    order = [r["model"] for r in ratings]
    return {"ratings": ratings, "win_rate": {a: {b: matrix[a][b] for b in order if b != a} for a in order},
            "judgements": len(judgements), "battles": sum(len(battles(j)) for j in judgements),
            "agreement": agreement(judgements),
            "settings": {"k": k, "scale": scale, "base": base, "init": init, "bootstrap": rounds, "seed": seed,
                         "reg": reg, "ci": ci}}
