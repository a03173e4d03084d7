"""The training loop shared by every stage that learns from a fixed dataset (sft, rm, dpo), and the
whole flow around it (eval split, prepare, resume, train, export, manifest: ``fit``).

A stage supplies a ``SupervisedTask``: how to collate rows, how much each micro-batch "weighs" (loss
tokens for SFT, pairs for RM/DPO), and its loss as a SUM over that weight plus metric sums. The loop
divides by the weight summed over the whole optimizer step and all processes, so the gradient is the
same however a step is split into micro-batches, processes or accumulation steps.
"""
from __future__ import annotations

import math
import random
import time
from typing import Callable, Dict, List, Protocol, Sequence, Tuple

import torch

from rlhf_cli.data.packing import epoch_order, micro_batches, step_micro_batches
from rlhf_cli.training.loop import run_steps
from rlhf_cli.training.runtime import RunContext, export_final, write_manifest


class SupervisedTask(Protocol):
    def collate(self, rows: Sequence) -> object: ...

    def weight(self, batch) -> float:
        """What the loss is averaged over (loss tokens, pairs...)."""

    def tokens(self, batch) -> Tuple[int, int]:
        """(real tokens, padded tokens) in the batch, for throughput and padding-fraction metrics."""

    def loss(self, model, batch) -> Tuple[torch.Tensor, Dict[str, float]]:
        """(loss summed over the batch's weight units, {metric: sum over the same units})."""


def plan_steps(cfg, num_rows: int, world: int) -> Tuple[int, int]:
    """(rows per optimizer step, total optimizer steps)."""
    t = cfg.train
    step_rows = t.micro_batch_size * t.grad_accum * world
    per_epoch = num_rows // step_rows
    if per_epoch == 0:
        from rlhf_cli.errors import DataError

        raise DataError(f"{cfg.data.path}: {num_rows} training rows are fewer than one step's "
                        f"{step_rows} (micro_batch_size x grad_accum x processes)")
    total = t.max_steps if t.max_steps > 0 else max(1, math.ceil(t.epochs * per_epoch))
    return step_rows, total


def rows_for_step(cfg, num_rows: int, step_rows: int, step: int) -> List[int]:
    per_epoch = num_rows // step_rows
    epoch, k = divmod(step, per_epoch)
    order = epoch_order(num_rows, cfg.seed, epoch, cfg.data.shuffle)
    return order[k * step_rows:(k + 1) * step_rows]


def reduce_metrics(ctx: RunContext, sums: Dict[str, float], weight: float) -> Dict[str, float]:
    """Metric sums over every process, divided by the summed weight (what they are averaged over)."""
    reduced = ctx.strategy.all_reduce_named({**sums, WEIGHT: weight})
    total = reduced.pop(WEIGHT) or 1.0
    return {k: v / total for k, v in reduced.items()}


WEIGHT = "\0weight"  # never a metric's name


@torch.no_grad()
def evaluate(ctx: RunContext, model, task: SupervisedTask, rows: Sequence) -> Dict[str, float]:
    cfg, strategy = ctx.cfg, ctx.strategy
    model.eval()
    mb = cfg.train.micro_batch_size
    batches = micro_batches(len(rows), mb)[strategy.rank::strategy.world_size]
    if cfg.train.eval_max_batches:
        batches = batches[: cfg.train.eval_max_batches]
    sums: Dict[str, float] = {}
    weight = 0.0
    for idx in batches:
        batch = task.collate([rows[i] for i in idx])
        _, stats = task.loss(model, batch)
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v
        weight += task.weight(batch)
    model.train()
    # every rank must join the same reduction even with no batches (uneven splits)
    return {f"eval/{k}": v for k, v in reduce_metrics(ctx, sums, weight).items()}


def train(ctx: RunContext, engine, task: SupervisedTask, rows: Sequence, eval_rows: Sequence,
          start_step: int, total_steps: int, step_rows: int) -> Dict[str, float]:
    """Run optimizer steps start_step+1..total_steps through the shared step loop; returns a summary."""
    cfg, strategy = ctx.cfg, ctx.strategy
    tokens_done = 0

    def one_step(step: int) -> Dict[str, float]:
        nonlocal tokens_done
        t0 = time.time()
        micro = step_micro_batches(rows, rows_for_step(cfg, len(rows), step_rows, step),
                                   cfg.train.micro_batch_size, strategy.world_size, strategy.rank)
        batches = [task.collate(m) for m in micro]
        local_weight = sum(task.weight(b) for b in batches)
        global_weight = strategy.all_reduce([local_weight])[0]
        sums: Dict[str, float] = {}
        real = pad = 0
        for batch in batches:
            loss_sum, stats = task.loss(engine, batch)
            engine.backward(loss_sum, weight=max(global_weight, 1.0))
            engine.step()
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            r, p = task.tokens(batch)
            real, pad = real + r, pad + p
        engine.end_update()
        metrics = reduce_metrics(ctx, sums, local_weight)
        real, pad = strategy.all_reduce([real, pad])
        dt = time.time() - t0
        tokens_done += real
        metrics.update(lr=engine.lr(), grad_norm=engine.grad_norm(), tokens_per_s=real / dt,
                       padding_fraction=pad / max(real + pad, 1), step_time=dt, **engine.fp16_metrics())
        if cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0 and eval_rows:
            metrics.update(evaluate(ctx, engine, task, eval_rows))
        return metrics

    engine.train()
    summary = run_steps(ctx, start_step, total_steps, one_step,
                        info=lambda m: f"loss {m.get('loss', float('nan')):.4f}  {m['tokens_per_s']:.0f} tok/s")
    step = summary["steps"]
    if eval_rows and not (cfg.train.eval_every and step % cfg.train.eval_every == 0):
        final_eval = evaluate(ctx, engine, task, eval_rows)
        ctx.metrics.write(step, final_eval)
        summary.update(final_eval)
    summary.update(train_tokens_this_run=tokens_done)
    return summary


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
    data = ctx.cfg.data
    items = load(data.path)
    if data.eval_path:
        return items, load(data.eval_path)
    return split_eval(items, data.eval_fraction, ctx.cfg.seed)


def fit(ctx: RunContext, model, tokenizer, task, rows: Sequence, eval_rows: Sequence,
        extra_files=None, summary_extra=None) -> dict:
    """prepare engine -> resume -> train -> export final/ -> manifest. Returns the summary."""
    strategy = ctx.strategy
    step_rows, total = plan_steps(ctx.cfg, len(rows), strategy.world_size)
    engine = strategy.prepare(model, total)
    state = ctx.resume()
    start = state["step"] if state else 0
    summary = train(ctx, engine, task, rows, eval_rows, start, total, step_rows)
    summary.update(summary_extra or {})
    # extra files may depend on the training summary (e.g. a reward model's score statistics)
    files = {name: text(summary) if callable(text) else text for name, text in (extra_files or {}).items()}
    final = export_final(ctx, engine, tokenizer, files)
    write_manifest(ctx, summary, {"data.path": ctx.cfg.data.path, "data.eval_path": ctx.cfg.data.eval_path})
    ctx.log(f"Done: {final}")
    return summary
