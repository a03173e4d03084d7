"""Unlink DeepSpeed's shared-memory all-reduce segments once every local rank has mapped them.

On CPU, when all ranks are on one machine, DeepSpeed's ``deepspeed_shm_comm`` op gives every rank a
~69 MB POSIX shared-memory segment (``/dev/shm/deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank>``)
and never unlinks it. Every 2-process CPU run leaked 138 MB of RAM-backed /dev/shm that outlived the run;
a few hundred runs (a test suite or two) filled this machine's /dev/shm and the next training process was
OOM-killed. Unlinking the name once all ranks have opened each other's segment frees it when the last
process exits, however it exits (the mappings stay valid until then).
"""
from __future__ import annotations

import os
from pathlib import Path

SHM_DIR = Path("/dev/shm")
PREFIX = "deepspeed_allreduce_buffer"


def segment_path(rank: int) -> Path:
    """This run's segment for ``rank``, named as DeepSpeed's shm.cpp names it (from MASTER_ADDR/PORT)."""
    addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    return SHM_DIR / f"{PREFIX}_{os.getuid()}_{addr}_{port}_{rank}"


def unlink_own_segment(rank: int) -> bool:
    """Call after a barrier that follows ``deepspeed.init_distributed`` (so every rank has mapped every
    segment); True when a segment was unlinked."""
    try:
        segment_path(rank).unlink()
        return True
    except FileNotFoundError:  # no shm op (GPU, one process, no LOCAL_SIZE) or not Linux
        return False
