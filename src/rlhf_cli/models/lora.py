"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") and QLoRA (Dettmers et al.
2023) through ``peft``: apply, use the base weights as the reference, export.

Eq. (3) of the LoRA paper: ``h = W0 x + (alpha / r) * B A x`` with ``W0`` frozen, ``A ∈ R^{r×k}`` (random)
and ``B ∈ R^{d×r}`` (zero at start, so training starts from the base model). Only A and B are trained,
so the frozen base doubles as the reference model of DPO / GRPO / PPO: the same forward with the adapter
disabled is exactly the starting policy — no second copy of the weights (as TRL does).

``final/`` of a LoRA run with ``model.lora.merge=true`` (default) is the merged plain model
``W0 + (alpha / r) B A`` (``config.json``, ``model.safetensors``, tokenizer) that every other command loads
like any model, with the adapter (``adapter_config.json``, ``adapter_model.safetensors``, peft's format) in
``final/adapter/``. Not beside the merged weights: transformers treats a dir holding both ``config.json``
and ``adapter_config.json`` as "base + adapter" and would apply the adapter a second time on top of the
merged weights. With ``merge=false`` final/ holds the adapter (and tokenizer) only; load it with peft
on its base model (``adapter_config.json`` names it).
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from rlhf_cli.errors import ConfigError

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def lora_enabled(lcfg) -> bool:
    return lcfg is not None and int(lcfg.r) > 0


def check_lora(lcfg) -> None:
    """Value checks (composition time) beyond the numeric ranges declared on the fields."""
    if lcfg.r == 0:
        return
    if not list(lcfg.target_modules):
        raise ConfigError("model.lora.target_modules is empty: name the linear layers to adapt (e.g. q_proj)")
    if lcfg.quantize not in ("none", "4bit"):
        raise ConfigError(f"model.lora.quantize={lcfg.quantize}: must be one of none, 4bit")
    if lcfg.quantize == "4bit" and lcfg.merge:
        raise ConfigError("model.lora.quantize=4bit cannot merge into NF4 weights: set model.lora.merge=false "
                          "(final/ then holds the adapter for the unquantized base)")


def quantization_config(lcfg, dtype: torch.dtype):
    """bitsandbytes NF4 config for QLoRA, or None; one-line error where it cannot run (no CUDA / bnb)."""
    if not lora_enabled(lcfg) or lcfg.quantize == "none":
        return None
    if not torch.cuda.is_available():
        raise ConfigError("model.lora.quantize=4bit needs a CUDA GPU (bitsandbytes 4-bit kernels); "
                          "use model.lora.quantize=none on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("model.lora.quantize=4bit needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16)


def _rank0_print(msg: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(msg, flush=True)


def trainable_summary(model: torch.nn.Module) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trainable:,} trainable parameters of {total:,} ({100.0 * trainable / max(total, 1):.2f}%)"


def apply_lora(model: torch.nn.Module, lcfg, log: Optional[Callable[[str], None]] = _rank0_print):
    """Wrap a causal LM in peft LoRA adapters on ``lcfg.target_modules``; everything else is frozen.
    Adapter init is seeded by the caller's RNG (every process builds the same A)."""
    from peft import LoraConfig, get_peft_model

    if lcfg.quantize == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets = list(lcfg.target_modules)
    config = LoraConfig(r=int(lcfg.r), lora_alpha=float(lcfg.alpha), lora_dropout=float(lcfg.dropout),
                        target_modules="all-linear" if targets == ["all-linear"] else targets, bias="none",
                        task_type="CAUSAL_LM")
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as e:  # no module matched target_modules
        raise ConfigError(f"model.lora.target_modules={list(lcfg.target_modules)}: {' '.join(str(e).split())[:200]}"
                          ) from None
    if log:
        log(f"LoRA r={lcfg.r} alpha={lcfg.alpha:g} on {','.join(lcfg.target_modules)}: {trainable_summary(peft_model)}")
    return peft_model


def unwrap(model):
    """The PeftModel inside a DeepSpeed engine (or the model itself)."""
    return getattr(model, "module", model)


def is_lora(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(unwrap(model), PeftModel)


@contextlib.contextmanager
def reference_by_disabled_adapter(model):
    """Run ``model`` (PeftModel or a DeepSpeed engine around one) as its frozen base: the adapter's
    contribution is skipped, so the forward is exactly the starting policy's. Use under ``no_grad``."""
    with unwrap(model).disable_adapter():
        yield model


class DisabledAdapterReference(torch.nn.Module):
    """A reference model that is the policy with its adapter disabled (for code that wants a module)."""

    def __init__(self, policy):
        super().__init__()
        self._policy = [policy]  # a list: not registered as a submodule (no second set of parameters)

    def forward(self, *args, **kwargs):
        with reference_by_disabled_adapter(self._policy[0]):
            return self._policy[0](*args, **kwargs)

    def parameters(self, recurse: bool = True):
        return unwrap(self._policy[0]).parameters(recurse)


def merged_state_dict(state_dict: Dict[str, torch.Tensor], peft_config, adapter: str = "default"
                      ) -> Dict[str, torch.Tensor]:
    """Plain-model weights from a peft LoRA model's state dict: ``W0 + (alpha / r) B A`` (LoRA eq. 3) for
    every adapted layer, peft's key prefixes removed, adapter tensors dropped."""
    if getattr(peft_config, "use_rslora", False):
        scaling = peft_config.lora_alpha / peft_config.r ** 0.5
    else:
        scaling = peft_config.lora_alpha / peft_config.r
    out: Dict[str, torch.Tensor] = {}
    for key, w in state_dict.items():
        if ".lora_" in key:
            continue
        name = key[len("base_model.model."):] if key.startswith("base_model.model.") else key
        if key.endswith(".base_layer.weight"):
            prefix = key[:-len(".base_layer.weight")]
            a, b = state_dict[f"{prefix}.lora_A.{adapter}.weight"], state_dict[f"{prefix}.lora_B.{adapter}.weight"]
            delta = (b.float() @ a.float()) * scaling
            if getattr(peft_config, "fan_in_fan_out", False):
                delta = delta.T
            w = (w.float() + delta).to(w.dtype)
        out[name.replace(".base_layer.", ".")] = w
    return out


def adapter_dir(final_dir: Path) -> Path:
    """Where export_lora put the adapter files: final/adapter/ next to a merged model, else final/."""
    final_dir = Path(final_dir)
    return final_dir / "adapter" if (final_dir / "adapter" / ADAPTER_FILES[0]).exists() else final_dir


def export_lora(model, tokenizer, final_dir: Path, merge: bool,
                state_dict: Optional[Dict[str, torch.Tensor]] = None) -> Path:
    """Write final/ of a LoRA run atomically: (merge) the merged plain model + tokenizer, and the adapter
    files (final/adapter/ when merged, else final/). ``state_dict`` is the full peft state dict (e.g.
    consolidated from ZeRO-3 shards), else the model's own."""
    peft_model = unwrap(model)
    sd = state_dict if state_dict is not None else peft_model.state_dict()
    sd = {k: v.detach().cpu() for k, v in sd.items()}
    final_dir = Path(final_dir)
    tmp = final_dir.parent / f".{final_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    peft_cfg = peft_model.peft_config["default"]
    base = peft_model.get_base_model()
    if merge:
        base.config.use_cache = True
        base.save_pretrained(tmp, state_dict=merged_state_dict(sd, peft_cfg), safe_serialization=True)
    adapter = tmp / "adapter" if merge else tmp
    peft_model.save_pretrained(adapter, state_dict=sd, safe_serialization=True)
    (adapter / "README.md").unlink(missing_ok=True)  # peft's model-card stub
    tokenizer.save_pretrained(tmp)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp, final_dir)
    return final_dir
