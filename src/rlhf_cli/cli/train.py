"""`rlhf train`: compose -> check output_dir -> write config.yaml -> launch."""
from __future__ import annotations

import re
import shlex
from typing import Optional, Sequence

import typer

from rlhf_cli.cli.args import split_args
from rlhf_cli.config.compose import compose, to_yaml


def check_launch_options(nproc: Optional[int], hostfile: Optional[str]) -> None:
    """--nproc and --hostfile: one line naming the option and what is allowed."""
    from pathlib import Path

    from rlhf_cli.errors import ConfigError

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


def run_train(stage: str, words: Sequence[str], dry_run: bool, nproc: Optional[int], hostfile: Optional[str],
              debug: bool) -> int:
    from pathlib import Path

    from rlhf_cli.engine.launch import default_nproc, launch, launch_command

    check_launch_options(nproc, hostfile)
    recipe, overrides = split_args(words)
    cfg = compose(stage, recipe, overrides)
    text = to_yaml(cfg)
    from rlhf_cli.config.derive import derivations

    for key, (value, why) in derivations(cfg).items():
        typer.echo(f"derived {key}={value} ({why})", err=True)
    n = nproc or default_nproc()
    config_path = Path(cfg.output_dir) / "config.yaml"
    if dry_run:
        typer.echo(text, nl=False)
        if n == 1 and not hostfile:
            typer.echo(f"# launch: in-process worker reading {config_path}")
        else:
            typer.echo("# launch: " + shlex.join(launch_command(config_path, n, hostfile, 29500)))
        return 0
    from rlhf_cli.models.embedded import prepare_model
    from rlhf_cli.stages.run_dir import prepare_output_dir

    prepare_model(cfg, log=lambda m: typer.echo(m, err=True))
    config_path = prepare_output_dir(cfg, text)
    if n == 1 and not hostfile:  # one local process: run the worker here, no launcher
        from rlhf_cli.worker import run_worker

        return run_worker(str(config_path), debug=debug)
    return launch(config_path, n, hostfile, debug)
