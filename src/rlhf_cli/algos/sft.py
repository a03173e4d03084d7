"""Supervised fine-tuning (token-level negative log-likelihood)."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from .logprobs import masked_sum


def sft_loss(
    token_logps: torch.Tensor,
    mask: torch.Tensor,
    normalizer: Optional[Union[float, torch.Tensor]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Token-level NLL: ``loss = -sum(logp * mask) / normalizer``.

    Standard maximum-likelihood objective (e.g. Ouyang et al. 2022, SFT stage;
    Radford et al. 2018 eq. 1 restricted to response tokens).

    Args:
        token_logps: ``[B, T]`` per-token log-probs (see ``token_logprobs``).
        mask: ``[B, T]`` bool/float, 1 on tokens that are trained on.
        normalizer: denominator. Defaults to the LOCAL ``mask.sum()``.  Pass the
            GLOBAL number of trained tokens (summed over gradient-accumulation
            micro-batches and data-parallel ranks) to get an exact token mean
            (then the per-rank losses must be summed, not averaged; with DDP
            gradient averaging multiply by world size).

    Returns:
        ``(loss scalar, num_tokens)``, ``num_tokens`` being the local mask count
        (a detached float tensor) so callers can all-reduce it.
    """
    num_tokens = torch.broadcast_to(mask, token_logps.shape).float().sum().detach()
    if normalizer is None:
        normalizer = num_tokens.clamp(min=1.0)
    loss = -masked_sum(token_logps, mask) / normalizer
    return loss, num_tokens
