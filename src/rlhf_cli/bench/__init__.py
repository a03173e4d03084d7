"""`rlhf bench [NAME ...] [key=value ...]`: throughput benchmarks (never timed tests).

Each benchmark is ``run(peak_gflops, opts) -> dict``; figures are printed as JSON lines and reported
as fractions of this machine's measured matmul peak.
"""
import importlib

BENCHES = {
    # name: "module:function"
    "sft": "rlhf_cli.bench.sft:run",
    "grpo": "rlhf_cli.bench.grpo:run",
    "rm": "rlhf_cli.bench.rm:run",
    "dpo": "rlhf_cli.bench.dpo:run",
}


def get_bench(name: str):
    module, _, fn = BENCHES[name].partition(":")
    return getattr(importlib.import_module(module), fn)
