"""What an RL stage loads before its first step: tokenizer, reward functions, prompts, and the number of
steps, with the one-line data summary logged."""
from __future__ import annotations

import math

from rlhf_cli.training.runtime import RunContext


def setup_rl(ctx: RunContext, sec, extra: str = ""):
    """Tokenizer, reward functions, prompts and the number of steps of an RL stage (``sec``: its section),
    with the one-line data summary logged. Returns (tokenizer, reward, prompts, total_steps)."""
    from omegaconf import OmegaConf

    from rlhf_cli.data.prompts import load_prompt_data
    from rlhf_cli.models.loading import load_tokenizer
    from rlhf_cli.rewards import build_reward

    cfg, strategy, data = ctx.cfg, ctx.strategy, ctx.cfg.data
    tokenizer = load_tokenizer(cfg.model)
    reward = build_reward(OmegaConf.to_container(cfg.reward.functions, resolve=True))
    prompts, st = load_prompt_data(data.path, data, tokenizer, max_prompt_tokens=data.max_length - sec.max_new_tokens,
                                   limit=data.limit)
    per_step = sec.prompts_per_step * strategy.world_size
    total = (cfg.train.max_steps if cfg.train.max_steps > 0
             else max(1, math.ceil(cfg.train.epochs * len(prompts) / per_step)))
    ctx.log(f"{cfg.stage.upper()} data: {st.records} records ({st.skipped} bad, {st.too_long} over the prompt "
            f"budget) -> {len(prompts)} prompts; {per_step} prompts x {sec.num_generations} responses per step, "
            f"{total} steps; rewards {reward}{extra}; precision {strategy.precision}, {strategy.world_size} "
            f"process(es), ZeRO-{cfg.engine.zero_stage}")
    return tokenizer, reward, prompts, total
