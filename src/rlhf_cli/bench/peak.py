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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model_params(path_or_model) -> int:
    return sum(p.numel() for p in path_or_model.parameters())
