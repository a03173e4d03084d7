"""Checkpoint discovery: which ``checkpoints/step-N`` dirs are complete. No torch, no deepspeed, so the CLI
can list or refuse a run dir without importing either.

Layout of one checkpoint (written by ``Strategy.save_checkpoint`` through a tmp dir and one rename)::

    checkpoints/step-N/
      trainer_state.json     # {"step": N, ...stage state}; written last, so its presence marks completeness
      rng-rank{R}.json       # python RNG of each process (plain JSON)
      rng-rank{R}.pt         # torch RNG tensors of each process (loaded with weights_only=True)
      <engine name>/         # one DeepSpeed engine per trainable model: policy/, or actor/ + critic/
"""
from __future__ import annotations

import errno
from pathlib import Path
from typing import List

TRAINER_STATE = "trainer_state.json"


def list_checkpoints(root: Path) -> List[int]:
    """Steps of the complete checkpoints under ``root``, ascending."""
    root = Path(root)
    if not root.is_dir():
        return []
    steps = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("step-") and (p / TRAINER_STATE).exists():
            try:
                steps.append(int(p.name[5:]))
            except ValueError:
                pass
    return sorted(steps)


def checkpoint_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step}"


def is_disk_full(e: BaseException) -> bool:
    """A write that failed for lack of space (or a file-size limit): an OSError, or the errors torch.save's
    C++ zip writer ("file write failed", or "unexpected pos" after a short write) and safetensors ("File too
    large", "No space left") raise."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return True
    msg = str(e)
    return any(s in msg for s in ("file write failed", "unexpected pos", "No space left", "File too large",
                                  "Disk quota"))
