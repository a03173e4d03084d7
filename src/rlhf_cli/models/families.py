"""Model families: the tiny random configs of every common architecture (``model.tiny.arch``), and the
attention each family can run packed rows with.

Every family here gives packed / padding-free logits equal to running each example alone with
``sdpa_varlen`` (sliding windows come through transformers' own masks, MoE routing is per token), except
those whose attention SDPA cannot compute: Gemma 2's attention-logit soft-capping. Such a model runs with
``eager`` attention (exact on packed rows through transformers' block-diagonal masks, slower), with a
warning, never silently wrong.
"""
from __future__ import annotations

import os
import sys
from typing import Dict

ARCHS = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "phi3", "qwen3_moe")
PACKED_ATTENTION = ("sdpa_varlen", "sdpa", "flash_attention_2", "flex_attention")


def tiny_config(tcfg, tokenizer):
    """The random small model of ``model.tiny`` in architecture ``tcfg.arch`` on ``tokenizer``'s vocabulary."""
    import transformers as T

    arch = getattr(tcfg, "arch", None) or "llama"
    common = dict(vocab_size=len(tokenizer), hidden_size=tcfg.hidden_size, intermediate_size=tcfg.intermediate_size,
                  num_hidden_layers=tcfg.num_hidden_layers, num_attention_heads=tcfg.num_attention_heads,
                  num_key_value_heads=tcfg.num_key_value_heads, max_position_embeddings=4096,
                  tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, rope_theta=10000.0)
    head_dim = tcfg.hidden_size // tcfg.num_attention_heads
    window = getattr(tcfg, "sliding_window", None) or 32
    extra: Dict[str, Dict] = {
        "llama": {},
        "qwen2": {"use_sliding_window": True, "sliding_window": window, "max_window_layers": 1},
        "qwen3": {"head_dim": head_dim},
        "mistral": {"sliding_window": window},
        "gemma2": {"head_dim": head_dim, "sliding_window": window, "query_pre_attn_scalar": head_dim},
        "gemma3": {"head_dim": head_dim, "sliding_window": window, "query_pre_attn_scalar": head_dim},
        "phi3": {},
        "qwen3_moe": {"head_dim": head_dim, "num_experts": 4, "num_experts_per_tok": 2,
                      "moe_intermediate_size": max(8, tcfg.intermediate_size // 4), "decoder_sparse_step": 1},
    }
    classes = {"llama": T.LlamaConfig, "qwen2": T.Qwen2Config, "qwen3": T.Qwen3Config, "mistral": T.MistralConfig,
               "gemma2": T.Gemma2Config, "gemma3": T.Gemma3TextConfig, "phi3": T.Phi3Config,
               "qwen3_moe": T.Qwen3MoeConfig}
    common.pop("rope_theta") if arch in ("gemma3",) else None
    return classes[arch](**common, **extra[arch])


def needs_eager(config) -> str:
    """Why SDPA-based attention would compute this model wrong ('' when it does not)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "attn_logit_softcapping", None):
        return "attention-logit soft-capping"
    return ""


def attention_for(config, requested: str) -> str:
    """The attention implementation to load ``config``'s model with: ``requested``, or eager (with a
    warning) when SDPA cannot compute this family's attention."""
    why = needs_eager(config)
    if why and requested in PACKED_ATTENTION:
        if os.environ.get("RANK", "0") == "0":
            print(f"warning: model.attn_implementation={requested}: {getattr(config, 'model_type', 'this model')} "
                  f"has {why}, which SDPA cannot compute; using eager attention (exact on packed rows, slower)",
                  file=sys.stderr, flush=True)
        return "eager"
    return requested
