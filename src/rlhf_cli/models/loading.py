"""Load and save Hugging Face causal LMs: presets (embedded, tiny), local dirs, previous runs."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Optional

import torch

from rlhf_cli.errors import ConfigError


def resolve_model_dir(path: str, key: str = "model.path") -> Path:
    """A model dir, or a run dir whose final/ holds one; one-line ConfigError otherwise."""
    p = Path(path).expanduser()
    if (p / "final" / "config.json").exists():
        return p / "final"
    if (p / "config.json").exists():
        return p
    if not p.exists():
        raise ConfigError(f"{key}={path}: no such directory")
    if (p / "adapter_config.json").exists() or (p / "final" / "adapter_config.json").exists():
        raise ConfigError(f"{key}={path}: holds only a LoRA adapter (model.lora.merge=false); load it with peft on "
                          "the base model its adapter_config.json names, or train with model.lora.merge=true")
    raise ConfigError(f"{key}={path}: not a Hugging Face model dir (no config.json) nor a run dir with final/")


def model_source(mcfg) -> Path:
    """Where weights/tokenizer come from for a model config (tiny: only the tokenizer)."""
    if mcfg.path:
        return resolve_model_dir(mcfg.path)
    if mcfg.name in ("smollm2-135m", "tiny"):
        from rlhf_cli.models.embedded import ensure_embedded_model

        return ensure_embedded_model()
    raise ConfigError(f"model.name={mcfg.name}: unknown preset (smollm2-135m, tiny) and no model.path given")


def load_tokenizer(mcfg):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_source(mcfg)), trust_remote_code=mcfg.trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_config(tcfg, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=tcfg.hidden_size, intermediate_size=tcfg.intermediate_size,
        num_hidden_layers=tcfg.num_hidden_layers, num_attention_heads=tcfg.num_attention_heads,
        num_key_value_heads=tcfg.num_key_value_heads, max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, rope_theta=10000.0,
    )


def load_causal_lm(mcfg, tokenizer, dtype: torch.dtype = torch.float32):
    """The policy/reference model. A 'tiny' preset without model.path is built at random (seeded).
    With model.lora.r > 0 it comes back wrapped in LoRA adapters (models.lora), only they trainable."""
    from transformers import AutoModelForCausalLM

    from rlhf_cli.models.lora import apply_lora, lora_enabled, quantization_config

    lora = getattr(mcfg, "lora", None)
    quant = quantization_config(lora, dtype) if lora_enabled(lora) else None

    if mcfg.name == "tiny" and not mcfg.path:
        cfg = tiny_config(mcfg.tiny, tokenizer)
        cfg._attn_implementation = mcfg.attn_implementation
        with torch.random.fork_rng():
            torch.manual_seed(mcfg.tiny.seed)
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            str(model_source(mcfg)), dtype=dtype, attn_implementation=mcfg.attn_implementation,
            trust_remote_code=mcfg.trust_remote_code, **({"quantization_config": quant} if quant else {}))
    if mcfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if lora_enabled(lora):
        with torch.random.fork_rng():  # adapter init: the same on every process and rerun
            torch.manual_seed(mcfg.tiny.seed + 1)
            model = apply_lora(model, lora)
    return model


def save_hf_model(model, state_dict: Optional[Dict[str, torch.Tensor]], tokenizer, out_dir: Path) -> None:
    """Write a plain HF dir (config, safetensors, tokenizer) atomically: tmp dir, then rename."""
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.config.use_cache = True
    model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
