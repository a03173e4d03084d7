"""One trainable model: its DeepSpeed engine, optimizer, LR schedule, backward/step, save/load, export.

A run holds one ``TrainEngine`` per trainable model, by name ({"policy"} for SFT/RM/DPO/GRPO, {"actor",
"critic"} for PPO), each built from that model's own optimizer settings. Stages call the engine as the
model (``engine(input_ids=...)``), then ``backward`` and ``step``.

Gradient accumulation contract (the one place it is written down). An optimizer step is
``train.grad_accum`` micro-batches on every process; for each, a stage calls

    engine.backward(loss, weight)   # loss: summed over the micro-batch's units (tokens, pairs, sequences)
    engine.step()                   # weight: those units in the WHOLE optimizer step, over all processes

and after the last one ``engine.end_update()``. ``backward`` takes the gradient of ``loss / weight``, the
micro-batch's share of the step's global mean (``weight=1`` when ``loss`` is already divided by the global
count, as the RL losses are): DeepSpeed divides each micro-batch loss by ``grad_accum`` and averages
gradients over processes, and the engine undoes both, so the gradient is the same however a step is
split over micro-batches and processes. DeepSpeed applies the optimizer (clip, Adam, LR schedule,
zero_grad) at the boundary of ``grad_accum`` micro-batches; ``end_update`` asserts that the stage's step
was exactly that many, so an update can never straddle two optimizer steps. (The fp16 "loss scale" is
DeepSpeed's own dynamic scaling, a different thing.)
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch


def lr_lambda(total_steps: int, warmup_steps: int, scheduler: str, min_lr_ratio: float):
    """Multiplier of the peak LR after ``k`` optimizer steps: linear warmup, then cosine/linear/constant."""

    def f(k: int) -> float:
        if warmup_steps > 0 and k < warmup_steps:
            return (k + 1) / warmup_steps
        if scheduler == "constant":
            return 1.0
        progress = min(1.0, (k - warmup_steps) / max(1, total_steps - warmup_steps))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if scheduler == "cosine" else 1 - progress
        return min_lr_ratio + (1 - min_lr_ratio) * decay

    return f


def param_groups(model: torch.nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """No weight decay on biases and norm weights (1-D tensors), as is standard for transformers."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]  # LoRA has no 1-D params; DeepSpeed drops empty groups


class TrainEngine:
    """A trainable model wrapped by DeepSpeed with its own AdamW + LR schedule (built by ``Strategy.prepare``)."""

    def __init__(self, name: str, ds_engine, zero_stage: int, is_main: bool, world_size: int = 1,
                 grad_accum: int = 1):
        self.name = name
        self.ds = ds_engine
        self.zero_stage = zero_stage
        self.is_main = is_main
        self.grad_accum = grad_accum
        # What DeepSpeed divides a micro-batch's gradient by (accumulation, then the data-parallel average).
        self._deepspeed_divisor = float(world_size * grad_accum)
        self._micro_steps = 0  # since the last end_update()

    # ---- the model --------------------------------------------------------------------------------
    @property
    def module(self) -> torch.nn.Module:
        """The unwrapped model (for generation, export, value heads...)."""
        return self.ds.module

    def __call__(self, *args, **kwargs):
        return self.ds(*args, **kwargs)

    def train(self) -> "TrainEngine":
        self.ds.train()
        return self

    def eval(self) -> "TrainEngine":
        self.ds.eval()
        return self

    # ---- one micro-batch --------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor, weight: float = 1.0) -> None:
        """Gradient of ``loss / weight`` (module docstring: ``loss`` summed over this micro-batch's units,
        ``weight`` the units of the whole optimizer step over all processes)."""
        self.ds.backward(loss * (self._deepspeed_divisor / weight))

    def step(self) -> None:
        """After every micro-batch; the optimizer runs at the accumulation boundary (module docstring)."""
        self.ds.step()
        self._micro_steps += 1

    def end_update(self) -> None:
        """After the last micro-batch of an optimizer step: it must have been exactly ``grad_accum``
        micro-batches (DeepSpeed stepped the optimizer on the last one)."""
        taken, self._micro_steps = self._micro_steps, 0
        if taken != self.grad_accum:
            raise RuntimeError(f"engine {self.name!r}: an optimizer step took {taken} micro-batches, but "
                               f"train.grad_accum={self.grad_accum}: the update would straddle two optimizer steps")

    def grad_norm(self) -> Optional[float]:
        """Global gradient norm of the last optimizer step (before clipping); None for an fp16 step that
        overflowed (DeepSpeed skipped it and lowered the loss scale: its inf "norm" measures no update)."""
        if self.ds.fp16_enabled() and not self.ds.was_step_applied():
            return None
        norm = self.ds.get_global_grad_norm()
        if norm is None:
            return None
        return float(norm.item() if torch.is_tensor(norm) else norm)

    def fp16_metrics(self, prefix: str = "") -> Dict[str, float]:
        """Under precision=fp16, DeepSpeed's dynamic loss scale and how many optimizer steps it has skipped on
        overflow so far (the first few of a run, while the scale comes down from 2^16); {} otherwise."""
        if not self.ds.fp16_enabled():
            return {}
        scale = getattr(self.ds.optimizer, "cur_scale", None)
        out = {f"{prefix}skipped_steps": int(self.ds.skipped_steps)}
        if scale is not None:
            out[f"{prefix}fp16_loss_scale"] = float(scale)
        return out

    def lr(self) -> float:
        return float(self.ds.get_lr()[0])

    # ---- state ------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """DeepSpeed state (weights, optimizer, scheduler) into ``directory`` (collective)."""
        self.ds.save_checkpoint(str(directory), tag="ds", client_state={}, save_latest=False)

    def load(self, directory: Path) -> None:
        self.ds.load_checkpoint(str(directory), tag="ds", load_optimizer_states=True,
                                load_lr_scheduler_states=True)

    def consolidated_state_dict(self) -> Optional[Dict[str, torch.Tensor]]:
        """Full weights on rank 0 (None elsewhere); a collective under ZeRO-3."""
        if self.zero_stage == 3:
            sd = self.ds._zero3_consolidated_16bit_state_dict()
        else:
            sd = self.ds.module.state_dict() if self.is_main else None
        return sd if self.is_main else None

    def compile(self) -> None:
        self.ds.compile()  # torch.compile of the wrapped module (inductor; CUDA graphs need static shapes)
