"""Multi-node without ssh: which node this process group is, from flags or SLURM's variables.

Clusters such as SLURM and Kubernetes start one process group per node and forbid ssh between them, so
DeepSpeed's pdsh/ssh runner (``--hostfile``) cannot reach the other nodes. Instead ``rlhf train`` runs on
every node with the same arguments plus ``--nnodes N --node-rank R --master-addr HOST``; each node starts
its own ``nproc`` workers through ``deepspeed.launcher.launch`` (what DeepSpeed's own ``--no_ssh`` mode
runs on each node) and they meet at HOST:PORT. Pure Python: no torch, no deepspeed.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Union

from rlhf_cli.errors import ConfigError

DEFAULT_MASTER_PORT = 29500


@dataclass(frozen=True)
class NodePlan:
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    hosts: List[str]  # one name per node (labels in DeepSpeed's world info; only their order matters)
    source: str  # "flags" or "SLURM" (what filled the values, for the log line)

    @property
    def multi(self) -> bool:
        return self.nnodes > 1


def first_host(nodelist: str) -> str:
    """First host of a SLURM nodelist ('gpu[03-05,09],cpu1' -> 'gpu03') without scontrol."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):  # the first top-level comma ends the first entry
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            end = i
            break
    entry = nodelist[:end].strip()
    m = re.match(r"^([^\[]*)\[([^\]]*)\](.*)$", entry)
    if not m:
        return entry
    prefix, ranges, suffix = m.groups()
    first = ranges.split(",")[0].split("-")[0]  # keeps zero padding: '03-05' -> '03'
    return prefix + first + suffix


def slurm_hosts(nodelist: str) -> List[str]:
    """All hosts of a nodelist via `scontrol show hostnames` when available, else just the first one."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.split()
            if out:
                return out
        except (subprocess.SubprocessError, OSError):
            pass
    return [first_host(nodelist)]


def _slurm_int(env: Mapping[str, str], *names: str) -> Optional[int]:
    for n in names:
        if env.get(n, "").strip().isdigit():
            return int(env[n])
    return None


def plan_nodes(nnodes: Optional[int], node_rank: Optional[int], master_addr: Optional[str],
               master_port: Optional[int], hostfile: Optional[str],
               env: Optional[Mapping[str, str]] = None) -> NodePlan:
    """Resolve flags, then SLURM's variables for whatever a flag left unset; validate; one-line errors.

    SLURM (inside ``srun``): nodes = SLURM_STEP_NUM_NODES | SLURM_NNODES | SLURM_JOB_NUM_NODES, node rank =
    SLURM_NODEID, master = first host of SLURM_STEP_NODELIST | SLURM_JOB_NODELIST, port = $MASTER_PORT or
    29500. ``srun`` must start ONE task per node: each ``rlhf train`` starts that node's ``--nproc`` workers.
    """
    env = os.environ if env is None else env
    source = "flags"
    slurm_nodes = _slurm_int(env, "SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES")
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    hosts: List[str] = []
    use_slurm = slurm_nodes is not None and slurm_nodes > 1 and not hostfile and nnodes in (None, slurm_nodes)
    if use_slurm:
        source = "SLURM"
        tasks = _slurm_int(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
        if tasks is not None and tasks != slurm_nodes:
            raise ConfigError(f"SLURM started {tasks} tasks on {slurm_nodes} nodes; run `rlhf train` once per node "
                              f"(srun --ntasks-per-node=1) and give --nproc the processes per node")
        nnodes = slurm_nodes
        if node_rank is None:
            node_rank = _slurm_int(env, "SLURM_NODEID")
        if nodelist:
            hosts = slurm_hosts(nodelist)
        if master_addr is None and hosts:
            master_addr = hosts[0]
    nnodes = 1 if nnodes is None else nnodes
    if nnodes < 1:
        raise ConfigError(f"--nnodes={nnodes}: must be at least 1")
    if nnodes == 1:
        if node_rank not in (None, 0):
            raise ConfigError(f"--node-rank={node_rank}: must be 0 with one node (set --nnodes)")
        return NodePlan(1, 0, master_addr or "127.0.0.1", master_port or DEFAULT_MASTER_PORT, ["localhost"], source)
    if hostfile:
        raise ConfigError("--hostfile (ssh launch) and --nnodes (one launch per node, no ssh) exclude each other; "
                          "use one of them")
    if node_rank is None:
        raise ConfigError(f"--nnodes={nnodes} needs --node-rank (0..{nnodes - 1}) on each node")
    if not 0 <= node_rank < nnodes:
        raise ConfigError(f"--node-rank={node_rank}: must be in 0..{nnodes - 1} for --nnodes={nnodes}")
    if not master_addr:
        raise ConfigError(f"--nnodes={nnodes} needs --master-addr (the host of node rank 0, reachable from "
                          "every node)")
    if master_port is None:
        port = env.get("MASTER_PORT", "").strip()
        master_port = int(port) if port.isdigit() else DEFAULT_MASTER_PORT
    if not 0 < master_port < 65536:
        raise ConfigError(f"--master-port={master_port}: not a TCP port")
    if len(hosts) != nnodes:
        hosts = [f"node{i}" for i in range(nnodes)]
    return NodePlan(nnodes, node_rank, master_addr, master_port, hosts, source)


DeviceId = Union[int, str]


def local_devices(nproc: int, cuda: bool, env: Optional[Mapping[str, str]] = None) -> List[DeviceId]:
    """The device ids this node's ``nproc`` workers run on: the first ``nproc`` that ``CUDA_VISIBLE_DEVICES``
    lists when it is set (indices or GPU UUIDs), else ``0..nproc-1``.

    DeepSpeed's launcher sets every worker's ``CUDA_VISIBLE_DEVICES`` to the world info's ids for its node,
    whatever the caller had, so ``CUDA_VISIBLE_DEVICES=2,3 rlhf train ... --nproc 2`` would run on GPUs 0
    and 1 if these ids were always 0..n-1. Without CUDA the ids only count processes."""
    env = os.environ if env is None else env
    listed = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if not cuda or not listed:
        return list(range(nproc))
    if len(listed) < nproc:
        raise ConfigError(f"--nproc {nproc} but CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} makes "
                          f"{len(listed)} GPU(s) visible; give at most {len(listed)} or list more devices")
    return [int(d) if d.isdigit() else d for d in listed[:nproc]]


def world_info(plan: NodePlan, nproc: int, devices: Optional[Sequence[DeviceId]] = None) -> Dict[str, List[DeviceId]]:
    """DeepSpeed's world info: {host: [local device ids]} in node-rank order; global rank = node * nproc + i.
    Only this node's entry reaches its workers (each node's launcher reads its own); the others count ranks."""
    ids = list(devices) if devices is not None else list(range(nproc))
    if len(ids) != nproc:
        raise ValueError(f"{len(ids)} device ids for {nproc} processes")
    return {h: ids for h in plan.hosts}
