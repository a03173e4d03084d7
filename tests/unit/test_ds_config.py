"""build_ds_config golden files: one per ZeRO stage / precision / offload / accumulation / clipping.

Regenerate after an intended change with: UPDATE_GOLDEN=1 pytest tests/unit/test_ds_config.py
"""
import json
import os
from pathlib import Path

import pytest
import torch

from rlhf_cli.config.compose import compose
from rlhf_cli.engine.ds_config import (
    build_ds_config,
    build_frozen_ds_config,
    resolve_backend,
    resolve_precision,
)

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CASES = {
    "zero0_fp32": (["engine=zero0"], 1, "fp32", False),
    "zero1_bf16": (["engine=zero1"], 8, "bf16", True),
    "zero2_fp32_accum4_clip05": (["engine=zero2", "train.grad_accum=4", "optim.max_grad_norm=0.5"], 2, "fp32", False),
    "zero2_offload_bf16": (["engine=zero2_offload"], 4, "bf16", True),
    "zero3_fp16": (["engine=zero3", "train.micro_batch_size=2"], 2, "fp16", True),
    "zero3_offload_bf16": (["engine=zero3_offload", "engine.bucket_size=1000000"], 16, "bf16", True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    overrides, world, precision, cuda = CASES[name]
    got = build_ds_config(compose("sft", None, overrides), world, precision, cuda)
    path = GOLDEN / f"ds_{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(path.read_text())


def test_semantics_not_just_snapshot():
    cfg = compose("sft", None, ["engine=zero3_offload", "train.micro_batch_size=3", "train.grad_accum=5"])
    ds = build_ds_config(cfg, world_size=4, precision="bf16", cuda=True)
    assert ds["train_batch_size"] == 3 * 5 * 4
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    frozen = build_frozen_ds_config(cfg, "bf16")
    assert frozen["zero_optimization"]["stage"] == 3 and "optimizer" not in frozen


def test_precision_and_backend_resolution():
    assert resolve_precision("auto", cuda=False, bf16_supported=False) == "fp32"
    assert resolve_precision("auto", cuda=True, bf16_supported=True) == "bf16"
    assert resolve_precision("auto", cuda=True, bf16_supported=False) == "fp16"
    assert resolve_precision("fp32", cuda=True, bf16_supported=True) == "fp32"
    assert resolve_backend("auto", cuda=False) == "gloo"
    assert resolve_backend("auto", cuda=True) == "nccl"


def test_an_update_must_take_exactly_grad_accum_micro_batches():
    """TrainEngine.end_update: an optimizer step of another count of micro-batches than train.grad_accum is
    an error (it would straddle two of DeepSpeed's optimizer steps); backward undoes DeepSpeed's divisions."""
    from rlhf_cli.engine.train_engine import TrainEngine

    class Recorder:  # the two DeepSpeed calls the contract is about, recorded
        def __init__(self):
            self.losses, self.steps = [], 0

        def backward(self, loss):
            self.losses.append(float(loss))

        def step(self):
            self.steps += 1

    ds = Recorder()
    engine = TrainEngine("policy", ds, zero_stage=2, is_main=True, world_size=2, grad_accum=3)
    for _ in range(3):
        engine.backward(torch.tensor(6.0), weight=4.0)  # a sum over this micro-batch; 4 units in the step
        engine.step()
    engine.end_update()
    assert ds.losses == [6.0 * 2 * 3 / 4.0] * 3 and ds.steps == 3
    engine.backward(torch.tensor(1.0))
    engine.step()
    with pytest.raises(RuntimeError, match="took 1 micro-batches, but train.grad_accum=3"):
        engine.end_update()
