"""Throughput benchmark: rollout engine vs ``model.generate(do_sample=True)``.

Usage::

    PYTHONPATH=src python -m rlhf_cli.bench.generate [--batch 8 --prompt-len 64 --new-tokens 64]

By default it builds a randomly initialised Llama with SmolLM2-135M's shape (no download)
and reports new tokens / second for both engines. Every row generates exactly
``new_tokens`` tokens in both engines (EOS is unreachable / suppressed) so the work is equal.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from rlhf_cli.rollout.generate import generate
from rlhf_cli.rollout.sampling import SamplingParams


def smollm2_135m_shaped_model(dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.nn.Module:
    """Random-init LlamaForCausalLM with SmolLM2-135M's architecture."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
        max_position_embeddings=2048,
        rope_theta=100000.0,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).to(dtype).eval()


def _vocab_size(tokenizer_or_vocab: Any) -> int:
    if isinstance(tokenizer_or_vocab, int):
        return tokenizer_or_vocab
    try:
        return len(tokenizer_or_vocab)
    except TypeError:
        return int(tokenizer_or_vocab.vocab_size)


def _timeit(fn, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench(
    model: torch.nn.Module,
    tokenizer_or_vocab: Any,
    batch: int = 8,
    prompt_len: int = 64,
    new_tokens: int = 64,
    *,
    reps: int = 2,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
) -> dict:
    """Time ``generate`` (this engine) vs HF ``model.generate(do_sample=True)``.

    Prompts are random ids with ragged lengths in ``[prompt_len // 2, prompt_len]`` (so left
    padding is exercised). Returns a dict with median seconds and new tokens / second for both
    engines (best-of-``reps`` and median) and the speedup (HF time / engine time, best-of).
    """
    vocab = _vocab_size(tokenizer_or_vocab)
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(max(1, prompt_len // 2), prompt_len + 1, (batch,), generator=g).tolist()
    lens[0] = prompt_len
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lens]
    no_eos = vocab + 1  # unreachable -> every row generates exactly new_tokens
    pad_id = 0

    params = SamplingParams(max_new_tokens=new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)

    def run_engine(n_new: int = new_tokens):
        gen = torch.Generator(device=device).manual_seed(seed)
        p = params if n_new == new_tokens else SamplingParams(
            max_new_tokens=n_new, temperature=temperature, top_k=top_k, top_p=top_p)
        out = generate(model, prompts, p, eos_token_ids=[no_eos], pad_id=pad_id, generator=gen)
        assert out.response_ids.shape == (batch, n_new)

    from rlhf_cli.rollout.generate import left_pad

    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)

    def run_hf(n_new: int = new_tokens):
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=temperature,
                top_k=top_k,  # 0 disables HF's default top-k=50 -> same distribution as the engine
                top_p=top_p,
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                eos_token_id=no_eos,
                pad_token_id=pad_id,
            )
        assert out.shape == (batch, ids.size(1) + n_new)

    # short warm-up of both (allocator, kernels), then interleave repetitions for fairness
    run_engine(4)
    run_hf(4)
    t_engine, t_hf = [], []
    for _ in range(reps):
        t_engine += _timeit(run_engine, 1)
        t_hf += _timeit(run_hf, 1)
    # min over repetitions: least affected by other processes on a shared CPU
    best_e, best_h = min(t_engine), min(t_hf)
    med_e, med_h = statistics.median(t_engine), statistics.median(t_hf)
    n = batch * new_tokens
    return {
        "batch": batch,
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "dtype": str(next(model.parameters()).dtype),
        "threads": torch.get_num_threads(),
        "engine_s": round(best_e, 4),
        "hf_s": round(best_h, 4),
        "engine_tok_s": round(n / best_e, 1),
        "hf_tok_s": round(n / best_h, 1),
        "speedup": round(best_h / best_e, 3),
        "engine_tok_s_median": round(n / med_e, 1),
        "hf_tok_s_median": round(n / med_h, 1),
        "engine_runs_s": [round(t, 4) for t in t_engine],
        "hf_runs_s": [round(t, 4) for t in t_hf],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--device", default="auto", help="auto (cuda when present) | cpu | cuda")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model = smollm2_135m_shaped_model(getattr(torch, args.dtype)).to(device)
    res = bench(
        model,
        model.config.vocab_size,
        args.batch,
        args.prompt_len,
        args.new_tokens,
        reps=args.reps,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
    )
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
