"""The one training-time forward of a causal LM.

``use_cache=False`` is not an optimisation: transformers derives the per-example (block-diagonal) mask
of packed rows from restarting position_ids ONLY when no KV cache is passed, so a forward with the
cache on would silently let packed examples attend to each other.
"""
from __future__ import annotations

import torch


def lm_logits(model, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
              attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    return model(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                 use_cache=False).logits
