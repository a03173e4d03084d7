"""`rlhf eval kl model=POLICY ref=REFERENCE data=prompts.jsonl [samples=4 max_new_tokens=128 ...]`: how far a
policy has moved from its reference, as the mean sequence-level KL(pi || ref) on responses it samples.

For each prompt x, ``samples`` responses y ~ pi (temperature ``temperature``, default 1: the policy itself)
are scored by both models with teacher forcing, at the same temperature. Reported, as means over samples:

- ``kl``: sum_t [log pi(y_t | x, y_<t) - log ref(y_t | x, y_<t)] -- the k1 estimator of
  KL(pi(.|x) || ref(.|x)) over whole responses (unbiased, can be negative on one sample; Schulman 2020,
  "Approximating KL divergence");
- ``kl_full``: sum_t KL(pi(.|x, y_<t) || ref(.|x, y_<t)) with the per-position KL computed exactly over the
  vocabulary: also unbiased for the sequence KL (the chain rule of KL), >= 0 and of lower variance;
- ``kl_k3``: sum_t k3 (Schulman 2020; GRPO's estimator), >= 0;
plus per-token means (sums over all response tokens / their count) and the standard error of ``kl``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from rlhf_cli.config.options import parse_kv
from rlhf_cli.errors import ConfigError

OPTIONS = {"model": str, "ref": str, "data": str, "prompt_field": str, "system": str, "limit": int, "samples": int,
           "max_new_tokens": int, "temperature": float, "seed": int, "batch_size": int}


def response_logits(lm, batch, temperature: float) -> torch.Tensor:
    """[N, L, V] fp32 logits (divided by the temperature) that predict each response token."""
    from rlhf_cli.models.forward import lm_logits

    ids, attn, pos = batch.sequence_inputs()
    P, L = batch.prompt_ids.shape[1], batch.response_ids.shape[1]
    logits = lm_logits(lm, ids, pos, attn)[:, P - 1:P - 1 + L].float()
    return logits / temperature if temperature > 0 else logits


@torch.no_grad()
def kl_terms(policy, ref, batch, temperature: float):
    """Per-token (k1, exact KL, k3) on the batch's responses, each [N, L] (0 at pads), and the mask."""
    from rlhf_cli.algos.logprobs import token_logprobs
    from rlhf_cli.algos.policy import kl_k1, kl_k3

    mask = batch.response_mask.bool()
    lp_pi = torch.log_softmax(response_logits(policy, batch, temperature), -1)
    lp_ref = torch.log_softmax(response_logits(ref, batch, temperature), -1)
    labels = batch.response_ids.masked_fill(~mask, -100)
    tok_pi, tok_ref = token_logprobs(lp_pi, labels), token_logprobs(lp_ref, labels)
    full = (lp_pi.exp() * (lp_pi - lp_ref)).sum(-1)
    z = torch.zeros_like(full)
    return (torch.where(mask, kl_k1(tok_pi, tok_ref), z), torch.where(mask, full, z),
            torch.where(mask, kl_k3(tok_pi, tok_ref), z), mask)


def run(words: Sequence[str]) -> dict:
    from rlhf_cli.data.prompts import encode_prompt, read_prompt_messages
    from rlhf_cli.models.loading import load_for_generation
    from rlhf_cli.rollout.generate import eos_ids, generate
    from rlhf_cli.rollout.sampling import SamplingParams

    o = {"prompt_field": "prompt", "system": "", "limit": 0, "samples": 4, "max_new_tokens": 128, "temperature": 1.0,
         "seed": 0, "batch_size": 8}
    o.update(parse_kv(words, OPTIONS, "eval kl"))
    for key in ("model", "ref", "data"):
        if not o.get(key):
            raise ConfigError("eval kl: needs model=POLICY ref=REFERENCE data=PROMPTS")
    if o["temperature"] <= 0:
        raise ConfigError("eval kl: temperature must be > 0 (the KL of a sampling distribution)")
    policy, tok = load_for_generation(o["model"])
    ref, _ = load_for_generation(o["ref"])
    prompts = read_prompt_messages(o["data"], o["prompt_field"], o["system"] or None, o["limit"])
    ids = [encode_prompt(tok, m) for _, m in prompts for _ in range(o["samples"])]
    params = SamplingParams(max_new_tokens=o["max_new_tokens"], temperature=o["temperature"])
    g = torch.Generator(device=next(policy.parameters()).device).manual_seed(o["seed"])
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    seq = {"kl": [], "kl_full": [], "kl_k3": []}
    tokens = 0
    lengths = []
    for i in range(0, len(ids), o["batch_size"]):
        batch = generate(policy, ids[i:i + o["batch_size"]], params, eos_token_ids=eos_ids(tok, policy), pad_id=pad,
                         generator=g)
        k1, full, k3, mask = kl_terms(policy, ref, batch, o["temperature"])
        for name, t in (("kl", k1), ("kl_full", full), ("kl_k3", k3)):
            seq[name] += t.sum(-1).tolist()
        tokens += int(mask.sum())
        lengths += mask.sum(-1).tolist()
    n = len(seq["kl"])
    mean = {k: sum(v) / n for k, v in seq.items()}
    var = sum((x - mean["kl"]) ** 2 for x in seq["kl"]) / max(n - 1, 1)
    return {"model": o["model"], "ref": o["ref"], "data": o["data"], "prompts": len(prompts), "samples": n,
            **mean, "kl_stderr": math.sqrt(var / n),
            **{f"{k}_per_token": sum(v) / max(tokens, 1) for k, v in seq.items()},
            "response_length": sum(lengths) / n, "temperature": o["temperature"]}
