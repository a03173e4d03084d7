"""This machine's measured matmul peak: the yardstick for every throughput figure."""
from __future__ import annotations

import resource
import time

import torch


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, dtype=None) -> float:
    """Best-of-N square GEMM rate (GFLOP/s) with the current thread count, fp32 on CPU, bf16 on GPU."""
    cuda = torch.cuda.is_available()
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    if cuda:
        n = max(n, 8192)
    dev = "cuda" if cuda else "cpu"
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def sustained_matmul_gflops(seconds: float = 3.0, n: int = 2048) -> float:
    """The same fp32 square GEMM back to back for ``seconds``: the mean rate (GFLOP/s, CPU only).

    ``matmul_peak_gflops`` keeps the best 0.1 s burst, which on a shared VM catches its fastest moments
    (112-170 GFLOP/s within one hour here); this is what a pure GEMM loop holds over a stretch as long
    as a benchmark's steps, measured next to them: a diagnostic beside the peak, never a replacement."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    count, t0 = 0, time.perf_counter()
    while True:
        a @ b
        count += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return 2 * n**3 * count / elapsed / 1e9


def cpu_times() -> tuple:
    """(steal, total) CPU jiffies since boot from /proc/stat ((0, 0) where there is none). Steal is time the
    hypervisor gave this VM's CPUs to its neighbours: the share of it during a run says how quiet the machine
    was, which the matmul peak (best of a few 0.1 s bursts) does not."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_fraction(before: tuple, after: tuple) -> float:
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total > 0 else 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
