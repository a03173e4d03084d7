"""Advantage estimators for on-policy RL (GRPO, Dr. GRPO, RLOO, GAE), one signature for all.

``ADVANTAGES`` maps a name (config: ``grpo.advantage``; PPO uses ``gae``) to::

    fn(inputs: AdvantageInputs, **options) -> (advantages[N, L], returns[N, L] or None)

registered with ``options={kwarg: config field}`` naming the config fields it reads, and ``needs`` naming
the ``AdvantageInputs`` fields it requires beyond ``scores`` and ``mask`` (``values``: a critic;
``token_rewards``: per-token rewards). The RL core (``rl/experience.py``) fills the inputs and calls the
entry by name; adding an estimator is one registered function and its test.

Sequence scores are laid out GROUP-CONTIGUOUS (the G responses of prompt 0 first, then prompt 1, ...).
Group estimators compute one advantage per response and spread it over its tokens (0 where ``mask`` is 0).
All outputs are detached float32 (advantages are constants for the policy loss).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from rlhf_cli.registry import Registry

from .logprobs import Moments, moments_mean_var

ADVANTAGES = Registry("advantage estimator")
Estimate = Tuple[torch.Tensor, Optional[torch.Tensor]]


@dataclass
class AdvantageInputs:
    """What an estimator may read about one process's rollout batch."""

    scores: torch.Tensor                          # [N] sequence scores, group-contiguous
    mask: torch.Tensor                            # [N, L] 1 on response tokens that are time steps
    num_generations: int = 1                      # G, responses per prompt
    token_rewards: Optional[torch.Tensor] = None  # [N, L] per-token rewards (PPO: KL-shaped, score at the end)
    values: Optional[torch.Tensor] = None         # [N, L] the critic's values (the state before each token)
    # (sum, sum of squares, count) of the scores over EVERY process (one all-reduce by the caller), so a
    # batch statistic does not depend on how the batch is split over processes
    batch_moments: Optional[Moments] = None


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


def _per_token(per_sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A response's advantage on each of its tokens, 0 where ``mask`` is 0: ``[N] -> [N, L]``."""
    m = mask.to(per_sequence.device).float()
    return per_sequence.float().reshape(-1, 1) * m


@ADVANTAGES.register("grpo", options={"scale_rewards": "scale_rewards", "eps": "adv_eps"})
def grpo(inputs: AdvantageInputs, scale_rewards: str = "group", eps: float = 1e-4) -> Estimate:
    """Group-relative advantage, Shao et al. 2024 (DeepSeekMath) §4.1.2:
    ``A_i = (r_i - mean_group(r)) / (std(r) + eps)``.

    ``scale_rewards``:
      * ``'group'`` - std over the prompt's group (original GRPO);
      * ``'batch'`` - std over the whole batch (more robust for low-variance groups): from
        ``inputs.batch_moments`` (every process's scores) when given, else over this batch's;
      * ``'none'``  - no std division (Dr. GRPO, Liu et al. 2025, "Understanding
        R1-Zero-Like Training", §3.1).

    The std is the UNBIASED sample std (Bessel, ``torch.std`` default), as in
    TRL; hence ``num_generations >= 2`` is required.  Computed in float64; a group of
    all-equal rewards gets advantage EXACTLY 0 under every scaling (see
    ``_centered``).  No returns (no critic).
    """
    G = inputs.num_generations
    if G < 2:
        raise ValueError("GRPO needs num_generations >= 2")
    if scale_rewards not in ("group", "batch", "none"):
        raise ValueError(f"unknown scale_rewards {scale_rewards!r} (choices: group, batch, none)")
    g = _groups(inputs.scores, G).double()
    centered = _centered(g)
    if scale_rewards == "group":
        centered = centered / (g.std(dim=1, keepdim=True) + eps)
    elif scale_rewards == "batch":
        if inputs.batch_moments is not None:
            std = math.sqrt(moments_mean_var(inputs.batch_moments, unbiased=True)[1])
        else:
            std = g.std()
        centered = centered / (std + eps)
    return _per_token(centered.reshape(-1).float(), inputs.mask), None


@ADVANTAGES.register("dr_grpo", options={"eps": "adv_eps"})
def dr_grpo(inputs: AdvantageInputs, eps: float = 1e-4) -> Estimate:
    """Dr. GRPO (Liu et al. 2025): ``A_i = r_i - mean_group(r)``, i.e. ``grpo(scale_rewards='none')``."""
    return grpo(inputs, scale_rewards="none", eps=eps)


@ADVANTAGES.register("rloo")
def rloo(inputs: AdvantageInputs) -> Estimate:
    """REINFORCE Leave-One-Out, Ahmadian et al. 2024 ("Back to Basics", §3.2;
    Kool et al. 2019): ``A_i = r_i - 1/(G-1) sum_{j != i} r_j
    = G/(G-1) * (r_i - mean_group(r))``.  Requires ``num_generations >= 2``.
    Computed in float64 from the second form; all-equal groups give exactly 0.
    """
    G = inputs.num_generations
    if G < 2:
        raise ValueError("RLOO needs num_generations >= 2")
    g = _groups(inputs.scores, G)
    return _per_token((_centered(g) * (G / (G - 1))).reshape(-1).float(), inputs.mask), None


def group_has_signal(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """``Bool[num_prompts]``: True where the group's rewards are not all equal.

    Dynamic sampling of DAPO (Yu et al. 2025, §3.2): groups whose
    completions all get the same reward have zero advantage and are dropped /
    re-sampled.
    """
    g = _groups(rewards, num_generations)
    return g.amax(dim=1) != g.amin(dim=1)


@ADVANTAGES.register("gae", options={"gamma": "gamma", "lam": "lam"}, needs=("token_rewards", "values"))
@torch.no_grad()
def gae(inputs: AdvantageInputs, gamma: float, lam: float) -> Estimate:
    """Generalised Advantage Estimation, Schulman et al. 2016, eq. 16:
    ``delta_t = r_t + gamma V_{t+1} - V_t``,
    ``A_t = sum_l (gamma lam)^l delta_{t+l}``, computed by the backward recursion
    ``A_t = delta_t + gamma lam A_{t+1}``; returns ``R_t = A_t + V_t`` (the critic's
    regression target, PPO2 / Huang et al. 2024 "N+ implementation details").

    Reads ``inputs.token_rewards`` (for PPO: ``ppo.shaped_rewards``, the per-token KL penalty plus the
    sequence score on the last valid token), ``inputs.values`` (the critic's, detached here) and
    ``inputs.mask`` (``[B, T]`` bool or 0/1, 1 on response tokens that are steps). Masking: a position
    with ``mask == 0`` is NOT a time step.  It gets advantage and return 0, its reward and value are
    ignored (NaN there does not leak), and the recursion passes through it unchanged: ``V_{t+1}`` and
    ``A_{t+1}`` of the valid token before it are those of the next VALID token (as verl's GAE skips
    observation tokens).  Hence:

    * right padding (``1 1 1 0 0``): after the last valid token the episode ends,
      ``V_{T} = 0`` (no bootstrap; a response cut at the length budget is treated as
      terminal, the N+ details convention, with its score possibly replaced by the
      missing-EOS penalty);
    * a hole inside a row (``1 1 0 0 1``, e.g. tokens excluded from training): the
      tokens on both sides are consecutive steps, nothing is discounted for the hole;
    * a whole row masked (an overlong response dropped from the loss): all zeros.

    ``gamma``: discount (1.0 for RLHF); ``lam``: GAE lambda (0.95 in the N+ details).
    Returns ``(advantages[B, T], returns[B, T])`` float32, detached, 0 where masked.
    """
    rewards, values, mask = inputs.token_rewards, inputs.values, inputs.mask
    if rewards is None or values is None:
        raise ValueError("gae needs token_rewards and values (a critic)")
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


def estimate(name: str, inputs: AdvantageInputs, **options) -> Estimate:
    """``ADVANTAGES.get(name)(inputs, **options)``, after checking the inputs its entry ``needs``."""
    missing = [f for f in ADVANTAGES.meta(name).get("needs", ()) if getattr(inputs, f) is None]
    if missing:
        raise ValueError(f"advantage estimator {name!r} needs {', '.join(missing)}")
    return ADVANTAGES.get(name)(inputs, **options)
