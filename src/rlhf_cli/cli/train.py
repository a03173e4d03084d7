"""`rlhf train`: compose -> check output_dir -> write config.yaml -> launch (on this node)."""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import typer

from rlhf_cli.cli.args import split_args
from rlhf_cli.config.compose import compose, to_yaml
from rlhf_cli.errors import ConfigError
from rlhf_cli.output_files import write_output


def check_launch_options(nproc: Optional[int], hostfile: Optional[str]) -> None:
    """--nproc and --hostfile: one line naming the option and what is allowed."""
    if nproc is not None and nproc < 1:
        raise ConfigError(f"--nproc={nproc}: must be >= 1 (processes per node)")
    if hostfile is not None:
        p = Path(hostfile).expanduser()
        if not p.is_file():
            raise ConfigError(f"--hostfile={hostfile}: file not found")
        try:
            lines = [ln.split("#")[0].strip() for ln in p.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"--hostfile={hostfile}: cannot read it ({e})") from None
        for i, ln in enumerate(lines, 1):
            if ln and not re.fullmatch(r"\S+\s+slots=\d+", ln):
                raise ConfigError(f"{hostfile}:{i}: expected 'HOSTNAME slots=N', got {ln!r}")
        if not any(lines):
            raise ConfigError(f"--hostfile={hostfile}: no hosts in it")


def _sets_output_dir(recipe: Optional[str], overrides: Sequence[str]) -> bool:
    if any(o.split("=", 1)[0].lstrip("+") == "output_dir" for o in overrides):
        return True
    if recipe and Path(recipe).is_file():
        from omegaconf import OmegaConf

        try:
            return OmegaConf.load(recipe).get("output_dir") is not None
        except Exception:
            return False
    return False


def multi_node_output_dir(stage: str, recipe: Optional[str], overrides: list) -> None:
    """Every node must name the same output_dir (the default has a per-node timestamp)."""
    if _sets_output_dir(recipe, overrides):
        return
    job = os.environ.get("SLURM_JOB_ID", "").strip()
    if not job:
        raise ConfigError("a multi-node run needs output_dir=... (the same directory, on a filesystem every "
                          "node shares); the default name holds a per-node timestamp")
    overrides.append(f"output_dir=runs/{stage}-slurm-{job}")


def node_config_path(text: str, node_rank: int) -> Path:
    """Where a node other than 0 keeps its own copy of the composed config: node-local, named by content,
    so nothing is written into output_dir (node 0 owns it) and --dry-run can show the exact path."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"rlhf-cli-{digest}" / f"node{node_rank}.config.yaml"


def write_node_config(text: str, node_rank: int) -> Path:
    path = node_config_path(text, node_rank)
    write_output(path, text)
    return path


def run_train(stage: str, words: Sequence[str], dry_run: bool, nproc: Optional[int], hostfile: Optional[str],
              debug: bool, nnodes: Optional[int] = None, node_rank: Optional[int] = None,
              master_addr: Optional[str] = None, master_port: Optional[int] = None,
              gpu_mem: Optional[str] = None) -> int:
    from rlhf_cli.engine.launch import default_nproc, launch, launch_command, node_launch_command, node_world_info
    from rlhf_cli.engine.nodes import plan_nodes

    plan = plan_nodes(nnodes, node_rank, master_addr, master_port, hostfile)  # flag combinations first
    check_launch_options(nproc, hostfile)
    if gpu_mem is not None and not dry_run:
        raise ConfigError("--gpu-mem goes with --dry-run (the memory plan)")
    recipe, overrides = split_args(words)
    if plan.multi:
        multi_node_output_dir(stage, recipe, overrides)
    cfg = compose(stage, recipe, overrides)
    text = to_yaml(cfg)
    from rlhf_cli.config.derive import derivations

    for key, (value, why) in derivations(cfg).items():
        typer.echo(f"derived {key}={value} ({why})", err=True)
    n = nproc or default_nproc()
    if not hostfile and (n > 1 or plan.multi):
        node_world_info(plan, n)  # too few GPUs in CUDA_VISIBLE_DEVICES: fail before anything is written
    config_path = Path(cfg.output_dir) / "config.yaml"
    if plan.multi and plan.node_rank > 0:
        config_path = node_config_path(text, plan.node_rank)
    if dry_run:
        typer.echo(text, nl=False)
        if plan.multi:
            typer.echo(f"# node {plan.node_rank} of {plan.nnodes} ({plan.source}), {n} process(es) per node, "
                       f"master {plan.master_addr}:{plan.master_port}; world {node_world_info(plan, n)}")
            typer.echo("# launch: " + shlex.join(node_launch_command(config_path, n, plan)))
        elif n == 1 and not hostfile:
            typer.echo(f"# launch: in-process worker reading {config_path}")
        else:
            typer.echo("# launch: " + shlex.join(launch_command(config_path, n, hostfile, 29500)))
        from rlhf_cli.training import memory_plan

        budget = memory_plan.parse_size(gpu_mem) if gpu_mem else memory_plan.detected_gpu_memory()
        nodes = plan.nnodes if plan.multi else 1
        report = memory_plan.plan(cfg, n * nodes, nodes, budget)
        typer.echo("\n".join("# " + ln for ln in report.text().splitlines()))
        return 0
    from rlhf_cli.models.embedded import prepare_model
    from rlhf_cli.training.run_dir import check_output_dir, prepare_output_dir

    prepare_model(cfg, log=lambda m: typer.echo(m, err=True))
    if plan.multi and plan.node_rank > 0:
        # node 0 alone prepares output_dir and writes config.yaml; this node checks the same rules (read-only,
        # to fail as fast as node 0 would), runs its workers on its own identical composition, and the
        # workers verify at start-up that every rank holds the same config as rank 0.
        check_output_dir(cfg)
        config_path = write_node_config(text, plan.node_rank)
        try:
            return launch(config_path, n, hostfile, debug, plan)
        finally:
            config_path.unlink(missing_ok=True)
    config_path = prepare_output_dir(cfg, text)
    if n == 1 and not hostfile and not plan.multi:  # one local process: run the worker here, no launcher
        from rlhf_cli.worker import run_worker

        return run_worker(str(config_path), debug=debug)
    return launch(config_path, n, hostfile, debug, plan)
