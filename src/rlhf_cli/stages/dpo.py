"""DPO family: dpo, cdpo, ipo, simpo (paired) and kto (unpaired) on a frozen reference.

Chosen and rejected rows of a micro-batch go through the policy in ONE concatenated forward (2B right-
padded rows); per-token log-probs come from a chunked log-softmax gather (``algos.logprobs``), summed
over answer tokens (ipo/simpo: averaged). Reference log-probs are either precomputed once before
training (``ref.precompute=true``: each process scores its share of the examples, the shares are
all-gathered, the reference model is freed, and the numbers are cached in output_dir/ref_logps.json for
resumes) or computed live per batch by a frozen copy (ZeRO-3 sharded under engine=zero3).
KTO pairs every prompt with another example's answer (fixed at load time) for its KL reference point,
averaged over all processes.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Tuple

import torch

from rlhf_cli.algos.logprobs import token_logprobs
from rlhf_cli.algos.preference import DPO_LOSSES, kto_kl_reference_point, loss_spec, soft_label_losses
from rlhf_cli.data.packing import IGNORE
from rlhf_cli.data.preference import PrefItem
from rlhf_cli.data.preference_batch import collate_preferences
from rlhf_cli.models.forward import label_logprobs, lm_logits
from rlhf_cli.models.loading import load_causal_lm, load_reference, load_tokenizer
from rlhf_cli.models.lora import reference_by_disabled_adapter
from rlhf_cli.output_files import write_output
from rlhf_cli.stages.rm import load_preference_splits
from rlhf_cli.training.reference import Reference, describe, reference_is_base
from rlhf_cli.training.runtime import RunContext
from rlhf_cli.training.supervised import fit


def sequence_logps(model, batch, chunk_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(sum of answer-token log-probs [N], number of answer tokens [N]) for every sequence of the batch."""
    if batch.seq_ids is not None:  # padding-free: one row, the LM head only where there are answer tokens
        logps, keep = label_logprobs(model, batch.input_ids, batch.position_ids, batch.labels, chunk_size)
        seq, n = batch.seq_ids[keep], batch.num_sequences
        counts = torch.bincount(seq[batch.labels[0, keep] != IGNORE], minlength=n)
        return logps.new_zeros(n).index_add(0, seq, logps), counts.clamp(min=1)
    logits = lm_logits(model, batch.input_ids, None, batch.attention_mask)
    logps = token_logprobs(logits, batch.labels, chunk_size)  # 0 where label == IGNORE
    return logps.sum(-1), (batch.labels != IGNORE).sum(-1).clamp(min=1)


def loss_kwargs(d, spec: dict) -> dict:
    """The ``dpo.*`` fields the chosen loss declares as its options (null = the loss's own default)."""
    return {k: d[k] for k in spec["options"] if d[k] is not None}


class DPOTask:
    def __init__(self, ctx: RunContext, pad_id: int, ref=None, ref_is_base: bool = False):
        self.dpo, self.strategy, self.pad_id, self.ref = ctx.cfg.dpo, ctx.strategy, pad_id, ref
        self.padding_free = ctx.cfg.data.padding_free
        self.spec = loss_spec(self.dpo.loss)
        self.fn, self.kwargs = DPO_LOSSES.get(self.dpo.loss), loss_kwargs(self.dpo, self.spec)
        self.ref_is_base = ref_is_base  # LoRA: the reference is the policy with its adapter disabled

    def collate(self, rows):
        return collate_preferences(rows, self.pad_id, self.padding_free).to(self.strategy.device)

    def weight(self, batch) -> float:
        return float(batch.num_items)

    def tokens(self, batch) -> Tuple[int, int]:
        return batch.num_tokens, batch.num_pad

    def reference(self, batch, model=None) -> Optional[torch.Tensor]:
        if not self.spec["reference"]:
            return None
        if self.ref_is_base:
            with torch.no_grad(), reference_by_disabled_adapter(model):
                return sequence_logps(model, batch, self.dpo.logprob_chunk_size)[0]
        if self.ref is None:
            return batch.ref_logps
        with torch.no_grad():
            return sequence_logps(self.ref, batch, self.dpo.logprob_chunk_size)[0]

    def loss(self, model, batch) -> Tuple[torch.Tensor, Dict[str, float]]:
        dpo = self.dpo
        ref = self.reference(batch, model)
        pol, count = sequence_logps(model, batch, dpo.logprob_chunk_size)
        if self.spec["data"] == "unpaired":
            return self.unpaired(pol, ref, batch)
        if self.spec["length_averaged"]:
            pol, ref = pol / count, (None if ref is None else ref / count)
        c, r = batch.index[:, 0], batch.index[:, 1]
        args = (pol[c], pol[r], None if ref is None else ref[c], None if ref is None else ref[r])
        if batch.prob is not None:  # soft labels (data.prob_field): the loss averaged over both label orders
            losses, cr, rr = soft_label_losses(self.fn, batch.prob, *args, beta=dpo.beta, **self.kwargs)
        else:
            losses, cr, rr = self.fn(*args, beta=dpo.beta, **self.kwargs)
        loss_sum = losses.sum()
        return loss_sum, {"loss": float(loss_sum.detach()), "reward/chosen": float(cr.sum()),
                          "reward/rejected": float(rr.sum()), "reward/margin": float((cr - rr).sum()),
                          "accuracy": float((cr > rr).sum()), "logps/chosen": float(pol[c].detach().sum()),
                          "logps/rejected": float(pol[r].detach().sum())}

    def unpaired(self, pol, ref, batch):
        """KTO-style: each row is one completion labelled desirable or not, plus a mismatched row for the
        KL reference point z0."""
        dpo = self.dpo
        m, k = batch.index[:, 0], batch.index[:, 1]
        z0 = kto_kl_reference_point(pol[k].detach(), ref[k], clamp=False)
        if torch.is_grad_enabled() and self.strategy.world_size > 1:  # training: every process joins; eval: local
            z0 = torch.tensor(self.strategy.all_reduce([float(z0)])[0] / self.strategy.world_size)
        z0 = z0.clamp(min=0)
        losses, rewards = self.fn(pol[m], ref[m], batch.label, z0, beta=dpo.beta, **self.kwargs)
        loss_sum = losses.sum()
        right = ((rewards > float(dpo.beta * z0)) == batch.label).sum()
        return loss_sum, {"loss": float(loss_sum.detach()), "kl": float(z0) * batch.num_items,
                          "accuracy": float(right), "reward/mean": float(rewards.sum()),
                          "logps/mean": float(pol[m].detach().sum())}


@torch.no_grad()
def precompute_reference(ctx: RunContext, ref, splits: List[List[PrefItem]], pad_id: int) -> None:
    """Fill ``item.ref_logps`` for every example: each process scores its share, then all-gather."""
    strategy, cfg = ctx.strategy, ctx.cfg
    for items in splits:
        mine = sorted(range(strategy.rank, len(items), strategy.world_size), key=lambda i: -len(items[i]))
        out = {}
        for k in range(0, len(mine), cfg.ref.batch_size):
            chunk = mine[k:k + cfg.ref.batch_size]
            batch = collate_preferences([items[i] for i in chunk], pad_id, cfg.data.padding_free).to(strategy.device)
            sums = sequence_logps(ref, batch, cfg.dpo.logprob_chunk_size)[0].float().cpu()
            for j, i in enumerate(chunk):
                out[i] = [float(sums[batch.index[j, c]]) for c in range(len(items[i].seqs))]
        out = {i: v for share in strategy.all_gather_object(out) for i, v in share.items()}
        for i, v in out.items():
            items[i].ref_logps = v


def reference_cache_key(cfg) -> str:
    """Everything the cached reference log-probs depend on: the reference weights (ref.path, else the
    starting model), the data and its tokenisation, the split. A cache with another key is recomputed."""
    from omegaconf import OmegaConf

    keys = {"ref": cfg.ref.path, "model": OmegaConf.to_container(cfg.model), "data": OmegaConf.to_container(cfg.data),
            "seed": cfg.seed, "precision": cfg.precision}
    return json.dumps(keys, sort_keys=True)


def read_reference_cache(cache, key: str, splits: List[List[PrefItem]]) -> Optional[list]:
    """The cached values if ``cache`` is a complete cache for ``key`` matching the data's shape, else None."""
    try:
        saved = json.loads(cache.read_text())
        values = saved["values"]
        ok = saved.get("key") == key and len(values) == len(splits) and all(
            len(v) == len(items) and all(isinstance(x, list) and len(x) == len(it.seqs) for x, it in zip(v, items))
            for v, items in zip(values, splits))
        return values if ok else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def reference_logps(ctx: RunContext, tokenizer, splits: List[List[PrefItem]], policy=None) -> None:
    """Precomputed reference log-probs, from output_dir/ref_logps.json when a resumed run saved them
    for the same reference model and data (checked by key and shape). A torn, stale or unreadable cache
    is rebuilt, never fatal; the cache is plain JSON written atomically (nothing is unpickled). With LoRA
    (``policy``) the reference is the policy with its adapter disabled: no second copy."""
    cache, key = ctx.out / "ref_logps.json", reference_cache_key(ctx.cfg)
    saved = read_reference_cache(cache, key, splits)
    if saved is not None:
        for items, values in zip(splits, saved):
            for it, v in zip(items, values):
                it.ref_logps = v
        ctx.log(f"Reference log-probs loaded from {cache}")
        return
    if cache.exists():
        ctx.log(f"{cache}: stale or unreadable, recomputing the reference log-probs")
    if policy is not None:
        policy.to(device=ctx.strategy.device, dtype=ctx.strategy.dtype).eval()
        with reference_by_disabled_adapter(policy):
            precompute_reference(ctx, policy, splits, tokenizer.pad_token_id)
        policy.train()
    else:
        ref = load_reference(ctx.cfg, tokenizer).to(device=ctx.strategy.device, dtype=ctx.strategy.dtype).eval()
        ctx.log(f"Reference model loaded: {describe(ctx.cfg)} (freed after precomputing)")
        precompute_reference(ctx, ref, splits, tokenizer.pad_token_id)
        del ref
    if ctx.strategy.is_main:
        write_output(cache, json.dumps({"key": key, "values": [[it.ref_logps for it in items] for items in splits]}))
    ctx.log(f"Reference log-probs precomputed for {sum(len(x) for x in splits)} examples")


def run(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    tokenizer = load_tokenizer(cfg.model)
    spec = loss_spec(cfg.dpo.loss)
    train, evals, st = load_preference_splits(ctx, tokenizer, "kto" if spec["data"] == "unpaired" else "pairs")
    base_ref = reference_is_base(cfg)  # LoRA without ref.path: the policy with its adapter disabled
    model = load_causal_lm(cfg.model, tokenizer) if base_ref else None
    live = spec["reference"] and not cfg.ref.precompute  # SimPO is reference-free
    if spec["reference"] and cfg.ref.precompute:
        reference_logps(ctx, tokenizer, [train, evals], policy=model)
    # a separate live reference is prepared before the policy (ZeRO-3 partitions it first); the disabled
    # adapter is the policy engine itself, which DPOTask is handed with every batch
    ref = Reference(ctx, tokenizer, needed=live).model
    model = model if model is not None else load_causal_lm(cfg.model, tokenizer)
    task = DPOTask(ctx, tokenizer.pad_token_id, ref, ref_is_base=base_ref and live)
    return fit(ctx, model, tokenizer, task, train, evals,
               summary_extra={"records_skipped": st.skipped, "records_truncated": st.truncated,
                             "pairs_soft_labels": st.soft})
