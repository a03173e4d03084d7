"""Setup steps shared by the dataset-driven stages: eval split, resume, the whole fit-and-export flow."""
from __future__ import annotations

import random
from typing import Callable, List, Sequence, Tuple

from rlhf_cli.stages import supervised
from rlhf_cli.stages.runtime import RunContext, export_final, write_manifest


def split_eval(items: List, fraction: float, seed: int) -> Tuple[List, List]:
    """Deterministic held-out split: the same (seed, data) always gives the same eval set."""
    if fraction <= 0 or len(items) < 2:
        return items, []
    idx = list(range(len(items)))
    random.Random(seed).shuffle(idx)
    n_eval = max(1, int(round(fraction * len(items))))
    eval_idx = set(idx[:n_eval])
    return [x for i, x in enumerate(items) if i not in eval_idx], [x for i, x in enumerate(items) if i in eval_idx]


def load_train_eval(ctx: RunContext, load: Callable[[str], List]) -> Tuple[List, List]:
    """``load(path)`` -> items; eval from data.eval_path, else a data.eval_fraction split of data.path."""
    d = ctx.cfg.data
    items = load(d.path)
    if d.eval_path:
        return items, load(d.eval_path)
    return split_eval(items, d.eval_fraction, ctx.cfg.seed)


def fit(ctx: RunContext, model, tokenizer, task, rows: Sequence, eval_rows: Sequence,
        extra_files=None, summary_extra=None) -> dict:
    """prepare engine -> resume -> train -> export final/ -> manifest. Returns the summary."""
    s = ctx.strategy
    step_rows, total = supervised.plan_steps(ctx.cfg, len(rows), s.world_size)
    engine = s.prepare(model, total)
    state = ctx.resume()
    start = state["step"] if state else 0
    summary = supervised.train(ctx, engine, task, rows, eval_rows, start, total, step_rows)
    summary.update(summary_extra or {})
    final = export_final(ctx, engine, tokenizer, extra_files)
    write_manifest(ctx, summary, {"data.path": ctx.cfg.data.path, "data.eval_path": ctx.cfg.data.eval_path})
    ctx.log(f"Done: {final}")
    return summary
