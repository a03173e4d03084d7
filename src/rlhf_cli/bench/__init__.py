"""`rlhf bench [NAME ...] [key=value ...]`: throughput benchmarks (never timed tests).

Each benchmark is a ``BENCHES`` entry ``run(peak_gflops, opts) -> dict``; figures are printed as JSON
lines and reported as fractions of this machine's measured matmul peak.
"""
from rlhf_cli.registry import Registry, lazy_entry

BENCHES = Registry("benchmark")
for _name in ("sft", "grpo", "rm", "dpo", "ppo"):
    BENCHES.register(_name)(lazy_entry(f"rlhf_cli.bench.{_name}:run"))


def get_bench(name: str):
    from rlhf_cli.errors import ConfigError
    from rlhf_cli.registry import UnknownNameError

    try:
        return BENCHES.get(name)
    except UnknownNameError as e:
        raise ConfigError(str(e)) from None
