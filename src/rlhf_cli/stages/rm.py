"""Reward model: a causal-LM backbone + scalar head, trained on preferences (pairs or K-wise rankings)
with Bradley-Terry / Plackett-Luce, or on step labels as a process reward model (BCE per step).

final/ is an ``AutoModelForSequenceClassification`` (num_labels=1) dir + ``reward_config.json``; see
``rlhf_cli.models.reward_model`` for the format and the scorer used by RL stages and ``rlhf eval rm-accuracy``.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from rlhf_cli.algos.reward_model import RM_LOSSES, process_bce
from rlhf_cli.data.preference import load_preferences
from rlhf_cli.data.preference_batch import collate_preferences
from rlhf_cli.models.loading import load_tokenizer
from rlhf_cli.models.reward_model import build_reward_model, last_token_scores, reward_config_text
from rlhf_cli.training.runtime import RunContext
from rlhf_cli.training.supervised import fit, load_train_eval


def ranking_stats(grid: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per item: fraction of strictly ordered pairs scored in the right order, and their mean score gap."""
    pair = valid.unsqueeze(2) & valid.unsqueeze(1) & (ranks.unsqueeze(2) < ranks.unsqueeze(1))
    gap = grid.unsqueeze(2) - grid.unsqueeze(1)  # [B, i, j] = s_i - s_j, i ranked better
    n = pair.sum(dim=(1, 2)).clamp(min=1)
    acc = (pair & (gap > 0)).sum(dim=(1, 2)) / n
    margin = torch.where(pair, gap, torch.zeros_like(gap)).sum(dim=(1, 2)) / n
    return acc, margin


def sequence_scores(values: torch.Tensor, batch) -> torch.Tensor:
    """[N]: every sequence's value at its last token, from per-position ``values`` shaped like the batch's
    input_ids (one row when padding-free, right-padded rows otherwise)."""
    if batch.last is not None:
        return values[0, batch.last]
    return last_token_scores(values, batch.attention_mask)


def preference_scores(values: torch.Tensor, batch) -> torch.Tensor:
    """[B, K] last-token scores of every candidate (0 where a candidate is absent)."""
    return sequence_scores(values, batch)[batch.index].masked_fill(~batch.valid, 0.0)


class RMTask:
    def __init__(self, rm_cfg, pad_id: int, device: torch.device, padding_free: bool = True):
        self.rm, self.pad_id, self.device, self.padding_free = rm_cfg, pad_id, device, padding_free
        self.process = rm_cfg.type == "process"

    def collate(self, rows):
        return collate_preferences(rows, self.pad_id, self.padding_free).to(self.device)

    def weight(self, batch) -> float:
        return float(batch.step_labels.numel() if self.process else batch.num_items)

    def tokens(self, batch) -> Tuple[int, int]:
        return batch.num_tokens, batch.num_pad

    def loss(self, model, batch) -> Tuple[torch.Tensor, Dict[str, float]]:
        values = model(batch.input_ids, batch.attention_mask, batch.position_ids)
        if self.process:
            logits = values[batch.step_rows, batch.step_cols]
            n = batch.step_labels.numel()
            loss_sum = process_bce(logits, batch.step_labels) * n
            right = ((logits > 0).float() == batch.step_labels).sum()
            return loss_sum, {"loss": float(loss_sum.detach()), "step_accuracy": float(right)}
        grid = preference_scores(values, batch)
        available = {"margin": batch.margin, "centering_coef": self.rm.centering_coef, "prob": batch.prob}
        options = {k: available[k] for k in RM_LOSSES.meta(self.rm.loss).get("options", ())}
        losses = RM_LOSSES.get(self.rm.loss)(grid, batch.ranks, batch.valid, **options)
        loss_sum = losses.sum()
        g = grid.detach()
        acc, margin = ranking_stats(g, batch.ranks, batch.valid)
        v = batch.valid.float()
        mean_item = (g * v).sum(1) / v.sum(1)
        flat = g[batch.valid]
        return loss_sum, {"loss": float(loss_sum.detach()), "accuracy": float(acc.sum()),
                          "margin": float(margin.sum()), "reward_mean": float(mean_item.sum()),
                          "reward_std": float(flat.std(unbiased=False)) * batch.num_items}


def load_preference_splits(ctx: RunContext, tokenizer, kind: str, step_delimiter: str = "\n"):
    """Train/eval items for rm/dpo with the data summary logged; returns (train, eval, stats)."""
    data = ctx.cfg.data
    stats = {}

    def load(path):
        items, st = load_preferences(path, data, tokenizer, kind, limit=data.limit if path == data.path else 0,
                                     seed=ctx.cfg.seed, step_delimiter=step_delimiter)
        stats[path] = st
        return items

    train, evals = load_train_eval(ctx, load)
    st = stats[data.path]
    soft = f", {st.soft} pairs with soft labels ({data.prob_field})" if st.soft else ""
    ctx.log(f"{ctx.cfg.stage} data: {st.records} records ({st.skipped} skipped, {st.truncated} truncated{soft}) -> "
            f"{len(train)} train / {len(evals)} eval examples; precision {ctx.strategy.precision}, "
            f"{ctx.strategy.world_size} process(es), ZeRO-{ctx.cfg.engine.zero_stage}")
    return train, evals, st


def run(ctx: RunContext) -> dict:
    cfg, strategy = ctx.cfg, ctx.strategy
    tokenizer = load_tokenizer(cfg.model)
    kind = "process" if cfg.rm.type == "process" else "outcome"
    train, evals, st = load_preference_splits(ctx, tokenizer, kind, cfg.rm.step_delimiter)
    model = build_reward_model(cfg.model, tokenizer, cfg.seed)
    task = RMTask(cfg.rm, tokenizer.pad_token_id, strategy.device, cfg.data.padding_free)
    extra = {"reward_config.json": lambda summary: reward_config_text(cfg.rm, cfg.data, cfg.data.max_length,
                                                                       summary)}
    return fit(ctx, model, tokenizer, task, train, evals, extra_files=extra,
               summary_extra={"records_skipped": st.skipped, "records_truncated": st.truncated,
                             "pairs_soft_labels": st.soft})
