"""Decide what a run may do with its output_dir before anything is written: never lose work silently."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from rlhf_cli.engine.strategy import list_checkpoints
from rlhf_cli.errors import RunDirError

OWNED = ("checkpoints", "final", "metrics.jsonl", "manifest.json", "config.yaml", "tb", "ref_logps.pt",
         "sl_data.jsonl", "sl_chains.jsonl", "preferences.jsonl", ".shards")  # the last four: rlaif


def prepare_output_dir(cfg, config_yaml: str) -> Path:
    """Check resume/overwrite rules, then write output_dir/config.yaml atomically. Returns its path."""
    out = Path(cfg.output_dir)
    finished = (out / "manifest.json").exists()
    ckpts = list_checkpoints(out / "checkpoints")
    if out.exists() and any(out.iterdir()) and not (out / "config.yaml").exists() and not cfg.overwrite:
        raise RunDirError(f"output_dir={out} exists and is not an rlhf-cli run; choose another or pass overwrite=true")
    if cfg.overwrite:
        for name in OWNED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    elif finished:
        raise RunDirError(f"output_dir={out} holds a finished run; pass overwrite=true to replace it "
                          "or choose another output_dir")
    elif ckpts and cfg.resume == "false":
        raise RunDirError(f"output_dir={out} has checkpoints (step {ckpts[-1]}); pass resume=true to continue "
                          "or overwrite=true to start over")
    elif not ckpts and cfg.resume == "true":
        raise RunDirError(f"resume=true but output_dir={out} has no checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    old = out / "config.yaml"
    if old.exists() and old.read_text() != config_yaml:
        n = 1
        while (out / f"config.prev-{n}.yaml").exists():
            n += 1
        os.replace(old, out / f"config.prev-{n}.yaml")  # kept: the earlier attempt's settings
    if not ckpts and (out / "metrics.jsonl").exists():
        os.replace(out / "metrics.jsonl", out / "metrics.prev.jsonl")  # an attempt that never checkpointed
    tmp = out / ".config.yaml.tmp"
    tmp.write_text(config_yaml)
    os.replace(tmp, out / "config.yaml")
    return out / "config.yaml"
