"""`rlhf generate` and `rlhf chat`: sample from the embedded model, any HF dir, or a run dir."""
from __future__ import annotations

from typing import List, Sequence

from rlhf_cli.cli.args import parse_kv
from rlhf_cli.config.ranges import Range
from rlhf_cli.errors import ConfigError

# key: type, or (type, allowed range) for numbers
OPTIONS = {"model": str, "prompt": str, "system": str, "max_new_tokens": (int, Range(ge=1)),
           "temperature": (float, Range(ge=0)),  # 0 = greedy
           "top_p": (float, Range(gt=0, le=1)), "seed": (int, Range(ge=0, lt=2**32))}


def load_for_generation(model: str):
    """'smollm2-135m' (embedded) or a model/run dir -> (model, tokenizer) in eval mode, fp32 on CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_cli.models.dir_check import check_model_dir
    from rlhf_cli.models.embedded import ensure_embedded_model
    from rlhf_cli.worker import quiet_libraries

    quiet_libraries(False)
    path = ensure_embedded_model() if model == "smollm2-135m" else check_model_dir(model, key="model", want="causal")
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval()
    if cuda:
        lm = lm.cuda()
    return lm, AutoTokenizer.from_pretrained(str(path))


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


def run_chat(words: Sequence[str]) -> None:
    opts = _opts(words, "chat")
    lm, tok = load_for_generation(opts["model"])
    msgs = [{"role": "system", "content": opts["system"]}] if opts["system"] else []
    print(f"chatting with {opts['model']} (empty line or Ctrl-D to quit)")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line:
            break
        msgs.append({"role": "user", "content": line})
        reply = chat_reply(lm, tok, msgs, opts["max_new_tokens"], opts["temperature"], opts["top_p"])
        msgs.append({"role": "assistant", "content": reply})
        print(f"model> {reply}")
