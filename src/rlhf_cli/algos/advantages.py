"""Advantage estimators for on-policy RL (GRPO, Dr. GRPO, RLOO, GAE).

Group-based estimators take ``rewards[N]`` with ``N = num_prompts * G`` laid
out GROUP-CONTIGUOUS (the G completions of prompt 0 first, then prompt 1, ...)
and return ``[N]``.  ``ADVANTAGES`` maps a name to ``fn(rewards, group_size, **options)``; each entry is
registered with ``options={kwarg: config field}`` naming the config fields it reads.
All outputs are detached (advantages are constants for the policy loss).
"""
from __future__ import annotations

from typing import Tuple

import torch

from .registry import Registry

ADVANTAGES = Registry("advantage estimator")


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [num_prompts * group_size], got {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards cannot be split into groups of {group_size}")
    return rewards.detach().float().view(-1, group_size)


@ADVANTAGES.register("grpo", options={"scale_rewards": "scale_rewards", "eps": "adv_eps"})
def grpo(rewards: torch.Tensor, group_size: int, scale_rewards: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantage, Shao et al. 2024 (DeepSeekMath) §4.1.2:
    ``A_i = (r_i - mean_group(r)) / (std(r) + eps)``.

    ``scale_rewards``:
      * ``'group'`` - std over the prompt's group (original GRPO);
      * ``'batch'`` - std over the whole batch (more robust for low-variance groups);
      * ``'none'``  - no std division (Dr. GRPO, Liu et al. 2025, "Understanding
        R1-Zero-Like Training", §3.1).

    The std is the UNBIASED sample std (Bessel, ``torch.std`` default), as in
    TRL; hence ``group_size >= 2`` is required.  A group of all-equal rewards
    gets advantage exactly 0.  Returns float32 ``[N]``.
    """
    if group_size < 2:
        raise ValueError("GRPO needs group_size >= 2")
    g = _groups(rewards, group_size)
    centered = g - g.mean(dim=1, keepdim=True)
    if scale_rewards == "group":
        centered = centered / (g.std(dim=1, keepdim=True) + eps)
    elif scale_rewards == "batch":
        centered = centered / (g.std() + eps)
    elif scale_rewards != "none":
        raise ValueError(f"unknown scale_rewards {scale_rewards!r} (choices: group, batch, none)")
    return centered.reshape(-1)


@ADVANTAGES.register("dr_grpo", options={"eps": "adv_eps"})
def dr_grpo(rewards: torch.Tensor, group_size: int, **kw) -> torch.Tensor:
    """Dr. GRPO (Liu et al. 2025): ``A_i = r_i - mean_group(r)``, i.e. ``grpo(scale_rewards='none')``."""
    return grpo(rewards, group_size, scale_rewards="none", **kw)


@ADVANTAGES.register("rloo")
def rloo(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE Leave-One-Out, Ahmadian et al. 2024 ("Back to Basics", §3.2;
    Kool et al. 2019): ``A_i = r_i - 1/(G-1) sum_{j != i} r_j
    = G/(G-1) * (r_i - mean_group(r))``.  Requires ``group_size >= 2``.
    """
    if group_size < 2:
        raise ValueError("RLOO needs group_size >= 2")
    g = _groups(rewards, group_size)
    loo_mean = (g.sum(dim=1, keepdim=True) - g) / (group_size - 1)
    return (g - loo_mean).reshape(-1)


def group_has_signal(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``Bool[num_prompts]``: True where the group's rewards are not all equal.

    Dynamic sampling of DAPO (Yu et al. 2025, §3.2): groups whose
    completions all get the same reward have zero advantage and are dropped /
    re-sampled.
    """
    g = _groups(rewards, group_size)
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
    ``A_t = delta_t + gamma lam A_{t+1}``; returns ``R_t = A_t + V_t``.

    Args:
        rewards, values: ``[B, T]`` per token (usually the sequence reward on the
            last token plus per-token KL penalties).
        mask: ``[B, T]`` RIGHT-padded (1...1 0...0).  The value after the last
            valid token is 0 (episode terminates); padded positions get 0.
    Returns:
        ``(advantages[B, T], returns[B, T])`` float32, detached.
    """
    m = mask.to(device=rewards.device, dtype=torch.float32)
    r = rewards.float() * m
    v = values.detach().float() * m
    B, T = r.shape
    adv = torch.zeros_like(r)
    last = torch.zeros(B, dtype=torch.float32, device=r.device)
    next_value = torch.zeros(B, dtype=torch.float32, device=r.device)
    for t in reversed(range(T)):
        # next_value / last are already 0 beyond the end of each sequence
        delta = r[:, t] + gamma * next_value - v[:, t]
        last = (delta + gamma * lam * last) * m[:, t]
        adv[:, t] = last
        next_value = v[:, t]
    returns = (adv + v) * m
    return adv, returns
