"""PPO for RLHF (InstructGPT, Ouyang et al. 2022): the tensor maths around the clipped surrogate.

What lives elsewhere and is reused here: the clipped surrogate (``policy.clipped_surrogate``), KL
estimators (``policy.KL_ESTIMATORS``), loss aggregation (``policy.aggregate_loss``), GAE
(``advantages.gae``), masked reductions and batch moments (``logprobs``), the KL controllers
(``kl_control``) and score post-processing (``reward_shaping``).

One PPO step, as the stage composes it (``[B, T]`` tensors over response tokens, ``mask`` 1 on the
tokens of each response, right-padded; every name below is a function of ``algos``).  Alignment:
``logps[:, t]``, ``kl[:, t]`` and ``values[:, t]`` all come from the position whose output predicts
response token ``t`` (the state before token ``t``), so ``values[:, 0]`` is V(prompt)::

    kl = KL_ESTIMATORS.get(name)(old_logps, ref_logps)                 # per-token KL to the reference
    rewards, non_score = shaped_rewards(scores, kl, mask, kl_ctl.kl_coef)
    adv, returns = gae(rewards, old_values, mask, gamma, lam)
    adv = whiten(adv, mask, all_reduce(masked_moments(adv, mask)))   # over all ranks
    ... per mini-batch:
    pg, st = clipped_surrogate(logps, old_logps, adv, clip_low, clip_high); pg = aggregate_loss(pg, ...)
    vf, vst = value_loss(values, old_values, returns, mask, value_clip, max_len=max_new_tokens)
    loss = ppo_total_loss(pg, vf_loss=vf, vf_coef=..., ptx_loss=..., ptx_coef=..., entropy=..., ...)
    kl_ctl.update(mean per-sequence KL of the rollout, n_steps=global number of sequences)
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch

from .logprobs import Moments, masked_mean, moments_mean_var
from .policy import KL_ESTIMATORS, aggregate_loss

Number = Union[float, int, torch.Tensor]

# ------------------------------------------------------------------ rewards


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """``Long[B]``: index of the last position with ``mask != 0`` in each row, ``-1`` for an
    all-masked row.  Works for right padding and for holes inside a row."""
    valid = mask != 0
    T = valid.shape[-1]
    pos = torch.arange(T, device=valid.device).expand_as(valid)
    return torch.where(valid, pos, torch.full_like(pos, -1)).amax(dim=-1)


@torch.no_grad()
def shaped_rewards(
    scores: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: Number,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """KL-shaped per-token reward of RLHF-PPO (Ziegler et al. 2019, §2.2, eq. 2; Ouyang et al. 2022
    eq. 2; Huang et al. 2024 "The N+ implementation details of RLHF with PPO", reward at EOS):

    ``r_t = -kl_coef * KL_t``  at every response token, plus the sequence ``score`` added at the
    LAST real response token (the EOS token when the response ended; the last generated token of a
    truncated one, whose score the caller may first replace with ``apply_missing_eos_penalty``).

    Args:
        scores: ``[B]`` sequence scores (reward model / verifiers, after post-processing).
        kl: ``[B, T]`` per-token KL estimate to the frozen reference, e.g.
            ``KL_ESTIMATORS.get('k1')(logps, ref_logps)`` (k1 = log pi - log pi_ref, as InstructGPT).
        mask: ``[B, T]`` bool or 0/1, 1 on response tokens.  Positions with 0 (padding, holes) get
            reward 0 and NaN there does not leak; a row with no valid token gets no score at all.
        kl_coef: beta, a float or 0-d tensor (the KL controller's current value).
    Returns:
        ``(rewards[B, T], non_score_reward[B])`` float32, detached; ``non_score_reward`` is the
        per-sequence sum of the KL part ``-kl_coef * sum_t KL_t`` (for logging; the total shaped
        return of a sequence is ``score + non_score_reward``).
    """
    if kl.dim() != 2 or mask.shape != kl.shape or scores.shape != kl.shape[:1]:
        raise ValueError(f"shaped_rewards expects scores [B], kl [B, T], mask [B, T]; got "
                         f"{tuple(scores.shape)}, {tuple(kl.shape)}, {tuple(mask.shape)}")
    valid = mask.to(kl.device) != 0
    coef = torch.as_tensor(kl_coef, dtype=torch.float32, device=kl.device)
    non_score = torch.where(valid, -coef * kl.detach().float(), torch.zeros((), device=kl.device))
    rewards = non_score.clone()
    last = last_token_index(valid)
    rows = torch.nonzero(last >= 0).squeeze(-1)
    rewards[rows, last[rows]] += scores.detach().float().to(kl.device)[rows]
    return rewards, non_score.sum(-1)


# ---------------------------------------------------------------- whitening


def whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    moments: Moments,
    *,
    shift_mean: bool = True,
    unbiased: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Whiten ``x`` with GLOBAL batch statistics: ``(x - mean) / sqrt(var + eps)`` at ``mask != 0``,
    0 elsewhere (TRL's ``masked_whiten``; advantage normalisation, Huang et al. 2024 N+ details and
    the PPO baselines' ``norm_adv``).

    ``moments`` is ``(sum, sum of squares, count)`` over the WHOLE batch: ``masked_moments(x, mask)``
    summed over data-parallel ranks by the caller (one ``all_reduce``), so every rank whitens with
    the same mean and variance; a single process passes its own ``masked_moments``.

    ``shift_mean=False`` adds the mean back after scaling (``(x - mean) / std + mean``, TRL's
    convention, used to whiten rewards without moving their level).  ``unbiased=True`` uses Bessel's
    correction ``n / (n - 1)`` like TRL's ``masked_var`` (the N+ details' reference code); with the
    thousands of tokens of a PPO batch the difference from the biased estimate is < 0.1%.
    Computed in float64, returned in ``x``'s dtype; a batch of identical values whitens to exactly 0.
    """
    mean, var = moments_mean_var(moments, unbiased=unbiased)
    out = (x.double() - mean) * (var + eps) ** -0.5
    if not shift_mean:
        out = out + mean
    valid = torch.broadcast_to(mask.to(x.device) != 0, x.shape)
    return torch.where(valid, out, torch.zeros((), dtype=out.dtype, device=x.device)).to(x.dtype)


# --------------------------------------------------------------- value loss


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    value_clip: Optional[float],
    *,
    loss_agg: str = "token_mean",
    max_len: int,
    normalizer: Optional[Number] = None,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Clipped value loss of PPO2 (OpenAI baselines; Huang et al. 2024 N+ details, "value function
    loss clipping"):

    ``V_clip = old_V + clip(V - old_V, -value_clip, value_clip)``,
    ``L_t = 0.5 * max((V - R)^2, (V_clip - R)^2)``, aggregated over ``mask`` by
    ``policy.aggregate_loss(loss_agg, max_len=..., normalizer=...)`` (same modes and global
    normalizer as the policy loss).  ``value_clip=None`` or ``0`` gives the plain ``0.5 (V - R)^2``.
    ``vf_coef`` is NOT applied here (``ppo_total_loss`` does).

    Args:
        values: ``[B, T]`` critic values being trained (grad flows).
        old_values: ``[B, T]`` values of the rollout (constants), ``returns``: ``[B, T]`` GAE returns.
    Returns:
        ``(loss, stats)``; ``stats``: ``'value_clip'`` bool ``[B, T]`` (the clipped term is the larger
        one, so the gradient is cut: TRL's ``vf_clipfrac`` numerator; False where masked) and
        ``'value_clip_fraction'`` its masked mean over this batch (0-d); both detached.
    """
    old = old_values.detach().to(values.dtype)
    ret = returns.detach().to(values.dtype)
    unclipped = (values - ret) ** 2
    valid = torch.broadcast_to(mask.to(values.device) != 0, values.shape)
    if value_clip is not None and value_clip < 0:
        raise ValueError(f"value_clip must be >= 0 (0 or None: unclipped), got {value_clip}")
    if not value_clip:
        per_token = 0.5 * unclipped
        clipped = torch.zeros_like(valid)
    else:
        v_clip = old + torch.clamp(values - old, -value_clip, value_clip)
        clipped_sq = (v_clip - ret) ** 2
        per_token = 0.5 * torch.maximum(unclipped, clipped_sq)
        clipped = (clipped_sq > unclipped).detach() & valid
    loss = aggregate_loss(per_token, mask, loss_agg, max_len=max_len, normalizer=normalizer)
    return loss, {"value_clip": clipped, "value_clip_fraction": masked_mean(clipped.float(), valid)}


# -------------------------------------------------------------- diagnostics


@torch.no_grad()
def approx_kl(logps: torch.Tensor, old_logps: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi_old || pi_theta) on the rollout's tokens (sampled from pi_old),
    for logging and early stopping of the PPO epochs (Schulman 2020, "Approximating KL Divergence";
    the ``approxkl`` of PPO2, OpenAI baselines).

    With ``log ratio = logps - old_logps``: ``k3 = (ratio - 1) - log ratio`` (unbiased, >= 0;
    CleanRL / TRL), ``k2 = 0.5 (log ratio)^2`` (PPO2's ``approxkl``), ``k1 = -log ratio``.
    These are ``policy.KL_ESTIMATORS`` applied with the roles of sampler and target swapped.
    Returns ``[B, T]`` detached; average it with the token mask (``masked_mean`` or global sums).
    """
    return KL_ESTIMATORS.get(estimator)(old_logps.detach().float(), logps.detach().float())


def explained_variance_from_moments(returns_moments: Moments, residual_moments: Moments) -> float:
    """``1 - Var[R - V] / Var[R]`` from global moments (``masked_moments(returns, mask)`` and
    ``masked_moments(returns - values, mask)``, each summed over ranks).  1 = perfect critic,
    0 = no better than a constant, < 0 worse.  Biased variances (the correction cancels in the
    ratio).  Returns 0.0 when the returns have no variance (undefined; 0 keeps the metric finite).
    """
    _, var_r = moments_mean_var(returns_moments, unbiased=False)
    _, var_res = moments_mean_var(residual_moments, unbiased=False)
    if var_r <= 0.0:
        return 0.0
    return 1.0 - var_res / var_r


# ------------------------------------------------------------------ total loss


def ppo_total_loss(
    pg_loss: torch.Tensor,
    *,
    vf_loss: Optional[torch.Tensor] = None,
    vf_coef: float = 0.0,
    ptx_loss: Optional[torch.Tensor] = None,
    ptx_coef: float = 0.0,
    entropy: Optional[torch.Tensor] = None,
    entropy_coef: float = 0.0,
) -> torch.Tensor:
    """``total = pg_loss + vf_coef * vf_loss + ptx_coef * ptx_loss - entropy_coef * entropy``.

    PPO's combined objective (Schulman et al. 2017 eq. 9: ``L^CLIP - c1 L^VF + c2 S``, negated)
    with InstructGPT's PPO-ptx term (Ouyang et al. 2022 eq. 2:
    ``E[r_theta(x, y) - beta log(pi_RL / pi_SFT)] + gamma E_{x ~ D_pretrain}[log pi_RL(x)]``): the KL
    part is already in the shaped rewards, and ``ptx_loss`` is the token-mean NLL of a pretraining /
    SFT batch (``algos.sft.sft_loss``), so maximising ``gamma E[log pi]`` adds ``+ ptx_coef * NLL``.

    A term whose coefficient is 0 is NOT added (not even as ``0 * x``): ``ptx_coef=0`` gives exactly
    the loss and gradients of a call without ``ptx_loss`` (bitwise), and a NaN in an unused term
    cannot leak.  A nonzero coefficient without its term is an error.  With separate actor and
    critic engines, call it for the actor without ``vf_loss`` and back-propagate
    ``vf_coef * vf_loss`` through the critic.  ``entropy`` is the aggregated (scalar) entropy from
    ``logprobs.token_entropy(..., differentiable=True)``.
    """
    total = pg_loss
    for name, coef, term, sign in (("vf", vf_coef, vf_loss, 1.0), ("ptx", ptx_coef, ptx_loss, 1.0),
                                   ("entropy", entropy_coef, entropy, -1.0)):
        if coef == 0:
            continue
        if term is None:
            raise ValueError(f"{name}_coef={coef} but no {name} term was given")
        total = total + (sign * coef) * term
    return total
