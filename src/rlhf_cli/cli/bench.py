"""`rlhf bench`: measure the matmul peak once, then run the named (default: all) benchmarks."""
from __future__ import annotations

import json
from typing import Optional, Sequence

from rlhf_cli.config.options import parse_kv
from rlhf_cli.config.ranges import Range
from rlhf_cli.errors import ConfigError

# Options the benchmarks read (bench/*.py), with their allowed ranges.
OPTIONS = {"seq": (int, Range(ge=8)), "steps": (int, Range(ge=1)), "micro_batch": (int, Range(ge=1)),
           "prompts": (int, Range(ge=1)), "generations": (int, Range(ge=2)), "tokens": (int, Range(ge=1)),
           "epochs": (int, Range(ge=1)), "compile": bool, "limit": (int, Range(ge=8)), "rounds": (int, Range(ge=1)),
           "warmup": (int, Range(ge=0)),
           # --vs trl: the data set (bench/data.py: hh | gsm8k) and TRL's activation checkpointing (false | true | both)
           "data": str, "trl_gc": str}


def run_bench(words: Sequence[str], vs: Optional[str] = None) -> None:
    import torch

    from rlhf_cli.bench import BENCHES, get_bench
    from rlhf_cli.bench.peak import matmul_peak_gflops
    from rlhf_cli.quiet import quiet_libraries

    quiet_libraries(False)
    names = [w for w in words if "=" not in w]
    if vs:
        from rlhf_cli.bench.peer_trl import require_trl
        from rlhf_cli.bench.vs import DEFAULTS, run_vs

        if vs != "trl":
            raise ConfigError(f"--vs {vs}: the only peer is 'trl'")
        names = names or list(DEFAULTS)
        for n in names:
            if n not in DEFAULTS:
                raise ConfigError(f"--vs trl compares {', '.join(DEFAULTS)}; not '{n}'")
        require_trl()  # fail before the long peak measurement
        benches = []
    else:
        names = names or BENCHES.names()
        benches = [get_bench(n) for n in names]  # unknown names fail before the long peak measurement
    allowed = dict(OPTIONS)
    for n in names:  # a benchmark registered with options={key: type} adds its own
        allowed.update(BENCHES.meta(n).get("options", {}))
    opts = parse_kv([w for w in words if "=" in w], allowed, "bench")
    peak = matmul_peak_gflops()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads"
    print(json.dumps({"bench": "matmul_peak", "device": device, "gflops": round(peak, 1)}), flush=True)
    if vs:
        run_vs(vs, names, opts)
    for fn in benches:
        print(json.dumps(fn(peak, opts)), flush=True)
