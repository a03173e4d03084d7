"""Supervised fine-tuning: next-token loss on assistant / completion tokens, packed rows by default."""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch

from rlhf_cli.algos.logprobs import token_logprobs
from rlhf_cli.data.packing import build_rows, collate, collate_flat
from rlhf_cli.data.sft import load_sft_examples
from rlhf_cli.models.forward import label_logprobs, lm_logits
from rlhf_cli.models.loading import load_causal_lm, load_tokenizer
from rlhf_cli.training.runtime import RunContext
from rlhf_cli.training.supervised import fit, load_train_eval


class SFTTask:
    def __init__(self, pad_id: int, packed: bool, device: torch.device, padding_free: bool = True):
        self.pad_id, self.packed, self.device, self.padding_free = pad_id, packed, device, padding_free

    def collate(self, rows: Sequence):
        if self.padding_free:
            return collate_flat(rows).to(self.device)
        return collate(rows, self.pad_id, self.packed).to(self.device)

    def weight(self, batch) -> float:
        return float(batch.num_loss_tokens)

    def tokens(self, batch) -> Tuple[int, int]:
        return batch.input_ids.numel() - batch.num_pad, batch.num_pad

    def loss(self, model, batch) -> Tuple[torch.Tensor, Dict[str, float]]:
        if self.padding_free:
            logps, _ = label_logprobs(model, batch.input_ids, batch.position_ids, batch.labels)
        else:
            logits = lm_logits(model, batch.input_ids, batch.position_ids, batch.attention_mask)
            logps = token_logprobs(logits, batch.labels)  # fp32 per chunk, 0 where label == IGNORE
        loss_sum = -logps.sum()
        return loss_sum, {"loss": float(loss_sum.detach())}


def run(ctx: RunContext) -> dict:
    cfg, strategy = ctx.cfg, ctx.strategy
    tokenizer = load_tokenizer(cfg.model)
    data = cfg.data
    stats = {}

    def load(path):
        examples, st = load_sft_examples(path, data, tokenizer, limit=data.limit if path == data.path else 0)
        stats[path] = st
        return examples

    train_ex, eval_ex = load_train_eval(ctx, load)
    rows = build_rows(train_ex, data.max_length, data.packing)
    eval_rows = build_rows(eval_ex, data.max_length, data.packing)
    st = stats[data.path]
    ctx.log(f"SFT data: {st.records} records ({st.skipped} skipped, {st.truncated} truncated) -> "
            f"{len(train_ex)} train / {len(eval_ex)} eval examples in {len(rows)} "
            f"{'packed ' if data.packing else ''}rows; "
            f"precision {strategy.precision}, {strategy.world_size} process(es), ZeRO-{cfg.engine.zero_stage}")
    model = load_causal_lm(cfg.model, tokenizer)
    task = SFTTask(tokenizer.pad_token_id, data.packing, strategy.device, data.padding_free)
    return fit(ctx, model, tokenizer, task, rows, eval_rows,
               summary_extra={"records_skipped": st.skipped, "records_truncated": st.truncated})
