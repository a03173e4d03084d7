"""Reward-model losses: pairwise (Bradley-Terry), listwise rankings, process RMs.

Every ``RM_LOSSES`` entry takes a grid of candidate scores::

    fn(scores[B,K], ranks[B,K], valid[B,K], **options) -> losses[B]

and is registered with ``options``: the extra keyword arguments it accepts, from ``margin`` (the
batch's per-pair margins), ``prob`` (its soft labels) and ``centering_coef`` (config).
``bradley_terry`` (pairs) is the two-score form used by the grid entry of the same name.

Rankings: ``ranks`` are ints, 0 = best, equal values = tie; ``valid`` masks
padding candidates (rows may have different numbers of candidates).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

from rlhf_cli.registry import Registry

RM_LOSSES = Registry("reward model loss")
# Entries that need K-wise rankings (not only pairs) to be meaningful.
RANKING_LOSSES = frozenset({"plackett_luce", "pairwise_from_ranking"})


def bradley_terry(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    margin: Optional[Union[torch.Tensor, float]] = None,
    centering_coef: float = 0.0,
    prob: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Bradley-Terry pairwise loss, Touvron et al. 2023 (Llama 2), eq. 2:
    ``L = -log sigma(r_c - r_r - m)`` with optional per-pair margin ``m``
    (``[B]`` tensor or float; 0 when ``None``), plus the reward-centering
    auxiliary term of Eisenstein et al. 2023 ("Helping or Herding?", §3):
    ``centering_coef * (r_c + r_r)^2``.  Returns ``[B]`` (caller averages).

    Soft labels ``prob`` = P(chosen is better) per pair (Lee et al. 2023, "RLAIF", §2.2: the RM is
    trained on the AI labeller's soft preferences with cross-entropy): the expected loss over the label,
    ``L = -p log sigma(r_c - r_r - m) - (1 - p) log sigma(r_r - r_c - m)``; minimised where
    ``sigma(r_c - r_r) = p`` (``p = 0.5``: equal scores), and equal to the hard loss at ``p = 1``.
    """
    diff = r_chosen - r_rejected
    m = 0.0 if margin is None else margin
    losses = -F.logsigmoid(diff - m)
    if prob is not None:
        p = prob.to(device=diff.device, dtype=diff.dtype)
        losses = p * losses - (1.0 - p) * F.logsigmoid(-diff - m)
    if centering_coef:
        losses = losses + centering_coef * (r_chosen + r_rejected) ** 2
    return losses


@RM_LOSSES.register("bradley_terry", options=("margin", "centering_coef", "prob"))
def bradley_terry_grid(scores: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor,
                       margin: Optional[Union[torch.Tensor, float]] = None,
                       centering_coef: float = 0.0, prob: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bradley-Terry on a grid: for a batch of strict pairs (K=2, candidate 0 preferred) ``bradley_terry``
    of the two scores with margin, centering and soft labels; a K-wise ranking uses all its strictly
    ordered pairs (``pairwise_from_ranking``, the InstructGPT loss), where those do not apply."""
    pairs = scores.shape[1] == 2 and bool(valid.all()) and bool((ranks[:, 0] < ranks[:, 1]).all())
    if pairs:
        return bradley_terry(scores[:, 0], scores[:, 1], margin, centering_coef, prob)
    return pairwise_from_ranking(scores, ranks, valid)


def _check_ranking(scores, ranks, valid):
    if scores.dim() != 2 or ranks.shape != scores.shape or valid.shape != scores.shape:
        raise ValueError(
            f"expected scores, ranks, valid all [B,K]; got {tuple(scores.shape)}, "
            f"{tuple(ranks.shape)}, {tuple(valid.shape)}")
    valid = valid.to(device=scores.device, dtype=torch.bool)
    # padding scores may be garbage (even NaN): neutralise before any arithmetic
    scores = scores.masked_fill(~valid, 0.0)
    return scores, ranks.to(scores.device), valid


@RM_LOSSES.register("plackett_luce")
def plackett_luce(scores: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Plackett-Luce negative log-likelihood of a (possibly tied) ranking.

    Plackett 1975 / Luce 1959; as a listwise RM loss e.g. Zhu et al. 2023
    ("Principled RLHF from pairwise or K-wise comparisons", eq. for K-wise MLE):
    ``L = -sum_i [ s_i - log sum_{j : rank_j >= rank_i} exp(s_j) ]``.

    Ties use Breslow's approximation: every member of a tie group contributes
    its own term, with the denominator over ALL valid items ranked at or below
    its rank (the tie group included).  Items in the worst rank group of a row
    contribute nothing: for a single last item the term is identically 0, and
    for a tied bottom group there is no ordering information left.  A row with
    all candidates tied (or <2 valid) has loss 0.

    Normalisation: SUM over positions (not divided by the number of terms);
    the caller averages over the batch.  Returns ``[B]``.
    """
    scores, ranks, valid = _check_ranking(scores, ranks, valid)
    K = scores.shape[1]
    eye = torch.eye(K, dtype=torch.bool, device=scores.device)
    # risk[b, i, j]: item j is in the denominator of item i's term
    risk = valid.unsqueeze(1) & (ranks.unsqueeze(1) >= ranks.unsqueeze(2))
    risk = risk | eye  # keep every row non-empty -> finite logsumexp and gradients
    expanded = scores.unsqueeze(1).expand(-1, K, -1).masked_fill(~risk, float("-inf"))
    log_denom = torch.logsumexp(expanded, dim=-1)  # [B, K]
    worst = ranks.masked_fill(~valid, torch.iinfo(ranks.dtype).min if not ranks.is_floating_point()
                              else float("-inf")).amax(dim=1, keepdim=True)
    contributes = valid & (ranks < worst)
    terms = torch.where(contributes, scores - log_denom, torch.zeros_like(scores))
    return -terms.sum(dim=1)


@RM_LOSSES.register("pairwise_from_ranking")
def pairwise_from_ranking(scores: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """InstructGPT RM loss, Ouyang et al. 2022, eq. 1:
    ``L = -1/#pairs * sum_{i,j: rank_i < rank_j} log sigma(s_i - s_j)``.

    Mean over all ordered pairs of valid items with a strict preference; tied
    pairs are skipped.  Rows without any strict pair give 0.  Returns ``[B]``.
    """
    scores, ranks, valid = _check_ranking(scores, ranks, valid)
    pair = valid.unsqueeze(2) & valid.unsqueeze(1) & (ranks.unsqueeze(2) < ranks.unsqueeze(1))
    diff = scores.unsqueeze(2) - scores.unsqueeze(1)  # [B, i, j] = s_i - s_j
    nll = torch.where(pair, -F.logsigmoid(diff), torch.zeros_like(diff))
    n_pairs = pair.sum(dim=(1, 2)).clamp(min=1).to(scores.dtype)
    return nll.sum(dim=(1, 2)) / n_pairs


def process_bce(step_logits: torch.Tensor, step_labels: torch.Tensor) -> torch.Tensor:
    """Process reward model loss, Lightman et al. 2023 ("Let's Verify Step by
    Step", §2.4/§3): per-step binary classification (step correct or not),
    ``mean_n BCEWithLogits(logit_n, label_n)`` over the ``N`` flattened
    (already mask-selected) steps.  Returns a scalar.
    """
    return F.binary_cross_entropy_with_logits(step_logits, step_labels.to(step_logits.dtype))


def aggregate_step_scores(step_probs: torch.Tensor, valid: torch.Tensor, how: str = "min") -> torch.Tensor:
    """Solution-level score from per-step correctness probabilities ``[B, S]``.

    ``how='prod'``: probability that every step is correct (Lightman et al.
    2023, §2.6); ``how='min'``: the weakest step (Wang et al. 2024,
    Math-Shepherd).  Rows without valid steps score 1.0 (the empty product /
    neutral element).  Returns ``[B]``.
    """
    valid = valid.to(device=step_probs.device, dtype=torch.bool)
    if how == "min":
        if step_probs.shape[1] == 0:
            return step_probs.new_ones(step_probs.shape[0])
        return step_probs.masked_fill(~valid, 1.0).amin(dim=1)
    if how == "prod":
        return step_probs.masked_fill(~valid, 1.0).prod(dim=1)
    raise ValueError(f"unknown step aggregation {how!r} (choices: min, prod)")
