"""keep_freed_memory: applied on Linux/glibc (this project's CI), a harmless no-op elsewhere."""
import platform
import sys

import torch

from rlhf_cli.engine.host_memory import keep_freed_memory


def test_applied_on_glibc_and_big_allocations_still_work():
    applied = keep_freed_memory()
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert applied is True
    for _ in range(3):  # blocks well above glibc's default 128 KiB mmap threshold, freed and reused
        x = torch.ones(64, 1024, 1024)
        assert float(x.sum()) == 64 * 1024 * 1024
        del x
