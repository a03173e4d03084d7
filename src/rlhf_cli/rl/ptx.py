"""PPO-ptx (InstructGPT, Ouyang et al. 2022 eq. 2): SFT batches mixed into the policy update, drawn in a
seeded order that resume reproduces."""
from __future__ import annotations

import torch

from rlhf_cli.data.packing import collate
from rlhf_cli.rl.prompts import PromptStream
from rlhf_cli.training.runtime import RunContext


class PTXStream:
    """The SFT loss rows of ``path`` (any SFT data shape), packed to ``data.max_length``."""

    def __init__(self, ctx: RunContext, tokenizer, path: str, cursor: int = 0):
        from omegaconf import OmegaConf

        from rlhf_cli.config.stages import SFTDataConfig
        from rlhf_cli.data.packing import build_rows
        from rlhf_cli.data.sft import load_sft_examples

        cfg = ctx.cfg
        dcfg = OmegaConf.structured(SFTDataConfig(path=path, max_length=cfg.data.max_length))
        examples, _ = load_sft_examples(path, dcfg, tokenizer)
        self.rows = build_rows(examples, cfg.data.max_length, packing=True)
        self.stream = PromptStream(len(self.rows), cfg.seed + 1, True, cursor)
        self.ctx, self.pad_id = ctx, tokenizer.pad_token_id

    def take(self, n_micro: int):
        """``n_micro`` collated micro-batches for this process and the global loss-token count."""
        strategy, mbs = self.ctx.strategy, self.ctx.cfg.train.micro_batch_size
        idx = self.stream.take(n_micro * mbs * strategy.world_size)  # every rank advances the cursor identically
        mine = idx[strategy.rank * n_micro * mbs:(strategy.rank + 1) * n_micro * mbs]
        batches = [collate([self.rows[i] for i in mine[k:k + mbs]], self.pad_id, True).to(strategy.device)
                   for k in range(0, len(mine), mbs)]
        tokens = strategy.all_reduce([float(sum(b.num_loss_tokens for b in batches))])[0]
        return batches, max(tokens, 1.0)


def ptx_loss(actor, batch, tokens: float, chunk_size: int) -> torch.Tensor:
    """SFT negative log-likelihood of one ptx micro-batch, divided by the global ptx token count."""
    from rlhf_cli.algos.logprobs import token_logprobs
    from rlhf_cli.models.forward import lm_logits

    logits = lm_logits(actor, batch.input_ids, batch.position_ids, batch.attention_mask)
    return -token_logprobs(logits, batch.labels, chunk_size).sum() / tokens
