"""Decide what a run may do with its output_dir before anything is written: never lose work silently."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional

from rlhf_cli.engine.checkpoints import list_checkpoints
from rlhf_cli.errors import RunDirError
from rlhf_cli.output_files import write_output

OWNED = ("checkpoints", "final", "metrics.jsonl", "manifest.json", "config.yaml", "tb", "ref_logps.json",
         "samples.jsonl", "critic", "metrics.prev.jsonl", "trackers.json", "wandb", "mlruns",
         "sl_data.jsonl", "sl_chains.jsonl", "preferences.jsonl", "rlaif_chunks")  # the last four: rlaif
LOCK = ".lock"
# Settings that change which weights a checkpoint holds: resuming with another value is refused.
MODEL_SHAPE_KEYS = ("model.name", "model.path", "model.tiny.", "model.lora.")
_HELD: Dict[str, int] = {}  # output_dir -> fd of its lock, held until this process exits


def lock_output_dir(out: Path) -> None:
    """Hold ``output_dir/.lock`` (an flock) for this process's lifetime: a second launch into a dir that a
    live run holds is refused with the holder's pid; the lock dies with its holder, so a crashed run
    never blocks its own resume."""
    import fcntl

    key = str(out.resolve())
    if key in _HELD:
        return
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunDirError(f"output_dir={out} is in use by a running rlhf process (pid {holder}); wait for it, "
                          "stop it, or choose another output_dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _HELD[key] = fd


def _flat(cfg_yaml: str) -> Dict[str, object]:
    from omegaconf import OmegaConf

    def walk(node, prefix=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{prefix}{k}.")
        else:
            yield prefix[:-1], node

    return dict(walk(OmegaConf.to_container(OmegaConf.create(cfg_yaml))))


def changed_keys(old_yaml: str, new_yaml: str) -> List[str]:
    """'key: old -> new' for every setting that differs (output_dir and overwrite aside)."""
    a, b = _flat(old_yaml), _flat(new_yaml)
    skip = ("overwrite", "resume")
    return [f"{k}: {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in skip]


def saved_progress(out: Path) -> Optional[str]:
    """What a rerun into ``out`` would resume from: "step N" (the newest complete checkpoint), "N saved
    RLAIF chunk(s)", or None (nothing: a fresh start)."""
    from rlhf_cli.training.chunks import saved_chunks

    steps = list_checkpoints(out / "checkpoints")
    if steps:
        return f"step {steps[-1]}"
    chunks = saved_chunks(out)
    return f"{chunks} saved RLAIF chunk(s)" if chunks else None


def check_output_dir(cfg) -> Optional[str]:
    """The resume/overwrite rules, read-only (every node of a multi-node run checks them). Returns the saved
    progress found (``saved_progress``)."""
    out = Path(cfg.output_dir)
    if (out.exists() and any(p.name != LOCK for p in out.iterdir()) and not (out / "config.yaml").exists()
            and not cfg.overwrite):
        raise RunDirError(f"output_dir={out} exists and is not an rlhf-cli run; choose another or pass overwrite=true")
    progress = saved_progress(out)
    if cfg.overwrite:
        return progress
    if (out / "manifest.json").exists():
        raise RunDirError(f"output_dir={out} holds a finished run; pass overwrite=true to replace it "
                          "or choose another output_dir")
    if progress and cfg.resume == "false":
        raise RunDirError(f"output_dir={out} has saved progress ({progress}); pass resume=true to continue "
                          "or overwrite=true to start over")
    if not progress and cfg.resume == "true":
        raise RunDirError(f"resume=true but output_dir={out} has no checkpoint")
    return progress


def prepare_output_dir(cfg, config_yaml: str) -> Path:
    """Lock output_dir, check the resume/overwrite rules, then write output_dir/config.yaml atomically.
    Returns its path."""
    out = Path(cfg.output_dir)
    check_output_dir(cfg)
    lock_output_dir(out)  # before anything is removed or written: one run per output_dir
    progress = check_output_dir(cfg)  # again under the lock: another run may have finished meanwhile
    if cfg.overwrite:
        progress = None
        for name in OWNED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    old = out / "config.yaml"
    if old.exists() and old.read_text() != config_yaml and progress and not cfg.overwrite:
        changes = changed_keys(old.read_text(), config_yaml)
        shape = [c for c in changes if c.startswith(MODEL_SHAPE_KEYS)]
        if shape:
            raise RunDirError(f"output_dir={out}: cannot resume {progress} with a changed model "
                              f"({'; '.join(shape)}); its checkpoint holds other weights. Pass overwrite=true "
                              "or choose another output_dir")
        if changes:
            print(f"resuming {out} ({progress}) with changed settings: {'; '.join(changes)}", file=sys.stderr)
    if old.exists() and old.read_text() != config_yaml:
        n = 1
        while (out / f"config.prev-{n}.yaml").exists():
            n += 1
        os.replace(old, out / f"config.prev-{n}.yaml")  # kept: the earlier attempt's settings
    if not progress and (out / "metrics.jsonl").exists():
        os.replace(out / "metrics.jsonl", out / "metrics.prev.jsonl")  # an attempt that never checkpointed
    write_output(out / "config.yaml", config_yaml)
    return out / "config.yaml"
