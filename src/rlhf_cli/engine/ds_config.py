"""Pure functions from our config to DeepSpeed's: golden-tested, no deepspeed import."""
from __future__ import annotations

from typing import Any, Dict


def resolve_precision(requested: str, cuda: bool, bf16_supported: bool) -> str:
    """'auto' -> bf16 on GPUs that support it, else fp16 on GPUs, fp32 on CPU (bf16 matmul is ~500x
    slower than fp32 on CPUs without AMX). Explicit bf16/fp16 on CPU are honoured (the user asked)."""
    if requested != "auto":
        return requested
    if not cuda:
        return "fp32"
    return "bf16" if bf16_supported else "fp16"


def resolve_backend(requested: str, cuda: bool) -> str:
    if requested != "auto":
        return requested
    return "nccl" if cuda else "gloo"


def build_ds_config(cfg, world_size: int, precision: str, cuda: bool, optim=None) -> Dict[str, Any]:
    """DeepSpeed config dict for a trainable model.

    ``cfg`` is a stage config (engine/optim/train sections); ``optim`` is this model's own optimizer
    section (default ``cfg.optim``; e.g. PPO's critic has its own). The optimizer and scheduler are built
    by us and handed to DeepSpeed as client objects, so none appear here.
    """
    optim = cfg.optim if optim is None else optim
    eng, train = cfg.engine, cfg.train
    zero: Dict[str, Any] = {
        "stage": int(eng.zero_stage),
        "contiguous_gradients": True,
        "overlap_comm": bool(cuda),  # overlap needs async streams; on CPU it only adds buffers
        "reduce_bucket_size": int(eng.bucket_size),
        "allgather_bucket_size": int(eng.bucket_size),
    }
    if eng.zero_stage == 3:
        zero.update({
            "stage3_prefetch_bucket_size": int(eng.bucket_size),
            "stage3_param_persistence_threshold": 10_000,
            # final/ is written from a consolidated state dict; this makes DeepSpeed gather it.
            "stage3_gather_16bit_weights_on_model_save": True,
        })
    if eng.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": bool(cuda)}
    if eng.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": bool(cuda)}
    ds: Dict[str, Any] = {
        "train_micro_batch_size_per_gpu": int(train.micro_batch_size),
        "gradient_accumulation_steps": int(train.grad_accum),
        "train_batch_size": int(train.micro_batch_size) * int(train.grad_accum) * int(world_size),
        "gradient_clipping": float(optim.max_grad_norm),
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16,
                 "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1},
        # Our client AdamW is a torch optimizer; DeepSpeed only trusts its own unless told.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
    }
    return ds


def build_frozen_ds_config(cfg, precision: str) -> Dict[str, Any]:
    """Config for a frozen model (reference / reward) that is only run forward: ZeRO-3 shards it too."""
    ds: Dict[str, Any] = {
        "train_micro_batch_size_per_gpu": int(cfg.train.micro_batch_size),
        "zero_optimization": {"stage": 3 if cfg.engine.zero_stage == 3 else 0,
                              "stage3_param_persistence_threshold": 10_000},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
    }
    if cfg.engine.zero_stage == 3 and cfg.engine.offload_params:
        ds["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": True}
    return ds
