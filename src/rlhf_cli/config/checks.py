"""Value checks the type system cannot express (choices, ranges, files that must exist)."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from rlhf_cli.errors import ConfigError

CHOICES = {
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "resume": ("auto", "true", "false"),
    "optim.scheduler": ("cosine", "linear", "constant"),
    "engine.backend": ("auto", "nccl", "gloo"),
    "model.attn_implementation": ("sdpa", "eager", "flash_attention_2", "flex_attention"),
    "data.format": ("auto", "messages", "prompt_completion", "text"),
}
POSITIVE = ("train.micro_batch_size", "train.grad_accum", "data.max_length", "train.log_every",
            "train.keep_checkpoints")


def check_file(key: str, value) -> None:
    if value is None or value == "":
        return
    from rlhf_cli.data.readers import resolve_data_path

    resolve_data_path(str(value), key=key)


def check_config(cfg: DictConfig) -> None:
    cfg.resume = str(cfg.resume).lower()
    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and str(value) not in choices:
            raise ConfigError(f"{key}={value}: must be one of {', '.join(choices)}")
    for key in POSITIVE:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value < 1:
            raise ConfigError(f"{key}={value}: must be >= 1")
    if cfg.engine.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"engine.zero_stage={cfg.engine.zero_stage}: must be 0, 1, 2 or 3")
    if cfg.engine.offload_params and cfg.engine.zero_stage != 3:
        raise ConfigError("engine.offload_params=true needs engine.zero_stage=3")
    if cfg.engine.offload_optimizer and cfg.engine.zero_stage == 0:
        raise ConfigError("engine.offload_optimizer=true needs engine.zero_stage >= 1")
    if not 0 <= cfg.optim.warmup_ratio < 1:
        raise ConfigError(f"optim.warmup_ratio={cfg.optim.warmup_ratio}: must be in [0, 1)")
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas={list(cfg.optim.betas)}: needs two numbers")
    if cfg.train.max_steps == 0 or cfg.train.max_steps < -1:
        raise ConfigError(f"train.max_steps={cfg.train.max_steps}: must be -1 (use epochs) or >= 1")
    if "data" in cfg:
        if not 0 <= cfg.data.eval_fraction < 1:
            raise ConfigError(f"data.eval_fraction={cfg.data.eval_fraction}: must be in [0, 1)")
        check_file("data.path", cfg.data.path)
        check_file("data.eval_path", cfg.data.get("eval_path"))
    if "lora" in cfg.model:
        from rlhf_cli.models.lora import check_lora

        check_lora(cfg.model.lora)
        if cfg.model.lora.r > 0 and cfg.stage == "rm":
            raise ConfigError("model.lora.r > 0: the rm stage does not take LoRA yet (sft, dpo, grpo do); "
                              "set model.lora.r=0")
    if cfg.model.path is not None:
        from rlhf_cli.models.loading import resolve_model_dir

        resolve_model_dir(cfg.model.path, key="model.path")
    # Stage-specific checks: a schema class may define ``check(cfg)`` (e.g. GRPOConfig).
    from rlhf_cli.config.stages import STAGES

    stage_check = getattr(STAGES[cfg.stage].schema, "check", None) if cfg.stage in STAGES else None
    if stage_check is not None:
        stage_check(cfg)
