"""Policy-gradient pieces: KL estimators, policy losses, loss aggregation.

``POLICY_LOSSES`` maps a name (config: ``grpo.policy_loss``, ``ppo.policy_loss``) to a per-token loss with ONE
signature, which the RL core's update (``rl/update.py``) calls for every stage::

    fn(logps, old_logps, advantages, mask, **options) -> (per_token_loss[B, T], stats)

``logps`` ``[B, T]`` carry the gradient; ``old_logps`` (the rollout policy's) and ``advantages`` (``[B, T]``,
or ``[B]`` broadcast over tokens) are constants; ``mask`` is 1 on the tokens that count (for losses that
pool over a sequence). ``stats`` holds bool ``[B, T]`` tensors ``clip_low`` / ``clip_high`` (where a bound
cut the gradient; all False for an unclipped loss) and ``ratio``. Each entry is registered with
``options={kwarg: config field}``. Adding a policy loss is one registered function and its test.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch

from rlhf_cli.registry import Registry

from .logprobs import masked_sum

KL_ESTIMATORS = Registry("kl estimator")
LOSS_AGGREGATIONS = Registry("loss aggregation")
POLICY_LOSSES = Registry("policy loss")

# --------------------------------------------------------------------------- KL
# Schulman 2020, "Approximating KL Divergence" (http://joschu.net/blog/kl-approx.html).
# With samples from the policy and log r = ref_logps - logps, the estimators of
# KL(pi || ref) are k1 = -log r, k2 = (log r)^2 / 2, k3 = (r - 1) - log r.


@KL_ESTIMATORS.register("k1")
def kl_k1(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k1 = logps - ref_logps (unbiased, high variance, can be negative)."""
    return logps - ref_logps


@KL_ESTIMATORS.register("k2")
def kl_k2(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * (logps - ref_logps)^2 (biased, low variance, >= 0)."""
    return 0.5 * (logps - ref_logps) ** 2


@KL_ESTIMATORS.register("k3")
def kl_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k3 = exp(ref - logps) - (ref - logps) - 1 (unbiased, >= 0; used by GRPO, Shao et al. 2024 eq. 4)."""
    d = ref_logps - logps
    return torch.exp(d) - d - 1.0


# ------------------------------------------------------------------ surrogate


def _ratio_and_advantages(logps, old_logps, advantages):
    if advantages.dim() == logps.dim() - 1:
        advantages = advantages.unsqueeze(-1)
    return torch.exp(logps - old_logps.detach()), advantages.detach().to(logps.dtype)


@POLICY_LOSSES.register("ppo_clip", options={"clip_low": "clip_low", "clip_high": "clip_high"})
def clipped_surrogate(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    *,
    clip_low: float,
    clip_high: float,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """PPO-clip, Schulman et al. 2017 eq. 7, with asymmetric bounds
    ("Clip-Higher" of DAPO, Yu et al. 2025, §3.1):

    ``ratio = exp(logps - old_logps)``,
    ``loss = -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)``.

    Args:
        logps, old_logps: ``[B, T]`` per-token log-probs (``old_logps`` is treated as
            a constant).
        advantages: ``[B]`` (broadcast over tokens) or ``[B, T]``.
        mask: unused (a per-token loss); part of the ``POLICY_LOSSES`` signature.
    Returns:
        ``(per_token_loss[B, T], stats)``; ``stats`` (all detached, ``[B, T]``):
        ``'ratio'``; ``'clip_low'`` (A < 0 and ratio < 1 - clip_low: lower
        bound active, zero gradient); ``'clip_high'`` (A > 0 and ratio >
        1 + clip_high).  Mask them with the token mask before averaging.
    """
    ratio, advantages = _ratio_and_advantages(logps, old_logps, advantages)
    lo, hi = 1.0 - clip_low, 1.0 + clip_high
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, lo, hi) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    r = ratio.detach()
    a = advantages.expand_as(r)
    stats = {
        "ratio": r,
        "clip_low": (a < 0) & (r < lo),
        "clip_high": (a > 0) & (r > hi),
    }
    return per_token, stats


@POLICY_LOSSES.register("reinforce")
def importance_weighted_pg(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """The unclipped policy gradient: REINFORCE (Williams 1992, eq. 11) with an importance ratio,
    ``loss = -ratio * A``, ``ratio = exp(logps - old_logps)``.

    On-policy (one update per rollout, ``ratio = 1``) its gradient is REINFORCE's ``-A grad log pi``
    exactly (``grad ratio = ratio grad log pi``); over several updates nothing bounds the ratio (what
    PPO's clip adds). ``stats`` as ``clipped_surrogate``'s, with no token ever clipped.
    """
    ratio, advantages = _ratio_and_advantages(logps, old_logps, advantages)
    per_token = -ratio * advantages
    never = torch.zeros_like(ratio, dtype=torch.bool)
    return per_token, {"ratio": ratio.detach(), "clip_low": never, "clip_high": never.clone()}


# ---------------------------------------------------------------- aggregation
# Each mode is registered with ``normalizer="tokens" | "sequences"``: what its outer mean counts.
# ``normalizer`` always replaces the denominator of the OUTER mean: the total
# token count for token_mean, the number of sequences for the seq_* modes.  Pass
# the global count (over grad-accumulation steps and ranks) for exact averaging.
# ``max_len`` (the generation budget, max_new_tokens) is a REQUIRED keyword of every
# mode: the caller picks the mode by name at run time, and Dr. GRPO's constant must
# never silently become the padded width of the micro-batch (issue 8).

Number = Union[float, int, torch.Tensor]


@LOSS_AGGREGATIONS.register("token_mean", normalizer="tokens")
def _token_mean(per_token, mask, *, max_len, normalizer=None):
    """DAPO token-level policy-gradient loss (Yu et al. 2025, §3.3): sum over all tokens / #tokens."""
    if normalizer is None:
        normalizer = torch.broadcast_to(mask, per_token.shape).float().sum().clamp(min=1.0)
    return masked_sum(per_token, mask) / normalizer


@LOSS_AGGREGATIONS.register("seq_mean_token_mean", normalizer="sequences")
def _seq_mean_token_mean(per_token, mask, *, max_len, normalizer=None):
    """Original GRPO (Shao et al. 2024, eq. 3): 1/G sum_i 1/|o_i| sum_t."""
    m = torch.broadcast_to(mask, per_token.shape)
    per_seq = masked_sum(per_token, m, dim=-1) / m.float().sum(-1).clamp(min=1.0)
    if normalizer is None:
        return per_seq.mean()
    return per_seq.sum() / normalizer


@LOSS_AGGREGATIONS.register("seq_mean_token_sum_norm", normalizer="sequences")
def _seq_mean_token_sum_norm(per_token, mask, *, max_len, normalizer=None):
    """Dr. GRPO (Liu et al. 2025, §3.1): sum over tokens / max_len, then mean over sequences.

    ``max_len`` is the generation budget (``max_new_tokens``), the SAME constant for every
    micro-batch whatever its padded width; a width-dependent denominator would re-weight
    sequences by the length of their batch-mates, the bias Dr. GRPO removes."""
    if max_len is None or int(max_len) != max_len or max_len < 1:
        raise ValueError(f"seq_mean_token_sum_norm needs max_len = the generation budget "
                         f"(max_new_tokens, an int >= 1), got {max_len!r}")
    per_seq = masked_sum(per_token, mask, dim=-1) / float(max_len)
    if normalizer is None:
        return per_seq.mean()
    return per_seq.sum() / normalizer


def aggregate_loss(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token_mean",
    *,
    max_len: int,
    normalizer: Optional[Number] = None,
) -> torch.Tensor:
    """Reduce a ``[B, T]`` per-token loss to a scalar.

    Modes: ``token_mean`` (DAPO), ``seq_mean_token_mean`` (GRPO),
    ``seq_mean_token_sum_norm`` (Dr. GRPO).  ``max_len`` (required keyword) is the
    generation budget ``max_new_tokens``: the constant denominator of
    ``seq_mean_token_sum_norm`` (ignored by the other modes, required anyway so that
    switching the mode by name can never drop it).  ``normalizer`` replaces the
    outer denominator (#tokens for token_mean, #sequences otherwise).
    """
    return LOSS_AGGREGATIONS.get(mode)(per_token, mask, max_len=max_len, normalizer=normalizer)
