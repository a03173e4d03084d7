"""AI-feedback label maths: soft labels from a judge's next-token distribution (pure tensor code).

RLAIF (Lee et al. 2023, "RLAIF vs. RLHF: Scaling Reinforcement Learning from Human Feedback with AI
Feedback", sec. 2.1.1): the judge reads the two candidates and the token that follows is a choice label
("A" or "B"); the soft preference is the label tokens' probabilities renormalised over the choices,

    p(A) = softmax(z)_A / (softmax(z)_A + softmax(z)_B) = exp(z_A) / (exp(z_A) + exp(z_B)),

computed for BOTH presentation orders and averaged, which removes the judge's position bias to first
order (their sec. 2.1.1 / 4.4: LLM labellers prefer the first or second slot). Constitutional AI (Bai et
al. 2022, sec. 4.1): with chain-of-thought the label probabilities are very confident (near 0 or 1), so
they are clamped to the 40-60 % band, which the paper found gave better-calibrated preference labels.

A choice may own several token ids (e.g. "A" and " A": the tokenizer may or may not merge the leading
space); their probabilities are summed (a logsumexp of their logits).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch


def choice_ids_tensor(choice_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """[[ids of choice 0], [ids of choice 1], ...] -> LongTensor [C, M] padded with -1."""
    width = max(len(c) for c in choice_ids)
    out = torch.full((len(choice_ids), width), -1, dtype=torch.long)
    for i, ids in enumerate(choice_ids):
        if not ids:
            raise ValueError(f"choice {i} has no token ids")
        out[i, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    return out


def choice_logprobs(logits: torch.Tensor, choice_ids: torch.Tensor) -> torch.Tensor:
    """log p(choice) under the FULL next-token distribution: [B, V] logits, [C, M] ids -> [B, C] (fp32).

    log p(c) = logsumexp_{t in ids(c)} z_t - logsumexp_v z_v. Only the label columns are gathered (no
    [B, V] probability copy beyond the one log-normaliser).
    """
    z = logits.float()
    norm = torch.logsumexp(z, dim=-1, keepdim=True)  # [B, 1]
    ids = choice_ids.to(z.device)
    valid = ids >= 0
    picked = z[:, ids.clamp(min=0)]  # [B, C, M]
    picked = picked.masked_fill(~valid.unsqueeze(0), float("-inf"))
    return torch.logsumexp(picked, dim=-1) - norm


def label_probs(logits: torch.Tensor, choice_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Soft label over the choices and the probability mass the judge put on them at all.

    Returns (probs [B, C] summing to 1 over the choices, mass [B] = sum_c p(c) under the full softmax).
    A low mass means the judge did not answer in the label format; the renormalised probs are still
    defined (Lee et al. renormalise the same way).
    """
    lp = choice_logprobs(logits, choice_ids)
    return torch.softmax(lp, dim=-1), lp.exp().sum(-1)


def order_averaged(p_first: torch.Tensor, p_second: torch.Tensor) -> torch.Tensor:
    """P(response 1 preferred), averaged over the two presentation orders (Lee et al. 2023, sec. 2.1.1).

    p_first: [N, 2] label probs with response 1 shown as "A" (slot 0), response 2 as "B".
    p_second: [N, 2] label probs with the order swapped (response 2 is "A", response 1 is "B").
    Returns [N]: (p_first[:, 0] + p_second[:, 1]) / 2.
    """
    return 0.5 * (p_first[:, 0] + p_second[:, 1])


def order_flips(p_first: torch.Tensor, p_second: torch.Tensor) -> torch.Tensor:
    """[N] bool: the hard label (which response wins) changes with the presentation order.

    Response 1 wins in order 1 iff p_first[:, 0] > 0.5, in order 2 iff p_second[:, 1] > 0.5. A flip
    means the judge picked the same SLOT both times, i.e. it followed the position, not the content.
    """
    return (p_first[:, 0] > 0.5) != (p_second[:, 1] > 0.5)


def position_bias_rate(p_first: torch.Tensor, p_second: torch.Tensor) -> float:
    """Fraction of pairs whose hard label flips with the order (0 for an order-consistent judge)."""
    if p_first.numel() == 0:
        return 0.0
    return float(order_flips(p_first, p_second).float().mean())


def clamp_band(p: torch.Tensor, low: float = 0.4, high: float = 0.6) -> torch.Tensor:
    """Clamp chain-of-thought preference probabilities to [low, high] (Bai et al. 2022, sec. 4.1: 40-60 %)."""
    if not 0.0 <= low <= 0.5 <= high <= 1.0:
        raise ValueError(f"clamp band [{low}, {high}] must satisfy 0 <= low <= 0.5 <= high <= 1")
    return p.clamp(min=low, max=high)


def confident(p: torch.Tensor, min_confidence: float) -> torch.Tensor:
    """[N] bool: keep a pair when the judge's preference max(p, 1 - p) >= min_confidence.

    min_confidence = 0.5 keeps every pair; 0.6 drops pairs the judge rates within 10 points of a coin flip.
    """
    return torch.maximum(p, 1.0 - p) >= min_confidence


def expected_score(logits: torch.Tensor, choice_ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Expected rating under the label distribution: sum_c p(c) * values[c] with p renormalised over the
    rating labels ([B, V] logits, [C, M] ids, [C] values -> [B]). A direct-RLAIF score (Lee et al. 2023,
    sec. 2.3: the LLM rates a response and the reward is the expectation over the rating tokens)."""
    probs, _ = label_probs(logits, choice_ids)
    return probs @ values.to(probs.device, torch.float32)
