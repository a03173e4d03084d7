"""Gradient-norm clipping folded into the fused AdamW step (ZeRO stage 0, fp32).

DeepSpeed's stage-0 fp32 path clips with ``deepspeed.runtime.utils.clip_grad_norm_``: a norm per parameter,
then every gradient multiplied by ``min(1, max_norm / (norm + 1e-6))`` — a read and a write of the whole
gradient at every optimizer step, clipped or not (~2% of a 135M-parameter CPU step) — and it discards the
norm, so ``get_global_grad_norm()`` stays None on that path. Here the norm is one multi-tensor reduction
and, only when it exceeds ``max_norm``, the factor reaches the fused AdamW kernel as its ``grad_scale``:
the kernel divides each gradient by it as it reads it (the mechanism ``torch.amp.GradScaler`` uses to
unscale). Same update as clip-then-step (up to rounding: ``g / s`` instead of ``g * (1 / s)``), and the norm
is reported.
"""
from __future__ import annotations

from typing import List

import torch


def total_norm(grads: List[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all ``grads`` as one vector (fp32)."""
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: grouped multi-tensor norms
        return torch.nn.utils.get_total_norm(grads, 2.0, foreach=True).float()
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


def can_fold(ds_engine) -> bool:
    """Where DeepSpeed itself calls ``clip_fp32_gradients`` (clipping on, no fp16/bf16, no ZeRO: its
    ``_take_model_step``) and the engine steps a fused torch AdamW."""
    optimizer = ds_engine.optimizer
    return (ds_engine.gradient_clipping() > 0
            and not (ds_engine.fp16_enabled() or ds_engine.bfloat16_enabled() or ds_engine.zero_optimization())
            and isinstance(optimizer, torch.optim.AdamW) and bool(optimizer.defaults.get("fused")))


def fold_clipping_into_adam(ds_engine) -> None:
    """Replace the engine's ``clip_fp32_gradients`` (called once per optimizer step, before
    ``optimizer.step()``) by: norm -> ``ds_engine._global_grad_norm``; clip factor -> the optimizer's
    ``grad_scale``. With several data-parallel processes the gradients are already averaged there, so every
    rank computes the same norm without a collective."""
    optimizer, max_norm = ds_engine.optimizer, float(ds_engine.gradient_clipping())

    def clip() -> None:
        grads = [p.grad for p in ds_engine.module.parameters() if p.grad is not None]
        norm = float(total_norm(grads)) if grads else 0.0
        ds_engine._global_grad_norm = norm
        scale = (norm + 1e-6) / max_norm  # DeepSpeed's clip factor is 1 / scale, capped at 1
        if scale > 1.0:
            optimizer.grad_scale = torch.tensor(scale, dtype=torch.float32, device=grads[0].device)
        elif hasattr(optimizer, "grad_scale"):
            del optimizer.grad_scale

    ds_engine.clip_fp32_gradients = clip
