"""`rlhf generate`: sample from the embedded model, any HF dir, or a run dir (`rlhf chat` is in cli/chat.py)."""
from __future__ import annotations

from typing import List, Sequence

from rlhf_cli.cli.args import parse_kv
from rlhf_cli.config.ranges import Range
from rlhf_cli.errors import ConfigError
from rlhf_cli.models.loading import load_for_generation

# key: type, or (type, allowed range) for numbers
OPTIONS = {"model": str, "prompt": str, "system": str, "max_new_tokens": (int, Range(ge=1)),
           "temperature": (float, Range(ge=0)),  # 0 = greedy
           "top_p": (float, Range(gt=0, le=1)), "seed": (int, Range(ge=0, lt=2**32))}


def chat_reply(lm, tok, messages: List[dict], max_new_tokens: int = 128, temperature: float = 0.0,
               top_p: float = 1.0) -> str:
    import torch

    from rlhf_cli.data.chat import render_prompt

    ids = render_prompt(tok, messages) if tok.chat_template else tok(messages[-1]["content"])["input_ids"]
    x = torch.tensor([ids], device=lm.device)
    kwargs = dict(do_sample=temperature > 0, max_new_tokens=max_new_tokens,
                  pad_token_id=tok.pad_token_id or tok.eos_token_id)
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=top_p)
    with torch.no_grad():
        out = lm.generate(x, attention_mask=torch.ones_like(x), **kwargs)
    return tok.decode(out[0, len(ids):], skip_special_tokens=True).strip()


def _opts(words: Sequence[str], command: str) -> dict:
    opts = {"model": "smollm2-135m", "system": "", "max_new_tokens": 128, "temperature": 0.0, "top_p": 1.0,
            "seed": 0}
    opts.update(parse_kv(words, OPTIONS, command))
    return opts


def run_generate(words: Sequence[str]) -> None:
    opts = _opts(words, "generate")  # options first: a bad value is one line before torch loads
    if not opts.get("prompt"):
        raise ConfigError('generate: prompt="..." is required')
    import torch

    torch.manual_seed(opts["seed"])
    lm, tok = load_for_generation(opts["model"])
    msgs = ([{"role": "system", "content": opts["system"]}] if opts["system"] else []) + [
        {"role": "user", "content": opts["prompt"]}]
    print(chat_reply(lm, tok, msgs, opts["max_new_tokens"], opts["temperature"], opts["top_p"]))

