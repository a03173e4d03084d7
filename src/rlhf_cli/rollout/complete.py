"""Sample text completions of chat prompts on the rollout engine (for labelling and evals).

``sample_texts`` renders each prompt through the tokenizer's chat template (``data.prompts.encode_prompt``)
and samples ``n`` responses per prompt with ``rollout.generate.generate`` (KV cache, batched). With
``per_prompt_seed`` every prompt gets its own generator seeded from (seed, prompt index), so the samples of
a prompt do not depend on which other prompts are in the call (a resumed labelling session shows the same
candidates again).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from rlhf_cli.rollout.generate import eos_ids, generate
from rlhf_cli.rollout.sampling import SamplingParams


def _ids(tok, messages) -> List[int]:
    from rlhf_cli.data.prompts import encode_prompt

    return encode_prompt(tok, messages)


def sample_texts(lm, tok, prompts: Sequence[list], n: int, params: SamplingParams, seed: int = 0,
                 batch_size: int = 16, per_prompt_seed: bool = True,
                 indices: Optional[Sequence[int]] = None) -> List[List[str]]:
    """prompts: chat message lists -> ``n`` decoded responses per prompt (special tokens removed)."""
    eos = eos_ids(tok, lm)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    device = next(lm.parameters()).device
    ids = [_ids(tok, m) for m in prompts]
    out: List[List[str]] = []
    if per_prompt_seed:
        for j, p in enumerate(ids):
            idx = indices[j] if indices is not None else j
            g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + idx)
            batch = generate(lm, [p] * n, params, eos_token_ids=eos, pad_id=pad, tokenizer=tok, generator=g,
                             batch_size=batch_size)
            out.append([t.strip() for t in batch.texts(tok)])
        return out
    g = torch.Generator(device=device).manual_seed(seed)
    flat = [p for p in ids for _ in range(n)]
    batch = generate(lm, flat, params, eos_token_ids=eos, pad_id=pad, tokenizer=tok, generator=g,
                     batch_size=batch_size)
    texts = [t.strip() for t in batch.texts(tok)]
    return [texts[i * n:(i + 1) * n] for i in range(len(ids))]
