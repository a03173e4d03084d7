"""Check a model dir before loading it, so a bad one is one line naming the key and the file.

``check_model_dir(path, key, want)``: the dir (or a run dir's ``final/``) exists, ``config.json`` is
valid JSON with a ``model_type``, weights and tokenizer files are there, and the model is the kind the
command needs (``causal``: a language model to sample from; ``reward``: a scalar reward model from the
rm stage). Reading JSON only: nothing is imported from the dir, no weights are loaded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from rlhf_cli.errors import ConfigError

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def resolve_model_dir(path: str, key: str = "model.path", revision: Optional[str] = None) -> Path:
    """A model dir, a run dir whose final/ holds one, or a Hub model ID (``org/name[@rev]``, ``revision``),
    resolved into the Hub cache (``rlhf_cli.hub``); one-line ConfigError otherwise."""
    from rlhf_cli.hub import is_hub_id, model_snapshot

    p = Path(path).expanduser()
    if (p / "final" / "config.json").exists():
        return p / "final"
    if (p / "config.json").exists():
        return p
    if not p.exists() and is_hub_id(path):
        snap = model_snapshot(path, key, revision)
        if (snap / "config.json").exists():
            return snap
        if (snap / "adapter_config.json").exists():
            raise ConfigError(f"{key}={path}: a LoRA adapter repo on the Hub; give its base model "
                              "(adapter_config.json names it) as model.path")
        raise ConfigError(f"{key}={path}: the Hub repo has no config.json (not a transformers model)")
    if not p.exists():
        raise ConfigError(f"{key}={path}: no such directory")
    if (p / "adapter_config.json").exists() or (p / "final" / "adapter_config.json").exists():
        raise ConfigError(f"{key}={path}: holds only a LoRA adapter (model.lora.merge=false); load it with peft on "
                          "the base model its adapter_config.json names, or train with model.lora.merge=true")
    raise ConfigError(f"{key}={path}: not a Hugging Face model dir (no config.json) nor a run dir with final/")


def is_reward_model(root: Path, cfg: dict) -> bool:
    archs = cfg.get("architectures") or []
    return (root / "reward_config.json").exists() or any(str(a).endswith("ForSequenceClassification")
                                                          for a in archs)


def check_model_dir(path: str, key: str = "model", want: Optional[str] = None, strict: bool = True,
                    revision: Optional[str] = None) -> Path:
    """The resolved model dir; ConfigError (one line) when it cannot be what ``want`` asks for.
    ``strict=False`` (compose time of a training run) checks config.json and the kind only; the
    commands that load the model at once (generate, chat, eval) also require weights and tokenizer."""
    root = resolve_model_dir(path, key=key, revision=revision)
    cfg_file = root / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{key}={path}: {cfg_file}: not UTF-8 text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{key}={path}: {cfg_file}:{e.lineno}: invalid JSON ({e.msg})") from None
    except OSError as e:
        raise ConfigError(f"{key}={path}: cannot read {cfg_file}: {e.strerror}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{key}={path}: {cfg_file} is not a JSON object")
    if strict and not cfg.get("model_type"):
        raise ConfigError(f"{key}={path}: {cfg_file} has no 'model_type' (not a Hugging Face model config)")
    if strict and not any((root / w).exists() for w in WEIGHTS):
        raise ConfigError(f"{key}={path}: no weights in {root} (expected {' or '.join(WEIGHTS[:2])})")
    if strict and not any((root / t).exists() for t in TOKENIZER):
        raise ConfigError(f"{key}={path}: no tokenizer files in {root} (tokenizer.json / tokenizer_config.json)")
    reward = is_reward_model(root, cfg)
    if want == "causal" and reward:
        raise ConfigError(f"{key}={path}: is a reward model (scores text, cannot generate); give a policy/SFT "
                          f"model dir, or use `rlhf eval rm-accuracy` for reward models")
    if want == "reward" and not reward:
        raise ConfigError(f"{key}={path}: is a causal LM, not a reward model (no reward_config.json, not a "
                          f"...ForSequenceClassification); train one with `rlhf train rm`")
    return root
