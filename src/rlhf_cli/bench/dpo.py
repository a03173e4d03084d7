"""DPO training throughput (pairs/s) of SmolLM2-135M, with precomputed and with live reference log-probs."""
from __future__ import annotations

from rlhf_cli.bench.rm import pairs_bench


def run(peak_gflops: float, opts: dict) -> dict:
    # Policy forward + backward = 6 N FLOPs per token; a live reference adds a 2 N forward.
    pre = pairs_bench("dpo", "dpo", ["ref.precompute=true"], opts, peak_gflops, 6.0)
    live = pairs_bench("dpo", "dpo", ["ref.precompute=false"], opts, peak_gflops, 8.0)
    out = {k: v for k, v in pre.items() if k not in ("pairs_per_s", "tokens_per_s", "achieved_gflops",
                                                      "fraction_of_matmul_peak")}
    for tag, r in (("precomputed_ref", pre), ("live_ref", live)):
        for k in ("pairs_per_s", "tokens_per_s", "fraction_of_matmul_peak"):
            out[f"{tag}/{k}"] = r[k]
    return out
