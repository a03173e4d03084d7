"""Load and save Hugging Face causal LMs: presets (embedded, tiny), local dirs, previous runs."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Optional

import torch

from rlhf_cli.errors import ConfigError
from rlhf_cli.models.dir_check import resolve_model_dir  # noqa: F401  (re-exported)


def model_source(mcfg, key: str = "model.path") -> Path:
    """Where weights/tokenizer come from for a model config (tiny: only the tokenizer); ``key`` names the
    setting in errors and in the manifest's record of Hub resolutions."""
    if mcfg.path:
        return resolve_model_dir(mcfg.path, key=key, revision=getattr(mcfg, "revision", None))
    if mcfg.name == "tiny" and mcfg.tiny.get("tokenizer"):
        path = Path(mcfg.tiny.tokenizer).expanduser()
        if not (path / "tokenizer_config.json").exists() and not (path / "tokenizer.json").exists():
            raise ConfigError(f"model.tiny.tokenizer={mcfg.tiny.tokenizer}: no tokenizer files there")
        return path
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
    """The random small model of ``model.tiny`` (``models/families.py``: any of its architectures)."""
    from rlhf_cli.models.families import tiny_config as family_config

    return family_config(tcfg, tokenizer)


def load_causal_lm(mcfg, tokenizer, dtype: torch.dtype = torch.float32, key: str = "model.path"):
    """The policy/reference model. A 'tiny' preset without model.path is built at random (seeded).
    With model.lora.r > 0 it comes back wrapped in LoRA adapters (models.lora), only they trainable."""
    from transformers import AutoModelForCausalLM

    from rlhf_cli.models import attention  # noqa: F401  (registers sdpa_varlen)
    from rlhf_cli.models.lora import apply_lora, lora_enabled, quantization_config

    lora = getattr(mcfg, "lora", None)
    quant = quantization_config(lora, dtype) if lora_enabled(lora) else None

    from rlhf_cli.models.families import attention_for

    if mcfg.name == "tiny" and not mcfg.path:
        cfg = tiny_config(mcfg.tiny, tokenizer)
        cfg._attn_implementation = attention_for(cfg, mcfg.attn_implementation)
        with torch.random.fork_rng():
            torch.manual_seed(mcfg.tiny.seed)
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    else:
        from transformers import AutoConfig

        src = str(model_source(mcfg, key))
        attn = attention_for(AutoConfig.from_pretrained(src, trust_remote_code=mcfg.trust_remote_code),
                             mcfg.attn_implementation)
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype=dtype, attn_implementation=attn,
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


def load_for_generation(model: str):
    """'smollm2-135m' (embedded) or a model/run dir -> (model, tokenizer) in eval mode, fp32 on CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_cli.models.dir_check import check_model_dir
    from rlhf_cli.models.embedded import ensure_embedded_model
    from rlhf_cli.quiet import quiet_libraries

    quiet_libraries(False)
    path = ensure_embedded_model() if model == "smollm2-135m" else check_model_dir(model, key="model", want="causal")
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval()
    if cuda:
        lm = lm.cuda()
    return lm, AutoTokenizer.from_pretrained(str(path))


def load_reference(cfg, tokenizer):
    """The frozen reference policy: ``ref.path`` when set, else a copy of the starting model (model.*)."""
    import copy

    mcfg = copy.deepcopy(cfg.model)
    if cfg.ref.path:
        mcfg.path, mcfg.revision = cfg.ref.path, None  # another model: its own revision, if any, is '@rev'
    mcfg.gradient_checkpointing = False
    mcfg.lora.r = 0  # a separate reference is a plain frozen model
    model = load_causal_lm(mcfg, tokenizer, key="ref.path" if cfg.ref.path else "model.path")
    model.requires_grad_(False)
    return model


def inference_device_dtype(device: str = "auto", dtype: str = "auto"):
    """(torch.device, torch.dtype) for a model only run forward (reward model, judge): 'auto' = CUDA when
    present, bf16 there when supported, fp32 otherwise; ValueError for an unknown dtype name."""
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if dtype == "auto":
        return dev, torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    if dt is None:
        raise ValueError(f"dtype={dtype!r}: must be auto, fp32, bf16 or fp16")
    return dev, dt
