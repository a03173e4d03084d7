"""The one training-time forward of a causal LM.

``use_cache=False`` is not an optimisation: transformers derives the per-example (block-diagonal) mask
of packed rows from restarting position_ids ONLY when no KV cache is passed, so a forward with the
cache on would silently let packed examples attend to each other.
"""
from __future__ import annotations

from typing import Optional

import torch

from rlhf_cli.algos.logprobs import token_logprobs
from rlhf_cli.data.packing import IGNORE


def lm_logits(model, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
              attention_mask: torch.Tensor | None = None, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Logits ``[B, T, V]``; with ``keep`` (sequence positions), only those ``[B, len(keep), V]``: the LM
    head and its vocabulary-wide softmax are skipped where no loss is taken."""
    extra = {} if keep is None else {"logits_to_keep": keep}
    return model(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                 use_cache=False, **extra).logits


def label_logprobs(model, input_ids: torch.Tensor, position_ids: torch.Tensor, labels: torch.Tensor,
                   chunk_size: int = 1024):
    """``(log p(label) [K], positions [K])`` at the K positions of a ONE-row (padding-free) batch whose label
    is not IGNORE. Only those positions go through the LM head: in SFT and DPO the prompt tokens (often
    half a row) carry no loss, and the head is a fifth of a small model's FLOPs."""
    keep = (labels[0] != IGNORE).nonzero().squeeze(1)
    if keep.numel() == 0:  # keep one (ignored) position so the loss stays attached to the graph
        keep = keep.new_zeros(1)
    logits = lm_logits(model, input_ids, position_ids, None, keep=keep)
    return token_logprobs(logits, labels[:, keep], chunk_size)[0], keep
