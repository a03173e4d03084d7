"""`rlhf eval gsm8k model=... data=test.jsonl [limit=N]`: greedy exact-match accuracy on GSM8K-shaped data.

Prompts are rendered exactly as the GRPO stage renders them (data.prompts), generated greedily with the
rollout engine and scored with the ``gsm8k`` reward (the number after ``####`` / in ``\\boxed{}`` / last).
"""
from __future__ import annotations

import time
from typing import Sequence

from rlhf_cli.config.options import parse_kv
from rlhf_cli.config.ranges import Range

OPTIONS = {"model": str, "data": str, "limit": (int, Range(ge=0)), "batch_size": (int, Range(ge=1)),
           "max_new_tokens": (int, Range(ge=1)), "prompt_field": str, "answer_field": str,
           "prompt_template": str, "system": str, "show": (int, Range(ge=0))}
DEFAULT_TEMPLATE = "{prompt}\nThink step by step, then give the final answer as '#### <number>'."


def run(words: Sequence[str]) -> dict:
    from rlhf_cli.errors import ConfigError

    o = {"model": "smollm2-135m", "limit": 0, "batch_size": 16, "max_new_tokens": 256, "prompt_field": "question",
         "answer_field": "answer", "prompt_template": DEFAULT_TEMPLATE, "system": "", "show": 0}
    o.update(parse_kv(words, OPTIONS, "eval gsm8k"))
    if "data" not in o:
        raise ConfigError("eval gsm8k: data=FILE is required (records with question + answer '... #### N')")
    from rlhf_cli.data.readers import resolve_data_path

    resolve_data_path(o["data"], key="data")
    import torch

    from rlhf_cli.data.prompts import load_prompts, reward_fields
    from rlhf_cli.models.loading import load_for_generation
    from rlhf_cli.rewards import build_reward
    from rlhf_cli.rollout.generate import eos_ids, generate
    from rlhf_cli.rollout.sampling import SamplingParams

    lm, tok = load_for_generation(o["model"])
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    examples, _ = load_prompts(o["data"], tok, prompt_field=o["prompt_field"], system_prompt=o["system"] or None,
                               prompt_template=o["prompt_template"] or None, reward_fields=[o["answer_field"]],
                               limit=o["limit"])
    score = build_reward([{"name": "gsm8k", "answer_field": o["answer_field"]}])
    params = SamplingParams(max_new_tokens=o["max_new_tokens"], temperature=0.0)
    correct, tokens, t0 = 0.0, 0, time.time()
    shown = []
    # sort by prompt length so each generation batch has little padding
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    for k in range(0, len(order), o["batch_size"]):
        batch = [examples[i] for i in order[k:k + o["batch_size"]]]
        with torch.no_grad():
            out = generate(lm, [e.ids for e in batch], params, eos_token_ids=eos_ids(tok, lm),
                           pad_id=tok.pad_token_id, tokenizer=tok)
        texts = out.texts(tok)
        tokens += int(out.response_lengths.sum())
        scores = score([e.text for e in batch], texts, **reward_fields(batch)).total
        correct += sum(scores)
        shown += [{"completion": t, "answer": e.fields[o["answer_field"]], "correct": bool(s)}
                  for t, e, s in zip(texts, batch, scores)][: max(0, o["show"] - len(shown))]
    dt = time.time() - t0
    res = {"eval": "gsm8k", "model": o["model"], "data": o["data"], "n": len(examples),
           "accuracy": round(correct / len(examples), 4), "max_new_tokens": o["max_new_tokens"],
           "generated_tokens": tokens, "tokens_per_s": round(tokens / dt, 1), "seconds": round(dt, 1)}
    if shown:
        res["examples"] = shown
    return res
