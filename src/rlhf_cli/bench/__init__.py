"""`rlhf bench [NAME ...] [key=value ...]`: throughput benchmarks (never timed tests).

Each benchmark is a ``BENCHES`` entry ``run(peak_gflops, opts) -> dict``; figures are printed as JSON
lines and reported as fractions of this machine's measured matmul peak.
"""
from rlhf_cli.algos.lazy import lazy_entry
from rlhf_cli.algos.registry import Registry

BENCHES = Registry("benchmark")
for _name in ("sft", "grpo", "rm", "dpo"):
    BENCHES.register(_name)(lazy_entry(f"rlhf_cli.bench.{_name}:run"))


def get_bench(name: str):
    from rlhf_cli.algos.registry import UnknownNameError
    from rlhf_cli.errors import ConfigError

    try:
        return BENCHES.get(name)
    except UnknownNameError as e:
        raise ConfigError(str(e)) from None
