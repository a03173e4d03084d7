"""Offline preference-optimisation losses (DPO family, KTO).

Every loss of the family is a ``DPO_LOSSES`` entry, registered with metadata the dpo stage reads:
``options`` (the ``dpo.*`` config fields passed as keyword arguments), ``reference`` (needs reference
log-probs), ``length_averaged`` (takes per-token averages instead of sums) and ``data`` (``pairs`` or
``unpaired``). Paired losses share one signature::

    fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
       ref_rejected_logps, *, beta, **options) -> (losses[B], chosen_rewards[B], rejected_rewards[B])

Unpaired losses (KTO) take ``(policy_logps, ref_logps, desirable, kl_ref_point, *, beta, **options)``.

All log-prob arguments are ``[B]`` sequence log-probabilities (sum over the
response tokens unless the loss' docstring says otherwise).  The implicit
rewards ``beta * (policy - ref)`` are returned DETACHED, for logging.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from rlhf_cli.registry import Registry

DPO_LOSSES = Registry("dpo loss")

Triple = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _implicit_rewards(beta: float, pc, pr, rc, rr) -> Tuple[torch.Tensor, torch.Tensor]:
    return (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()


@DPO_LOSSES.register("dpo", options=("label_smoothing",))
def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> Triple:
    """DPO, Rafailov et al. 2023, "Direct Preference Optimization", eq. 7.

    ``h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))``
    ``L = -log sigma(beta * h)``.

    With ``label_smoothing = eps > 0`` this is conservative DPO (cDPO, Mitchell
    2023, "A note on DPO with noisy preferences"), which assumes labels are
    flipped with probability eps:
    ``L = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)``.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    logits = beta * h
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits)
    if label_smoothing > 0:
        losses = losses - label_smoothing * F.logsigmoid(-logits)
    cr, rr = _implicit_rewards(beta, policy_chosen_logps, policy_rejected_logps,
                               ref_chosen_logps, ref_rejected_logps)
    return losses, cr, rr


@DPO_LOSSES.register("cdpo", options=("label_smoothing",))
def cdpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.1,
) -> Triple:
    """Conservative DPO (Mitchell 2023): DPO eq. 7 with label smoothing eps > 0.

    ``L = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)``; see ``dpo_loss``.
    """
    if label_smoothing <= 0:
        raise ValueError("cdpo requires label_smoothing > 0 (use 'dpo' for eps = 0)")
    return dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                    ref_rejected_logps, beta=beta, label_smoothing=label_smoothing)


@DPO_LOSSES.register("ipo", options=("tau",), length_averaged=True)
def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    tau: float = 0.1,
) -> Triple:
    """IPO, Azar et al. 2023, "A General Theoretical Paradigm to Understand
    Learning from Human Preferences", eq. 17: ``L = (h - 1 / (2 tau))^2`` with
    ``h`` the log-ratio difference as in DPO.

    Callers should pass LENGTH-AVERAGED sequence log-probs (sum / number of
    response tokens), as done in practice and in TRL; with summed log-probs the
    fixed target ``1/(2 tau)`` is length dependent.  ``tau`` is the
    regulariser; ``beta`` is only used to scale the logged implicit rewards.
    """
    if tau <= 0:
        raise ValueError("tau must be > 0")
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    losses = (h - 1.0 / (2.0 * tau)) ** 2
    cr, rr = _implicit_rewards(beta, policy_chosen_logps, policy_rejected_logps,
                               ref_chosen_logps, ref_rejected_logps)
    return losses, cr, rr


@DPO_LOSSES.register("simpo", options=("gamma", "label_smoothing"), reference=False, length_averaged=True)
def simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: Optional[torch.Tensor] = None,
    ref_rejected_logps: Optional[torch.Tensor] = None,
    *,
    beta: float,
    gamma: float = 0.5,
    label_smoothing: float = 0.0,
) -> Triple:
    """SimPO, Meng et al. 2024, "Simple Preference Optimization with a
    Reference-Free Reward", eq. 6:
    ``L = -log sigma(beta * (avg_logp(y_w) - avg_logp(y_l)) - gamma)``.

    Reference-free: the ``ref_*`` arguments are ignored (may be ``None``).
    The policy log-probs MUST be length-averaged (sum / number of response
    tokens).  ``gamma`` is the target reward margin (absolute, not divided by
    beta).  Rewards are ``beta * avg_logp`` (detached).  Optional label
    smoothing as in cDPO.
    """
    logits = beta * (policy_chosen_logps - policy_rejected_logps) - gamma
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits)
    if label_smoothing > 0:
        losses = losses - label_smoothing * F.logsigmoid(-logits)
    return losses, (beta * policy_chosen_logps).detach(), (beta * policy_rejected_logps).detach()


def kto_kl_reference_point(
    policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor, clamp: bool = True
) -> torch.Tensor:
    """KTO reference point ``z0`` (Ethayarajh et al. 2024, "KTO: Model Alignment
    as Prospect Theoretic Optimization", eq. 8 / §4.1).

    Estimated from MISMATCHED pairs (x_i, y_j), i != j, in the micro-batch:
    ``z0 = max(0, mean(log pi(y_j|x_i) - log ref(y_j|x_i)))``, detached
    (no gradient flows through z0).

    Multi-rank: call with ``clamp=False``, all-reduce-mean the result across
    ranks, then ``.clamp(min=0)`` (clamping must come after averaging).
    Returns a 0-d float tensor.
    """
    z0 = (policy_kl_logps - ref_kl_logps).float().mean().detach()
    return z0.clamp(min=0) if clamp else z0


@DPO_LOSSES.register("kto", options=("desirable_weight", "undesirable_weight"), data="unpaired")
def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl_ref_point: Union[torch.Tensor, float],
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """KTO, Ethayarajh et al. 2024, eq. 8 (unpaired feedback).

    ``r = log pi(y|x) - log ref(y|x)``, ``z0 = kl_ref_point`` (detached),
    ``v = lambda_D * sigma(beta (r - z0))`` if y is desirable,
    ``v = lambda_U * sigma(beta (z0 - r))`` if undesirable,
    ``L = lambda_y - v``.

    Args:
        policy_logps, ref_logps: ``[B]`` sequence log-probs.
        desirable: ``[B]`` bool.
        kl_ref_point: scalar (see ``kto_kl_reference_point``).

    Returns:
        ``(losses[B], rewards[B])`` with ``rewards = beta * r`` detached.
    """
    desirable = desirable.to(device=policy_logps.device, dtype=torch.bool)
    z0 = torch.as_tensor(kl_ref_point, dtype=policy_logps.dtype, device=policy_logps.device).detach()
    r = policy_logps - ref_logps
    v_d = desirable_weight * torch.sigmoid(beta * (r - z0))
    v_u = undesirable_weight * torch.sigmoid(beta * (z0 - r))
    losses = torch.where(desirable, desirable_weight - v_d, undesirable_weight - v_u)
    return losses, (beta * r).detach()


def soft_label_losses(fn, prob: torch.Tensor, policy_chosen_logps: torch.Tensor,
                      policy_rejected_logps: torch.Tensor, ref_chosen_logps: Optional[torch.Tensor],
                      ref_rejected_logps: Optional[torch.Tensor], *, beta: float, **options) -> Triple:
    """A paired loss ``fn`` (a ``DPO_LOSSES`` entry) under soft labels ``prob[B]`` = P(chosen is better),
    e.g. an AI judge's order-averaged preference (Lee et al. 2023, "RLAIF", §2.2; Bai et al. 2022, §4.1):
    the expected loss over the label,

    ``L = p * fn(y_w, y_l) + (1 - p) * fn(y_l, y_w)``.

    For ``dpo`` this is label-smoothed DPO (cDPO, Mitchell 2023) with ``eps = 1 - p`` per pair,
    ``-p log sigma(beta h) - (1 - p) log sigma(-beta h)``, minimised at ``sigma(beta h) = p``: a pair
    with ``p = 0.5`` asks for ``h = 0`` and gives no gradient where the policy equals the reference.
    For ``ipo`` the target becomes ``h = (2p - 1) / (2 tau)``.  ``p = 1`` gives ``fn`` itself.  The
    returned implicit rewards are those of the pair as labelled (chosen first), for logging.
    """
    p = prob.to(device=policy_chosen_logps.device, dtype=policy_chosen_logps.dtype)
    forward, cr, rr = fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                         beta=beta, **options)
    swapped, _, _ = fn(policy_rejected_logps, policy_chosen_logps, ref_rejected_logps, ref_chosen_logps,
                       beta=beta, **options)
    return p * forward + (1.0 - p) * swapped, cr, rr


def loss_spec(name: str) -> dict:
    """A DPO-family entry's metadata with defaults filled in (see the module docstring)."""
    meta = {"options": (), "reference": True, "length_averaged": False, "data": "pairs"}
    meta.update(DPO_LOSSES.meta(name))
    return meta
