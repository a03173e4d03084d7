"""Which GPUs a local or per-node launch puts its workers on (engine/nodes.local_devices)."""
import base64
import json
from pathlib import Path

import pytest

from rlhf_cli.engine import launch
from rlhf_cli.engine.nodes import NodePlan, local_devices, world_info
from rlhf_cli.errors import ConfigError


def launched_world_info() -> dict:
    """The world info `rlhf train --nproc 2` hands DeepSpeed's per-node launcher on this node."""
    cmd = launch.launch_command(Path("run/config.yaml"), 2, None, 29501)
    [arg] = [a for a in cmd if a.startswith("--world_info=")]
    return json.loads(base64.urlsafe_b64decode(arg.split("=", 1)[1]))


def test_visible_devices_are_the_workers_devices():
    assert local_devices(2, cuda=True, env={"CUDA_VISIBLE_DEVICES": "2,3"}) == [2, 3]
    assert local_devices(2, cuda=True, env={"CUDA_VISIBLE_DEVICES": " 5, 1 ,7"}) == [5, 1]  # the first nproc
    uuids = "GPU-8f1c2a3b-0000-1111-2222-333344445555,GPU-0a1b2c3d-6666-7777-8888-9999aaaabbbb"
    assert local_devices(2, cuda=True, env={"CUDA_VISIBLE_DEVICES": uuids}) == uuids.split(",")


@pytest.mark.parametrize("env", [{}, {"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": " , "}])
def test_without_a_device_list_the_ids_count_from_zero(env):
    assert local_devices(3, cuda=True, env=env) == [0, 1, 2]


def test_on_cpu_the_ids_only_count_processes():
    assert local_devices(2, cuda=False, env={"CUDA_VISIBLE_DEVICES": "7"}) == [0, 1]


def test_too_few_visible_gpus_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"--nproc 4 but CUDA_VISIBLE_DEVICES=2,3 makes 2 GPU\(s\) visible"):
        local_devices(4, cuda=True, env={"CUDA_VISIBLE_DEVICES": "2,3"})


def test_world_info_gives_every_node_the_same_count():
    plan = NodePlan(2, 1, "n0", 29500, ["n0", "n1"], "flags")
    assert world_info(plan, 2, [4, 6]) == {"n0": [4, 6], "n1": [4, 6]}
    assert world_info(plan, 2) == {"n0": [0, 1], "n1": [0, 1]}
    with pytest.raises(ValueError):
        world_info(plan, 2, [4])


def test_the_launch_command_carries_the_visible_gpus(monkeypatch):
    """DeepSpeed's per-node launcher sets each worker's CUDA_VISIBLE_DEVICES to its node's world-info ids,
    so these must be the user's, not 0..n-1."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setattr(launch, "cuda_available", lambda: True)
    assert launched_world_info() == {"localhost": [2, 3]}
    monkeypatch.setattr(launch, "cuda_available", lambda: False)  # a CPU run: the list means nothing
    assert launched_world_info() == {"localhost": [0, 1]}
