"""The one step loop every stage runs: a stage supplies what ONE optimizer step does; this module owns
the bookkeeping around it — progress bar, metrics row, periodic and signal-triggered checkpoints, the
stop flag, the non-finite guard and the summary.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, Optional

from rlhf_cli.errors import RlhfError
from rlhf_cli.training.runtime import Interrupted, Progress, RunContext

# Metrics whose non-finite value means the run is broken (a loss, or the gradient norm).
GUARDED = ("loss", "grad_norm")


class NonFiniteError(RlhfError):
    """A loss or gradient norm became NaN/inf; the run stops before checkpointing the broken weights."""

    exit_code = 3


def first_non_finite(metrics: Dict[str, Any], skip_grad_norm: bool = False) -> Optional[str]:
    """Name of the first guarded metric that is NaN or inf (every key ending in 'loss' counts)."""
    for key, value in metrics.items():
        guarded = key in GUARDED or key.endswith("loss") or key.endswith("_loss")
        if skip_grad_norm and key == "grad_norm":
            continue
        if guarded and isinstance(value, float) and not math.isfinite(value):
            return key
    return None


def run_steps(ctx: RunContext, start: int, total: int, step_fn: Callable[[int], Dict[str, Any]],
              info: Callable[[Dict[str, Any]], str], state: Callable[[], Dict[str, Any]] = dict,
              desc: Optional[str] = None) -> Dict[str, Any]:
    """Run optimizer steps ``start+1 .. total``; ``step_fn(k)`` does step k+1 (0-based k) and returns its
    metrics. ``state()`` is the stage's resumable position (e.g. a prompt cursor), saved with each
    checkpoint. Returns the summary (last metrics + steps and time)."""
    cfg, strategy = ctx.cfg, ctx.strategy
    progress = Progress(strategy.is_main and cfg.log.progress, total, start, desc or cfg.stage)
    summary: Dict[str, Any] = {}
    t_start = time.time()
    step = start
    try:
        while step < total:
            t0 = time.time()
            metrics = step_fn(step)
            step += 1
            metrics.setdefault("step_time", time.time() - t0)
            bad = first_non_finite(metrics, skip_grad_norm=strategy.precision == "fp16")  # fp16 skips overflow steps
            if bad is not None or step % cfg.train.log_every == 0 or step == total:
                ctx.metrics.write(step, metrics)
            if bad is not None:
                last = ctx.latest_checkpoint(required=False)
                where = f"last good checkpoint {last} (rerun to resume from it" if last else \
                    "no checkpoint was written yet (rerun from the start"
                raise NonFiniteError(f"step {step}: {bad} is {metrics[bad]}; stopped without saving; {where}, "
                                     "e.g. with a lower optim.lr)")
            progress.update(step, info(metrics))
            summary = {k: v for k, v in metrics.items() if v is not None}
            stop = ctx.should_stop()
            if stop or (cfg.train.save_every and step % cfg.train.save_every == 0 and step < total):
                strategy.save_checkpoint(ctx.ckpt_root, step, {"total_steps": total, **state()},
                                  cfg.train.keep_checkpoints)
            if stop:
                raise Interrupted(f"stopped at step {step}; checkpoint saved, rerun the same command to resume")
    finally:
        progress.close()
    summary.update(steps=step, train_seconds_this_run=time.time() - t_start)
    return summary
