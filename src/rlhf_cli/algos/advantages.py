"""Advantage estimators for on-policy RL (GRPO, Dr. GRPO, RLOO, GAE).

Group-based estimators take ``rewards[N]`` with ``N = num_prompts * G`` laid
out GROUP-CONTIGUOUS (the G completions of prompt 0 first, then prompt 1, ...)
and return ``[N]``.  ``ADVANTAGES`` maps a name to ``fn(rewards, num_generations, **options)``; each entry is
registered with ``options={kwarg: config field}`` naming the config fields it reads, and ``batch_moments=True``
when it also takes ``batch_moments``: the ``(sum, sum of squares, count)`` of the rewards of the WHOLE batch,
summed over processes by the caller (``logprobs.masked_moments`` + one all-reduce), so a batch statistic
does not depend on how the batch is split over processes.
All outputs are detached (advantages are constants for the policy loss).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from rlhf_cli.registry import Registry

from .logprobs import Moments, moments_mean_var

ADVANTAGES = Registry("advantage estimator")


def _groups(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [num_prompts * num_generations], got {tuple(rewards.shape)}")
    if num_generations < 1 or rewards.numel() % num_generations:
        raise ValueError(f"{rewards.numel()} rewards cannot be split into groups of {num_generations}")
    return rewards.detach().float().view(-1, num_generations)


def _centered(g: torch.Tensor) -> torch.Tensor:
    """``g - mean_group(g)`` in float64, EXACTLY 0 in groups whose rewards are all equal.

    float32 rounding of the group mean gives e.g. ``0.7 - mean(0.7 x 12) = -6e-8`` which the
    std division (std ~ 0) turns into a spurious advantage of 1e-3 (0.13 for 123.456 x 12).  In
    float64 the mean of k copies of a float32 value is exact; the explicit ``max == min`` mask makes
    the zero independent of the summation order as well.
    """
    g = g.double()
    centered = g - g.mean(dim=1, keepdim=True)
    flat = g.amax(dim=1, keepdim=True) == g.amin(dim=1, keepdim=True)
    return centered.masked_fill(flat, 0.0)


@ADVANTAGES.register("grpo", options={"scale_rewards": "scale_rewards", "eps": "adv_eps"}, batch_moments=True)
def grpo(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group", eps: float = 1e-4,
         batch_moments: Optional[Moments] = None) -> torch.Tensor:
    """Group-relative advantage, Shao et al. 2024 (DeepSeekMath) §4.1.2:
    ``A_i = (r_i - mean_group(r)) / (std(r) + eps)``.

    ``scale_rewards``:
      * ``'group'`` - std over the prompt's group (original GRPO);
      * ``'batch'`` - std over the whole batch (more robust for low-variance groups): from
        ``batch_moments`` (every process's rewards) when given, else over ``rewards``;
      * ``'none'``  - no std division (Dr. GRPO, Liu et al. 2025, "Understanding
        R1-Zero-Like Training", §3.1).

    The std is the UNBIASED sample std (Bessel, ``torch.std`` default), as in
    TRL; hence ``num_generations >= 2`` is required.  Computed in float64; a group of
    all-equal rewards gets advantage EXACTLY 0 under every scaling (see
    ``_centered``).  Returns float32 ``[N]``.
    """
    if num_generations < 2:
        raise ValueError("GRPO needs num_generations >= 2")
    if scale_rewards not in ("group", "batch", "none"):
        raise ValueError(f"unknown scale_rewards {scale_rewards!r} (choices: group, batch, none)")
    g = _groups(rewards, num_generations).double()
    centered = _centered(g)
    if scale_rewards == "group":
        centered = centered / (g.std(dim=1, keepdim=True) + eps)
    elif scale_rewards == "batch":
        std = math.sqrt(moments_mean_var(batch_moments, unbiased=True)[1]) if batch_moments is not None else g.std()
        centered = centered / (std + eps)
    return centered.reshape(-1).float()


@ADVANTAGES.register("dr_grpo", options={"eps": "adv_eps"})
def dr_grpo(rewards: torch.Tensor, num_generations: int, **kw) -> torch.Tensor:
    """Dr. GRPO (Liu et al. 2025): ``A_i = r_i - mean_group(r)``, i.e. ``grpo(scale_rewards='none')``."""
    return grpo(rewards, num_generations, scale_rewards="none", **kw)


@ADVANTAGES.register("rloo")
def rloo(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """REINFORCE Leave-One-Out, Ahmadian et al. 2024 ("Back to Basics", §3.2;
    Kool et al. 2019): ``A_i = r_i - 1/(G-1) sum_{j != i} r_j
    = G/(G-1) * (r_i - mean_group(r))``.  Requires ``num_generations >= 2``.
    Computed in float64 from the second form; all-equal groups give exactly 0.
    """
    if num_generations < 2:
        raise ValueError("RLOO needs num_generations >= 2")
    g = _groups(rewards, num_generations)
    return (_centered(g) * (num_generations / (num_generations - 1))).reshape(-1).float()


def group_has_signal(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """``Bool[num_prompts]``: True where the group's rewards are not all equal.

    Dynamic sampling of DAPO (Yu et al. 2025, §3.2): groups whose
    completions all get the same reward have zero advantage and are dropped /
    re-sampled.
    """
    g = _groups(rewards, num_generations)
    return g.amax(dim=1) != g.amin(dim=1)


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation, Schulman et al. 2016, eq. 16:
    ``delta_t = r_t + gamma V_{t+1} - V_t``,
    ``A_t = sum_l (gamma lam)^l delta_{t+l}``, computed by the backward recursion
    ``A_t = delta_t + gamma lam A_{t+1}``; returns ``R_t = A_t + V_t`` (the critic's
    regression target, PPO2 / Huang et al. 2024 "N+ implementation details").

    Masking: a position with ``mask == 0`` is NOT a time step.  It gets advantage and
    return 0, its reward and value are ignored (NaN there does not leak), and the
    recursion passes through it unchanged: ``V_{t+1}`` and ``A_{t+1}`` of the valid
    token before it are those of the next VALID token (as verl's GAE skips
    observation tokens).  Hence:

    * right padding (``1 1 1 0 0``): after the last valid token the episode ends,
      ``V_{T} = 0`` (no bootstrap; a response cut at the length budget is treated as
      terminal, the N+ details convention, with its score possibly replaced by the
      missing-EOS penalty);
    * a hole inside a row (``1 1 0 0 1``, e.g. tokens excluded from training): the
      tokens on both sides are consecutive steps, nothing is discounted for the hole;
    * a whole row masked (an overlong response dropped from the loss): all zeros.

    Args:
        rewards, values: ``[B, T]`` per token (for PPO: ``shaped_rewards``, i.e. the
            per-token KL penalty plus the sequence score on the last valid token;
            values from the critic, detached here).
        mask: ``[B, T]`` bool or 0/1 float, 1 on response tokens that are steps.
        gamma: discount (1.0 for RLHF); lam: GAE lambda (0.95 in the N+ details).
    Returns:
        ``(advantages[B, T], returns[B, T])`` float32, detached, 0 where masked.
    """
    if rewards.shape != values.shape or rewards.shape != mask.shape or rewards.dim() != 2:
        raise ValueError(f"gae expects rewards, values, mask of one [B, T] shape, got "
                         f"{tuple(rewards.shape)}, {tuple(values.shape)}, {tuple(mask.shape)}")
    valid = mask.to(rewards.device) != 0
    zero = torch.zeros((), dtype=torch.float32, device=rewards.device)
    r = torch.where(valid, rewards.detach().float(), zero)
    v = torch.where(valid, values.detach().float().to(rewards.device), zero)
    B, T = r.shape
    adv = torch.zeros_like(r)
    last = torch.zeros(B, dtype=torch.float32, device=r.device)
    next_value = torch.zeros(B, dtype=torch.float32, device=r.device)
    for t in reversed(range(T)):
        m = valid[:, t]
        delta = r[:, t] + gamma * next_value - v[:, t]
        a = delta + gamma * lam * last
        adv[:, t] = torch.where(m, a, zero)
        # a masked position hands the next valid step's value and advantage through unchanged
        next_value = torch.where(m, v[:, t], next_value)
        last = torch.where(m, a, last)
    returns = torch.where(valid, adv + v, zero)
    return adv, returns
