"""Value checks the type system cannot express: numeric ranges (declared next to each field, see
``ranges.py``), choices, files that must exist, and cross-field rules of a stage (``Schema.check``)."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from rlhf_cli.errors import ConfigError

CHOICES = {
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "resume": ("auto", "true", "false"),
    "optim.scheduler": ("cosine", "linear", "constant"),
    "engine.backend": ("auto", "nccl", "gloo"),
    "model.attn_implementation": ("sdpa_varlen", "sdpa", "eager", "flash_attention_2", "flex_attention"),
    "model.tiny.arch": ("llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "phi3", "qwen3_moe"),
    "data.format": ("auto", "messages", "conversations", "prompt_completion", "text"),
}


# log.trackers: name -> the package it needs (training/trackers.py opens them).
TRACKER_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


def check_trackers(names) -> None:
    """Known names, each installed: one line naming the extra otherwise (called at compose time)."""
    import importlib.util

    for name in names:
        if name not in TRACKER_MODULES:
            from rlhf_cli.text import closest

            raise ConfigError(f"log.trackers: unknown tracker '{name}'{closest(name, TRACKER_MODULES)}; "
                              f"choices: {', '.join(TRACKER_MODULES)}")
        module = TRACKER_MODULES[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(f"log.trackers: {name} is not installed: pip install 'rlhf-cli[{name}]'")


def check_file(key: str, value, data=None) -> None:
    """The file (or Hub dataset split, selected by the ``data`` section) exists; one line otherwise."""
    if value is None or value == "":
        return
    from rlhf_cli.data.readers import data_source

    split = data.get("eval_split") if data is not None and key == "data.eval_path" else None
    data_source(str(value), data, key=key, split=split)


def check_config(cfg: DictConfig) -> None:
    from rlhf_cli.config.ranges import check_ranges
    from rlhf_cli.config.stages import STAGES

    check_ranges(cfg, STAGES[cfg.stage].schema)
    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if key == "data.format" and "ranks_field" in cfg.get("data", {}):
            continue  # preference data (rm, dpo): its formats are checked by check_preference_data
        if key == "data.format" and "conversations_field" not in cfg.get("data", {}):
            continue  # only SFT data has these shapes
        if value is not None and str(value) not in choices:
            raise ConfigError(f"{key}={value}: must be one of {', '.join(choices)}")
    if "conversations_field" in cfg.get("data", {}) and cfg.data.template not in ("auto", "chat", "plain"):
        raise ConfigError(f"data.template={cfg.data.template}: must be one of auto, chat, plain")
    if cfg.engine.offload_params and cfg.engine.zero_stage != 3:
        raise ConfigError("engine.offload_params=true needs engine.zero_stage=3")
    if cfg.engine.offload_optimizer and cfg.engine.zero_stage == 0:
        raise ConfigError("engine.offload_optimizer=true needs engine.zero_stage >= 1")
    check_trackers(list(cfg.log.trackers) + (["tensorboard"] if cfg.log.tensorboard else []))
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas={list(cfg.optim.betas)}: needs two numbers")
    if "data" in cfg:
        check_file("data.path", cfg.data.path, cfg.data)
        check_file("data.eval_path", cfg.data.get("eval_path"), cfg.data)
    from rlhf_cli.models.lora import check_lora

    check_lora(cfg.model.lora)
    from rlhf_cli.models.dir_check import check_model_dir

    for key in ("model.path", "ref.path"):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            check_model_dir(value, key=key, strict=False, revision=cfg.model.get("revision") if key == "model.path"
                            else None, **({"want": "causal"} if key == "ref.path" else {}))
    from rlhf_cli.config.choices import check_registry_fields

    check_registry_fields(cfg)
    # Stage-specific checks: a schema class may define ``check(cfg)`` (e.g. GRPOConfig).
    stage_check = getattr(STAGES[cfg.stage].schema, "check", None) if cfg.stage in STAGES else None
    if stage_check is not None:
        stage_check(cfg)
