"""The one object that owns DeepSpeed: distributed init, wrapping, backward/step, save/load, export.

Stages talk to a ``Strategy`` and never import deepspeed (cf. OpenRLHF's DeepspeedStrategy).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import socket
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import torch

from rlhf_cli.engine.ds_config import (
    build_ds_config,
    build_frozen_ds_config,
    resolve_backend,
    resolve_precision,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class Strategy:
    def __init__(self, cfg):
        self.cfg = cfg
        self.cuda = torch.cuda.is_available()
        self.precision = resolve_precision(cfg.precision, self.cuda, self.cuda and torch.cuda.is_bf16_supported())
        self.dtype = DTYPES[self.precision]
        self.engine = None

    # ---- processes ---------------------------------------------------------------------------------
    def setup_distributed(self) -> None:
        if "RANK" not in os.environ:  # in-process single worker (--nproc 1): a world of one
            os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                              MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
        import deepspeed

        if not self.cuda:
            logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
        self.rank = int(os.environ["RANK"])
        self.world_size = int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
        threads = self.cfg.threads or max(1, (os.cpu_count() or 1) // local_world)
        torch.set_num_threads(threads)
        if self.cuda:
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        import torch.distributed as dist

        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend=resolve_backend(self.cfg.engine.backend, self.cuda),
                                       verbose=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized() and self.world_size > 1:
            dist.barrier()

    def all_reduce(self, values: Iterable[float], op: str = "sum") -> List[float]:
        """Reduce a few floats across processes (one collective)."""
        import torch.distributed as dist

        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        if self.world_size > 1:
            dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                                   "min": dist.ReduceOp.MIN}[op])
        return t.tolist()

    def broadcast_object(self, obj: Any) -> Any:
        import torch.distributed as dist

        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def seed_everything(self, seed: int) -> None:
        random.seed(seed)
        torch.manual_seed(seed)
        if self.cuda:
            torch.cuda.manual_seed_all(seed)

    # ---- models ------------------------------------------------------------------------------------
    def _optimizer(self, model: torch.nn.Module):
        o = self.cfg.optim
        groups = param_groups(model, o.weight_decay)
        if self.cfg.engine.offload_optimizer:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)
        kwargs = {"fused": True} if self.cuda else {"foreach": True}
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, **kwargs)

    def prepare(self, model: torch.nn.Module, total_steps: int):
        """Wrap a trainable model with optimizer + LR schedule; returns the DeepSpeed engine."""
        import deepspeed

        o = self.cfg.optim
        warmup = o.warmup_steps or int(o.warmup_ratio * total_steps)
        optimizer = self._optimizer(model)
        sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(total_steps, warmup, o.scheduler, o.min_lr_ratio))
        ds_config = build_ds_config(self.cfg, self.world_size, self.precision, self.cuda)
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=sched,
                                               config=ds_config, dist_init_required=False)
        if self.cfg.model.compile:
            engine.compile()  # torch.compile of the wrapped module (inductor; CUDA graphs need static shapes)
        self.engine = engine
        return engine

    def prepare_frozen(self, model: torch.nn.Module) -> torch.nn.Module:
        """A model only run forward (reference / reward): ZeRO-3-sharded when training is ZeRO-3."""
        model.requires_grad_(False)
        model.eval()
        if self.cfg.engine.zero_stage == 3 and self.world_size > 1:
            import deepspeed

            engine, *_ = deepspeed.initialize(model=model, config=build_frozen_ds_config(self.cfg, self.precision),
                                              dist_init_required=False)
            engine.eval()
            return engine
        return model.to(device=self.device, dtype=self.dtype)

    @contextlib.contextmanager
    def gathered_params(self, module: torch.nn.Module):
        """Materialise ZeRO-3-sharded weights once (e.g. for a whole generation), a no-op otherwise."""
        if self.cfg.engine.zero_stage == 3 and self.world_size > 1:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                yield
        else:
            yield

    # ---- steps -------------------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> None:
        self.engine.step()

    def grad_norm(self) -> Optional[float]:
        norm = self.engine.get_global_grad_norm()
        if norm is None:
            return None
        return float(norm.item() if torch.is_tensor(norm) else norm)

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    # ---- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self, root: Path, step: int, state: Dict[str, Any], keep: int) -> Path:
        """Write checkpoints/step-N atomically: everything goes to a tmp dir that is renamed at the end."""
        final = root / f"step-{step}"
        tmp = root / f".step-{step}.tmp"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        self.engine.save_checkpoint(str(tmp), tag="ds", client_state={}, save_latest=False)
        rng = {"python": random.getstate(), "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if self.cuda else None}
        torch.save(rng, tmp / f"rng-rank{self.rank}.pt")
        self.barrier()
        if self.is_main:
            (tmp / "trainer_state.json").write_text(json.dumps({**state, "step": step}, indent=2))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in sorted(list_checkpoints(root))[:-keep]:
                shutil.rmtree(root / f"step-{old}", ignore_errors=True)
        self.barrier()
        return final

    def load_checkpoint(self, path: Path) -> Dict[str, Any]:
        self.engine.load_checkpoint(str(path), tag="ds", load_optimizer_states=True,
                                    load_lr_scheduler_states=True)
        rng_file = path / f"rng-rank{self.rank}.pt"
        if rng_file.exists():
            rng = torch.load(rng_file, weights_only=False)
            random.setstate(rng["python"])
            torch.set_rng_state(rng["torch"])
            if self.cuda and rng["cuda"] is not None:
                torch.cuda.set_rng_state_all(rng["cuda"])
        return json.loads((path / "trainer_state.json").read_text())

    def consolidated_state_dict(self) -> Optional[Dict[str, torch.Tensor]]:
        """Full model weights on rank 0 (None elsewhere); collective under ZeRO-3."""
        if self.cfg.engine.zero_stage == 3:
            sd = self.engine._zero3_consolidated_16bit_state_dict()
        else:
            sd = self.engine.module.state_dict() if self.is_main else None
        return sd if self.is_main else None


def list_checkpoints(root: Path) -> List[int]:
    if not root.is_dir():
        return []
    steps = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("step-") and (p / "trainer_state.json").exists():
            try:
                steps.append(int(p.name[5:]))
            except ValueError:
                pass
    return sorted(steps)
