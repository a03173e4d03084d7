"""Loading checkpoint files from a run dir without executing code.

``torch.load(weights_only=True)`` unpickles only tensors, containers and plain values plus an explicit
allowlist of classes. DeepSpeed's checkpoints also hold a few of its own plain-data types (enums and
small config records); those, and nothing else, are allowed here. A run dir holding any other pickled
object fails to load with a one-line ``RunDirError`` instead of running it.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

# "module:qualname" of the non-tensor classes DeepSpeed writes into its checkpoints (all plain data).
DEEPSPEED_SAFE = (
    "deepspeed.runtime.fp16.loss_scaler:LossScaler",
    "deepspeed.runtime.fp16.loss_scaler:DynamicLossScaler",
    "deepspeed.runtime.zero.config:ZeroStageEnum",
    "deepspeed.utils.tensor_fragment:fragment_address",
    "deepspeed.checkpoint.constants:OPTIMIZER_STATE_DICT",
)


def _safe_globals():
    out = []
    for ref in DEEPSPEED_SAFE:
        module, _, name = ref.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in name.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            continue
        if isinstance(obj, type):
            out.append(obj)
    return out


def safe_torch_load(path, map_location=None):
    """``torch.load`` restricted to data (see module docstring)."""
    from rlhf_cli.errors import RunDirError

    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "Weights only load failed" in str(e):
            first = " ".join(str(e).split())[:200]
            raise RunDirError(f"{Path(path)}: refusing to load a checkpoint file that holds code or unknown "
                              f"objects ({first})") from None
        raise
