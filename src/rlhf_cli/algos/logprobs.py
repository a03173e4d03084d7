"""Memory-frugal per-token log-probabilities and masked reductions.

``token_logprobs`` never materialises a full fp32 ``B x T x V`` tensor that is
kept alive for backward: it walks the sequence in chunks of ``chunk_size``
positions, upcasts only the current chunk to fp32, and (when autograd is
recording) wraps each chunk in ``torch.utils.checkpoint`` so backward recomputes
the fp32 chunk instead of storing it.  Peak extra memory is therefore
``O(B * chunk_size * V)`` fp32 instead of ``O(B * T * V)``.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch.utils.checkpoint import checkpoint

Dim = Optional[Union[int, tuple]]


def _chunk_logprobs(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """log p(label) = logit[label] - logsumexp(logits) for one chunk, in fp32."""
    x = logits.float()
    ignore = labels == ignore_index
    safe = labels.masked_fill(ignore, 0)
    picked = x.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    out = picked - torch.logsumexp(x, dim=-1)
    return out.masked_fill(ignore, 0.0)


def token_logprobs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = 1024,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Per-token log-likelihood of ``labels`` under ``logits``.

    Args:
        logits: ``[B, T, V]`` (any float dtype, e.g. bf16).
        labels: ``[B, T]`` int64, ALREADY aligned with the logits positions
            (the caller does the usual ``logits[:, :-1]`` / ``labels[:, 1:]`` shift).
        chunk_size: number of sequence positions processed at once.
        ignore_index: label value whose positions get log-prob ``0``.

    Returns:
        ``[B, T]`` float32 tensor of ``log softmax(logits)[label]``.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"expected logits [B,T,V] and labels [B,T], "
                         f"got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    # Checkpointing exists to avoid keeping each chunk's fp32 upcast for backward. fp32 logits need no
    # upcast (``.float()`` is a no-op, the logits are kept anyway), so there it would only add a recompute
    # of the whole log-softmax (~4% of a CPU training step).
    use_ckpt = torch.is_grad_enabled() and logits.requires_grad and logits.dtype != torch.float32
    T = logits.shape[1]
    if T == 0:
        return logits.new_zeros(labels.shape, dtype=torch.float32)
    outs = []
    for start in range(0, T, chunk_size):
        lg = logits[:, start : start + chunk_size]
        lb = labels[:, start : start + chunk_size]
        if use_ckpt:
            outs.append(checkpoint(_chunk_logprobs, lg, lb, ignore_index, use_reentrant=False))
        else:
            outs.append(_chunk_logprobs(lg, lb, ignore_index))
    return torch.cat(outs, dim=1)


@torch.no_grad()
def token_entropy(logits: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """Per-position entropy ``H = logsumexp(x) - sum softmax(x) * x`` in fp32.

    Computed under ``torch.no_grad()``: it is meant for logging / entropy-based
    token selection, not as a differentiable bonus.  ``[B, T, V] -> [B, T]``.
    """
    T = logits.shape[1]
    outs = []
    for start in range(0, T, chunk_size):
        x = logits[:, start : start + chunk_size].float()
        lse = torch.logsumexp(x, dim=-1)
        p = torch.softmax(x, dim=-1)
        outs.append(lse - (p * x).sum(-1))
    if not outs:
        return logits.new_zeros(logits.shape[:2], dtype=torch.float32)
    return torch.cat(outs, dim=1)


def _apply_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # torch.where keeps NaN/inf at masked-out positions from leaking (nan * 0 = nan).
    mask = mask.to(x.device)
    if mask.dtype == torch.bool:
        return torch.where(mask, x, torch.zeros_like(x))
    return torch.where(mask != 0, x * mask.to(x.dtype), torch.zeros_like(x))


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: Dim = None, keepdim: bool = False) -> torch.Tensor:
    """``sum(x * mask)`` over ``dim`` (all dims when ``None``). Mask may be bool or float weights."""
    y = _apply_mask(x, mask)
    return y.sum() if dim is None else y.sum(dim, keepdim=keepdim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: Dim = None, eps: float = 1e-8,
                keepdim: bool = False) -> torch.Tensor:
    """``sum(x * mask) / max(sum(mask), eps)``; an all-masked slice gives 0."""
    m = torch.broadcast_to(mask.to(device=x.device, dtype=torch.float32), x.shape)
    count = m.sum() if dim is None else m.sum(dim, keepdim=keepdim)
    return masked_sum(x, mask, dim, keepdim) / count.clamp(min=eps).to(
        x.dtype if x.is_floating_point() else torch.float32)


def masked_var(x: torch.Tensor, mask: torch.Tensor, dim: Dim = None, unbiased: bool = False,
               eps: float = 1e-8) -> torch.Tensor:
    """Masked variance ``mean_mask((x - mean_mask(x))^2)``.

    ``unbiased=True`` applies Bessel's correction ``n / (n - 1)`` (n = mask count).
    """
    mean = masked_mean(x, mask, dim, eps, keepdim=True)
    var = masked_mean((x - mean) ** 2, mask, dim, eps)
    if unbiased:
        m = torch.broadcast_to(mask.to(device=x.device, dtype=torch.float32), x.shape)
        n = (m.sum() if dim is None else m.sum(dim)).to(var.dtype)
        var = var * n / (n - 1).clamp(min=eps)
    return var
