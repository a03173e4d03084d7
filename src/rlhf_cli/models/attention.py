"""``sdpa_varlen``: SDPA that attends packed rows segment by segment, at exact causal cost.

A packed or padding-free row holds several examples, each restarting its position ids at 0. Stock
transformers turns such a row into a block-diagonal boolean mask, which takes SDPA off its causal fast
path: every query is scored against the whole row (a 1024-token row of four 256-token examples costs
4x the attention of the examples run alone) and the mask itself is T x T. Here each segment runs through
``scaled_dot_product_attention(is_causal=True)`` on its own, which is what flash-attention's varlen
kernel does on GPUs. Anything else — a padding mask, a KV cache, a sliding window — falls back to the
stock ``sdpa`` path, so this is a drop-in for every model that supports ``sdpa``.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "sdpa_varlen"

_last: Tuple[Optional[torch.Tensor], List[List[Tuple[int, int]]]] = (None, [])


def segments(position_ids: torch.Tensor) -> List[List[Tuple[int, int]]]:
    """Per row, the (start, end) of each run of consecutive positions (a new segment wherever the position
    does not follow its predecessor by one). Memoised for the tensor of the current forward: every layer
    asks with the same one."""
    global _last
    if _last[0] is position_ids:
        return _last[1]
    pos = position_ids.detach()
    breaks = torch.ones_like(pos, dtype=torch.bool)
    breaks[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    T = pos.shape[1]
    out = []
    for row in breaks.cpu():
        starts = row.nonzero().flatten().tolist()
        out.append(list(zip(starts, starts[1:] + [T])))
    _last = (position_ids, out)
    return out


def varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: Optional[float] = None, position_ids: Optional[torch.Tensor] = None,
                             **kwargs):
    q_len, kv_len = query.shape[2], key.shape[2]
    causal = getattr(module, "is_causal", True) and kwargs.get("is_causal", True) is not False
    if (attention_mask is not None or position_ids is None or q_len != kv_len or q_len < 2 or not causal
            or kwargs.get("position_bias") is not None or kwargs.get("cache") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      position_ids=position_ids, **kwargs)
    if position_ids.dim() == 1:
        position_ids = position_ids.unsqueeze(0)
    segs = segments(position_ids)
    if len(segs) == 1 and query.shape[0] > 1:  # one position row shared by the whole batch
        segs = segs * query.shape[0]
    groups = getattr(module, "num_key_value_groups", 1)
    gqa = {}
    if groups > 1:
        if query.device.type in ("cpu", "cuda"):
            gqa = {"enable_gqa": True}
        else:
            key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    p = dropout if module.training else 0.0
    if all(len(s) == 1 for s in segs):
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=p, scale=scaling, is_causal=True, **gqa)
    else:
        rows = []
        for b, row in enumerate(segs):
            parts = [F.scaled_dot_product_attention(query[b:b + 1, :, s:e], key[b:b + 1, :, s:e],
                                                    value[b:b + 1, :, s:e], dropout_p=p, scale=scaling,
                                                    is_causal=True, **gqa) for s, e in row]
            rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
        out = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
    return out.transpose(1, 2).contiguous(), None


def varlen_mask(batch_size: int, q_length: int, kv_length: int, *args, attention_mask=None, local_size=None,
                **kwargs):
    """No mask at all where the attention above derives it from position ids (no padding mask, no cache, no
    sliding window); the stock SDPA mask otherwise."""
    if attention_mask is None and local_size is None and q_length == kv_length:
        return None
    return sdpa_mask(batch_size, q_length, kv_length, *args, attention_mask=attention_mask, local_size=local_size,
                     **kwargs)


AttentionInterface.register(NAME, varlen_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, varlen_mask)
