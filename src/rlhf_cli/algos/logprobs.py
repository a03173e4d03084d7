"""Memory-frugal per-token log-probabilities and masked reductions.

``token_logprobs`` never materialises a full fp32 ``B x T x V`` tensor that is
kept alive for backward: it walks the sequence in chunks of ``chunk_size``
positions, upcasts only the current chunk to fp32, and (when autograd is
recording) wraps each chunk in ``torch.utils.checkpoint`` so backward recomputes
the fp32 chunk instead of storing it.  Peak extra memory is therefore
``O(B * chunk_size * V)`` fp32 instead of ``O(B * T * V)``.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

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


def _chunk_entropy(logits: torch.Tensor) -> torch.Tensor:
    x = logits.float()
    return torch.logsumexp(x, dim=-1) - (torch.softmax(x, dim=-1) * x).sum(-1)


def token_entropy(logits: torch.Tensor, chunk_size: int = 1024, differentiable: bool = False) -> torch.Tensor:
    """Per-position entropy ``H = logsumexp(x) - sum softmax(x) * x`` in fp32, ``[B, T, V] -> [B, T]``.

    ``differentiable=False`` (default): computed under ``torch.no_grad()``, for logging or
    entropy-based token selection.  ``differentiable=True``: keeps the graph for an entropy
    bonus in the loss (PPO, Schulman et al. 2017 eq. 9, ``- c2 S[pi](s_t)``), with the same
    memory discipline as ``token_logprobs``: each chunk's fp32 upcast is recomputed in backward
    (``torch.utils.checkpoint``) instead of being stored, for non-fp32 logits.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    T = logits.shape[1]
    if T == 0:
        return logits.new_zeros(logits.shape[:2], dtype=torch.float32)
    grad = differentiable and torch.is_grad_enabled() and logits.requires_grad
    use_ckpt = grad and logits.dtype != torch.float32
    outs = []
    with torch.set_grad_enabled(grad):
        for start in range(0, T, chunk_size):
            lg = logits[:, start : start + chunk_size]
            outs.append(checkpoint(_chunk_entropy, lg, use_reentrant=False) if use_ckpt else _chunk_entropy(lg))
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


Moments = Tuple[float, float, float]


def masked_moments(x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> Moments:
    """LOCAL ``(sum, sum of squares, count)`` of ``x`` over ``mask != 0`` (all of ``x`` when
    ``mask`` is None), as Python floats accumulated in float64.

    They are sums, so the moments of a batch sharded over data-parallel ranks are the elementwise
    SUM of the per-rank triples (one ``all_reduce``); feed the result to ``moments_mean_var``,
    ``ppo.whiten`` or ``reward_shaping.RunningMoments.update``.  NaN at masked positions does
    not leak.  (One host sync per call: for per-step statistics, not inner loops.)
    """
    x = x.detach().double()
    if mask is None:
        sel = x.reshape(-1)
    else:
        sel = x[torch.broadcast_to(mask.to(x.device) != 0, x.shape)]
    stats = torch.stack([sel.sum(), (sel * sel).sum(), torch.tensor(float(sel.numel()), dtype=torch.float64,
                                                                     device=x.device)])
    s, ss, n = stats.tolist()
    return s, ss, n


def moments_mean_var(moments: Moments, unbiased: bool = True) -> Tuple[float, float]:
    """``(mean, var)`` from ``(sum, sum of squares, count)`` (see ``masked_moments``), in float64.

    ``var = (ss - s^2 / n) / (n - 1)`` with Bessel's correction when ``unbiased`` (else ``/ n``),
    clamped at 0 against rounding; ``(0, 0)`` for an empty set and var 0 for a single element.
    The one-pass formula's relative error is about ``1e-16 * (mean / std)^2`` in float64: 1e-4 at
    ``|mean| = 1e6 std``, far beyond advantages and rewards.
    """
    s, ss, n = (float(v) for v in moments)
    if n <= 0:
        return 0.0, 0.0
    mean = s / n
    m2 = max(ss - s * mean, 0.0)
    denom = n - 1.0 if unbiased else n
    return mean, (m2 / denom if denom > 0 else 0.0)
