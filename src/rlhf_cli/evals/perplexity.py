"""`rlhf eval perplexity model=RUN_OR_DIR data=heldout.jsonl [max_length=1024 batch_size=8 limit=N]`:
perplexity of held-out text.

Records are read like SFT data (``messages`` | ``prompt`` + ``completion`` | ``text``, see data/sft.py) and
scored on the same tokens SFT trains on (assistant turns, completions, or all text; EOS included):
``ppl = exp(sum NLL / tokens)`` over all scored tokens of the file (token-weighted, not a mean of
per-example perplexities), with ``nll_per_token`` and ``bits_per_token = nll / ln 2``.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Sequence

import torch

from rlhf_cli.config.options import parse_kv
from rlhf_cli.errors import ConfigError

OPTIONS = {"model": str, "data": str, "max_length": int, "batch_size": int, "limit": int, "format": str,
           "messages_field": str, "prompt_field": str, "completion_field": str, "text_field": str,
           "template": str}


@torch.no_grad()
def nll_sum(lm, examples, pad_id: int, batch_size: int):
    """(sum of -log p over scored tokens, number of scored tokens) for right-padded batches."""
    from rlhf_cli.algos.logprobs import token_logprobs
    from rlhf_cli.models.forward import lm_logits

    device = next(lm.parameters()).device
    total, count = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    for k in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[k:k + batch_size]]
        T = max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), T), pad_id, dtype=torch.long)
        attn = torch.zeros((len(chunk), T), dtype=torch.long)
        labels = torch.full((len(chunk), T), -100, dtype=torch.long)
        for r, e in enumerate(chunk):
            n = len(e.input_ids)
            ids[r, :n] = torch.tensor(e.input_ids)
            attn[r, :n] = 1
            m = torch.tensor(e.loss_mask[1:], dtype=torch.bool)
            labels[r, :n - 1] = torch.where(m, ids[r, 1:n], torch.tensor(-100))
        logits = lm_logits(lm, ids.to(device), (attn.cumsum(-1) - 1).clamp(min=0).to(device), attn.to(device))
        lp = token_logprobs(logits[:, :-1], labels[:, :-1].to(device))
        total -= float(lp.sum())
        count += int((labels[:, :-1] != -100).sum())
    return total, count


def run(words: Sequence[str]) -> dict:
    from rlhf_cli.config.stages import SFTDataConfig
    from rlhf_cli.data.readers import resolve_data_path
    from rlhf_cli.data.sft import load_sft_examples
    from rlhf_cli.models.loading import load_for_generation

    o = {"max_length": 1024, "batch_size": 8, "limit": 0}
    o.update(parse_kv(words, OPTIONS, "eval perplexity"))
    if not o.get("model") or not o.get("data"):
        raise ConfigError("eval perplexity: needs model=RUN_OR_MODEL_DIR data=FILE (text, messages or "
                          "prompt/completion records)")
    d = SFTDataConfig(path=o["data"])
    for key in ("format", "template", "messages_field", "prompt_field", "completion_field", "text_field"):
        if key in o:
            setattr(d, key, o[key])
    dcfg = SimpleNamespace(**{**d.__dict__, "max_length": o["max_length"], "skip_bad": False})
    lm, tok = load_for_generation(o["model"])
    examples, stats = load_sft_examples(resolve_data_path(o["data"], key="data"), dcfg, tok, limit=o["limit"])
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    total, count = nll_sum(lm, examples, pad, o["batch_size"])
    nll = total / count
    return {"model": o["model"], "data": o["data"], "examples": len(examples), "tokens": count,
            "perplexity": math.exp(nll), "nll_per_token": nll, "bits_per_token": nll / math.log(2),
            "records_truncated": stats.truncated, "records_skipped": stats.skipped}
