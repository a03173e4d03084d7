"""Launch the workers through DeepSpeed's launchers (multi-process, multi-node); their log noise filtered."""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

# DeepSpeed's launcher and runtime log INFO/WARNING lines with this prefix; hidden unless --debug.
_NOISE = re.compile(r"^(\[\d{4}-\d\d-\d\d [\d:,]+\] \[(INFO|WARNING)\]|.*(Setting accelerator to CPU|"
                    r"deepspeed_shm_comm_op built successfully|Using /root/.cache/torch_extensions|"
                    r"Emitting ninja|Building extension|Loading extension|Time to load|ninja: no work))")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_nproc() -> int:
    import torch

    return torch.cuda.device_count() if cuda_available() else 1


def launch_command(config_path: Path, nproc: int, hostfile: Optional[str], master_port: int) -> List[str]:
    """With a hostfile: DeepSpeed's runner (``deepspeed``), which reaches the hosts over pdsh/ssh. On this
    node alone: the per-node launcher the runner would exec for it, started directly; that skips one
    Python start-up that imports torch and deepspeed (~3 s of every local multi-process run here)."""
    if not hostfile:
        from rlhf_cli.engine.nodes import NodePlan

        return node_launch_command(config_path, nproc, NodePlan(1, 0, "127.0.0.1", master_port, ["localhost"], "local"))
    return [sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", hostfile, "--num_gpus", str(nproc),
            "--master_port", str(master_port), "--module", "--no_local_rank", "rlhf_cli.worker", str(config_path)]


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def node_world_info(plan, nproc: int) -> dict:
    """The world info this node launches with: its workers on the GPUs ``CUDA_VISIBLE_DEVICES`` lists."""
    from rlhf_cli.engine.nodes import local_devices, world_info

    return world_info(plan, nproc, local_devices(nproc, cuda_available()))


def node_launch_command(config_path: Path, nproc: int, plan) -> List[str]:
    """One node's share of a multi-node run, no ssh: DeepSpeed's per-node launcher (what its runner
    execs on each node under ``--no_ssh``; through ``engine/ds_launch.py``), given the whole world's layout and
    this node's rank."""
    info = base64.urlsafe_b64encode(json.dumps(node_world_info(plan, nproc)).encode()).decode()
    return [sys.executable, "-u", "-m", "rlhf_cli.engine.ds_launch", f"--world_info={info}",
            f"--node_rank={plan.node_rank}", f"--master_addr={plan.master_addr}",
            f"--master_port={plan.master_port}", "--module", "--no_local_rank", "rlhf_cli.worker", str(config_path)]


def launch_env(nproc: int, debug: bool) -> dict:
    env = dict(os.environ)
    # N processes on C cores get C/N threads each; more threads than cores halves throughput.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, nproc))))
    env["LOCAL_WORLD_SIZE"] = str(nproc)  # processes on THIS node (DeepSpeed's launcher sets only the world's)
    env["PYTHONUNBUFFERED"] = "1"
    if debug:
        env["RLHF_DEBUG"] = "1"
    return env


def launch(config_path: Path, nproc: int, hostfile: Optional[str], debug: bool, plan=None) -> int:
    """Run the workers through the `deepspeed` launcher (the CLI runs a lone local worker in-process);
    ``plan`` (engine.nodes.NodePlan) with nnodes > 1 starts this node's share."""
    if plan is not None and plan.multi:
        cmd = node_launch_command(config_path, nproc, plan)
    else:
        cmd = launch_command(config_path, nproc, hostfile, free_port())
    proc = subprocess.Popen(cmd, env=launch_env(nproc, debug), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)

    def pump(src, dst):  # workers' stdout -> stdout, their stderr (one-line errors) -> stderr
        for line in src:
            if debug or not _NOISE.match(line):
                dst.write(line)
                dst.flush()

    import threading

    err = threading.Thread(target=pump, args=(proc.stderr, sys.stderr), daemon=True)
    err.start()
    try:
        pump(proc.stdout, sys.stdout)
        code = proc.wait()
    except KeyboardInterrupt:  # the launcher forwards the signal; workers checkpoint and exit
        code = proc.wait()
    err.join(timeout=5)
    return code
