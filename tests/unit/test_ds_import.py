"""engine/ds_import.py: DeepSpeed is imported without its autotuner's mlflow import, and mlflow stays importable
afterwards in the same process (our mlflow tracker needs the real package)."""
import subprocess
import sys

import pytest

CHECK = """
import sys
from rlhf_cli.engine.ds_import import import_deepspeed
ds = import_deepspeed()
import deepspeed.autotuning.autotuner as autotuner
assert "mlflow" not in sys.modules and autotuner.has_mlflow is False
assert import_deepspeed() is ds
import mlflow
assert sys.modules["mlflow"] is mlflow and hasattr(mlflow, "log_metric")
print("OK")
"""


def test_deepspeed_imports_without_mlflow_and_mlflow_imports_after():
    pytest.importorskip("mlflow")
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().endswith("OK"), proc.stdout[-2000:] + proc.stderr[-2000:]
