"""Importing DeepSpeed without the mlflow import its autotuner makes.

``deepspeed/autotuning/autotuner.py`` runs ``import mlflow`` at import time whenever mlflow is installed (it is,
with our ``[mlflow]`` tracker extra): 1.4 s of every process start here, in the CLI, the per-node launcher and
each worker, for an autotuner we never run. ``import_deepspeed`` hides mlflow for that one import only; our own
mlflow tracker (``training/trackers.py``) imports the real package later, in the same process, as usual.
"""
from __future__ import annotations

import sys


def import_deepspeed():
    """The ``deepspeed`` module, imported once with mlflow hidden from its autotuner."""
    if "deepspeed" in sys.modules:
        return sys.modules["deepspeed"]
    hide = "mlflow" not in sys.modules
    if hide:
        sys.modules["mlflow"] = None  # `import mlflow` now raises ImportError, which the autotuner catches
    try:
        import deepspeed
    finally:
        if hide and sys.modules.get("mlflow", 0) is None:
            del sys.modules["mlflow"]
    return deepspeed
