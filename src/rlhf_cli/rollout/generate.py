"""Batched rollout (generation) engine for the RL stages (GRPO / PPO / online DPO).

Samples from a Hugging Face causal LM (Llama-like, ``transformers`` 5.x) with a KV cache:

* prompts are LEFT-padded; an explicit ``attention_mask`` and ``position_ids``
  (``cumsum(mask) - 1``, clamped at 0) are passed so padded rows see the same
  positions as unpadded ones;
* one prefill forward, then a one-token-at-a-time decode loop that reuses the cache
  (``DynamicCache`` by default, ``StaticCache`` with ``static_cache=True``);
* rows finish independently (EOS or stop string); finished rows keep emitting
  ``pad_id`` (masked out) and the loop stops as soon as every row is finished;
* sampling math (temperature / top-k / top-p / log-probs) is done in fp32 whatever
  the model dtype (fp32 or bf16).

Log-prob convention (``RolloutBatch.logprobs``)
-----------------------------------------------
``logprobs[i, t]`` is ``log softmax(logits / temperature)[token]`` -- the log-prob of the
sampled token under the temperature-scaled distribution BEFORE top-k / top-p filtering
(for greedy, ``temperature == 0``, the unscaled ``log softmax(logits)``). This is the
quantity a trainer recomputes with a plain teacher-forced forward pass (divide logits by the
same temperature), so old/new policy ratios are consistent; the filtered (truncated)
distribution is not reproducible from a forward pass alone. Pads are 0.

Stop strings
------------
When ``params.stop_strings`` is non-empty (a ``tokenizer`` with ``decode`` is then
required), after each step the last few generated tokens of every unfinished row are
decoded and the row finishes if that tail contains a stop string. Like EOS, the tokens
that produced the stop string STAY in the response (``response_mask`` = 1, ``finished``
= True); callers that want them stripped should do it on the text. Nothing is decoded
when ``stop_strings`` is empty.

GPU fast path
-------------
``static_cache=True`` preallocates a ``transformers.StaticCache`` of length
``P + max_new_tokens`` and always feeds the full-length attention mask (the causal mask
hides not-yet-written slots), so every decode step has identical shapes.
``compile=True`` (requires ``static_cache=True``) additionally compiles the one-token
decode step with ``torch.compile(mode="reduce-overhead")`` (CUDA graphs) - the gpt-fast
pattern: prefill runs eagerly, the compiled decode step is replayed. One static cache is
reused (``reset()``) across sub-batches of the same size so the captured graphs stay
valid. Both flags are off by default (not useful on CPU).
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any, Callable, List

import torch

from rlhf_cli.rollout.batch import RolloutBatch, left_pad, pad_columns
from rlhf_cli.rollout.sampling import (
    SamplingParams,
    apply_top_k,
    apply_top_p,
    sample,
    temperature_scale,
)
from rlhf_cli.rollout.stop_strings import StopChecker

__all__ = ["RolloutBatch", "generate", "left_pad", "SamplingParams"]


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def supports_logits_to_keep(model: torch.nn.Module) -> bool:
    # A peft wrapper's forward(*args, **kwargs) hides the argument; it passes it through to the base model.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _decode_step(model, input_ids, attention_mask, position_ids, cache) -> torch.Tensor:
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
    )
    return out.logits[:, -1, :].float()


# compiled decode step per model (weak keys so models can be garbage-collected)
_COMPILED_DECODE: "weakref.WeakKeyDictionary[torch.nn.Module, Callable]" = weakref.WeakKeyDictionary()


def _get_compiled_decode(model: torch.nn.Module) -> Callable:
    fn = _COMPILED_DECODE.get(model)
    if fn is None:
        fn = torch.compile(_decode_step, mode="reduce-overhead", fullgraph=False, dynamic=False)
        _COMPILED_DECODE[model] = fn
    return fn


# --------------------------------------------------------------------------- core loop


def _generate_chunk(
    model: torch.nn.Module,
    prompts: list[list[int]],
    params: SamplingParams,
    *,
    eos: torch.Tensor,
    pad_id: int,
    stop_checker: StopChecker | None,
    generator: torch.Generator | None,
    device: torch.device,
    prompt_len: int | None,
    static_cache: bool,
    compile: bool,
    cache_pool: dict,
) -> RolloutBatch:
    prompt_ids, prompt_mask = left_pad(prompts, pad_id, prompt_len)
    prompt_ids = prompt_ids.to(device)
    prompt_mask = prompt_mask.to(device)
    B, P = prompt_ids.shape
    max_new = params.max_new_tokens
    total = P + max_new

    # Full-length 2D mask: prompt mask, then 1 for every generated slot (finished rows keep
    # attending normally; their outputs are masked out anyway, and this avoids fully-masked rows).
    attn = torch.ones((B, total), dtype=torch.long, device=device)
    attn[:, :P] = prompt_mask
    position_ids = (prompt_mask.cumsum(-1) - 1).clamp_(min=0)
    next_pos = prompt_mask.sum(-1, keepdim=True)  # [B,1] position of the first generated token

    if static_cache:
        from transformers import StaticCache

        key = (B, total)
        cache = cache_pool.get(key)
        if cache is None:
            cache = StaticCache(config=model.config, max_cache_len=total)
            cache_pool.clear()  # keep at most one preallocated cache alive
            cache_pool[key] = cache
        else:
            cache.reset()
        decode = _get_compiled_decode(model) if compile else _decode_step
    else:
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
        decode = _decode_step

    # ---- prefill (always eager); only the last position's logits are needed
    extra = {"logits_to_keep": 1} if supports_logits_to_keep(model) else {}
    out = model(
        input_ids=prompt_ids,
        attention_mask=attn if static_cache else prompt_mask,
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
        **extra,
    )
    logits = out.logits[:, -1, :].float()
    del out

    response = torch.full((B, max_new), pad_id, dtype=torch.long, device=device)
    resp_mask = torch.zeros((B, max_new), dtype=torch.bool, device=device)
    logprobs = torch.zeros((B, max_new), dtype=torch.float32, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    pad_tok = torch.full((B,), pad_id, dtype=torch.long, device=device)

    greedy = params.greedy
    temp = 1.0 if greedy else params.temperature
    steps = 0
    for t in range(max_new):
        scaled = temperature_scale(logits, temp)
        logp = torch.log_softmax(scaled, dim=-1)
        if greedy:
            tok = torch.argmax(logits, dim=-1)
        else:
            filt = apply_top_p(apply_top_k(scaled, params.top_k), params.top_p)
            tok = sample(filt, generator)
        alive = ~finished
        tok = torch.where(alive, tok, pad_tok)
        response[:, t] = tok
        resp_mask[:, t] = alive
        logprobs[:, t] = torch.where(
            alive, logp.gather(-1, tok[:, None]).squeeze(-1), torch.zeros((), device=device)
        )
        finished = finished | (alive & torch.isin(tok, eos))
        if stop_checker is not None:
            finished = finished | stop_checker(response, t, finished)
        steps = t + 1
        if t == max_new - 1 or bool(finished.all()):  # one reduction / sync per step
            break

        if static_cache:
            if compile:
                torch.compiler.cudagraph_mark_step_begin()
            logits = decode(model, tok[:, None], attn, next_pos, cache)
            if compile:
                logits = logits.clone()  # CUDA-graph outputs are overwritten on the next replay
        else:
            logits = decode(model, tok[:, None], attn[:, : P + t + 1], next_pos, cache)
        next_pos = next_pos + 1

    return RolloutBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=response[:, :steps],
        response_mask=resp_mask[:, :steps].long(),
        logprobs=logprobs[:, :steps],
        finished=finished,
    )


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompts: list[list[int]],
    params: SamplingParams,
    *,
    eos_token_ids: list[int] | int,
    pad_id: int,
    tokenizer: Any = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    static_cache: bool = False,
    compile: bool = False,
) -> RolloutBatch:
    """Sample one response per prompt with a KV cache.

    Args:
        model: HF causal LM (Llama-like); fp32 or bf16. Put in eval mode during the call,
            its previous train/eval mode is restored afterwards.
        prompts: token-id lists (non-empty, any lengths).
        params: sampling parameters (``temperature=0`` = greedy).
        eos_token_ids: token id(s) that end a row (the EOS token is kept in the response).
        pad_id: padding id for prompts (left) and responses (right).
        tokenizer: object with ``decode(list[int]) -> str``; only needed for stop strings.
        batch_size: split prompts into sub-batches of this size; outputs are concatenated
            in the original order (prompts left-padded / responses right-padded to common sizes).
        generator: RNG for sampling (on the model's device). If None and ``params.seed`` is
            set, a generator seeded with it is created.
        static_cache: use a preallocated ``StaticCache`` (GPU fast path).
        compile: compile the decode step with ``torch.compile(mode="reduce-overhead")``
            (CUDA graphs); requires ``static_cache=True``.

    Returns:
        :class:`RolloutBatch` on the model's device.
    """
    if not prompts:
        raise ValueError("prompts is empty")
    if compile and not static_cache:
        raise ValueError("compile=True requires static_cache=True")
    if isinstance(eos_token_ids, int):
        eos_token_ids = [eos_token_ids]
    device = _model_device(model)
    eos = torch.as_tensor(list(eos_token_ids), dtype=torch.long, device=device)
    stop_checker = StopChecker(params.stop_strings, tokenizer) if params.stop_strings else None
    if generator is None and params.seed is not None and not params.greedy:
        generator = torch.Generator(device=device)
        generator.manual_seed(params.seed)

    bs = len(prompts) if not batch_size or batch_size <= 0 else batch_size
    # Static cache: one global prompt length so sub-batches share cache shapes (and CUDA graphs).
    prompt_len = max(len(p) for p in prompts) if static_cache else None
    cache_pool: dict = {}

    was_training = model.training
    model.eval()
    try:
        chunks = [
            _generate_chunk(
                model,
                prompts[i : i + bs],
                params,
                eos=eos,
                pad_id=pad_id,
                stop_checker=stop_checker,
                generator=generator,
                device=device,
                prompt_len=prompt_len,
                static_cache=static_cache,
                compile=compile,
                cache_pool=cache_pool,
            )
            for i in range(0, len(prompts), bs)
        ]
    finally:
        model.train(was_training)
        cache_pool.clear()

    if len(chunks) == 1:
        return chunks[0]
    P = max(c.prompt_ids.size(1) for c in chunks)
    L = max(c.response_ids.size(1) for c in chunks)
    return RolloutBatch(
        prompt_ids=torch.cat([pad_columns(c.prompt_ids, P, pad_id, True) for c in chunks]),
        prompt_mask=torch.cat([pad_columns(c.prompt_mask, P, 0, True) for c in chunks]),
        response_ids=torch.cat([pad_columns(c.response_ids, L, pad_id, False) for c in chunks]),
        response_mask=torch.cat([pad_columns(c.response_mask, L, 0, False) for c in chunks]),
        logprobs=torch.cat([pad_columns(c.logprobs, L, 0.0, False) for c in chunks]),
        finished=torch.cat([c.finished for c in chunks]),
    )


def eos_ids(tokenizer, model) -> List[int]:
    """Token ids that end a response: the tokenizer's EOS plus the model's generation_config EOS ids."""
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    return sorted(i for i in ids if i is not None)
