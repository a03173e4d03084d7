"""GRPO stage config: prompt data, the GRPO algorithm knobs, and the reward functions."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from rlhf_cli.config.ranges import num
from rlhf_cli.config.sampling import SamplingSection
from rlhf_cli.config.schema import FrozenModelConfig, RunConfig
from rlhf_cli.config.stages import DataConfig
from rlhf_cli.errors import ConfigError


@dataclass
class PromptDataConfig(DataConfig):
    # Field holding the prompt: a string (rendered as one user turn) or a list of chat messages.
    prompt_field: str = "prompt"
    # System message put before string prompts (and message lists that have none); null = none.
    system_prompt: Optional[str] = None
    # Python format string applied to string prompts, e.g. "{prompt}\nEnd with '#### <number>'."; null = as is.
    prompt_template: Optional[str] = None
    # Record fields handed to the reward functions (e.g. [answer]); empty = every field but the prompt.
    reward_fields: List[str] = field(default_factory=list)
    # Score and train each micro-batch of prompt + response sequences end to end in one row (no padding
    # token; attention and positions stay per sequence). Off = left-padded prompts, right-padded responses.
    padding_free: bool = True


@dataclass
class RolloutSection(SamplingSection):
    """Sampling and policy-loss settings shared by the RL stages (grpo, ppo)."""

    # Prompts per process per step; each gets num_generations responses.
    prompts_per_step: int = num(4, ge=1)
    # Responses per prompt.
    num_generations: int = num(1, ge=1)
    # Sampling: temperature 1.0 keeps the rollout distribution the policy's own (on-policy ratios).
    temperature: float = num(1.0, gt=0)
    # Per-token policy loss (rlhf_cli.algos.policy.POLICY_LOSSES): ppo_clip (the clipped surrogate, PPO /
    # DAPO clip-higher with clip_low / clip_high) | reinforce (unclipped, importance-weighted).
    policy_loss: str = "ppo_clip"
    # token_mean (DAPO, default) | seq_mean_token_mean (original GRPO) | seq_mean_token_sum_norm (Dr. GRPO).
    # token_mean: every generated token weighs the same, so long (often wrong) answers are not
    # under-penalised per token and short ones not over-rewarded, as with the per-sequence mean.
    loss_agg: str = "token_mean"
    # Clipped surrogate bounds: ratio in [1 - clip_low, 1 + clip_high]; 0.28 is DAPO's clip-higher
    # (more room for low-probability tokens to grow, against entropy collapse).
    clip_low: float = num(0.2, ge=0, lt=1)
    # Upper bound's distance from 1 (0.2 = symmetric PPO clipping).
    clip_high: float = num(0.28, ge=0)
    # Sequence positions per fp32 log-prob chunk (memory vs speed).
    logprob_chunk_size: int = num(1024, ge=1)


@dataclass
class GRPOSection(RolloutSection):
    # G, responses per prompt. 8 for real runs (DeepSeekMath used 64); >= 2 (a group needs a baseline).
    num_generations: int = num(8, ge=2)
    # Advantage estimator: grpo | dr_grpo | rloo (rlhf_cli.algos.advantages.ADVANTAGES; gae needs the ppo
    # stage's critic).
    advantage: str = "grpo"
    # grpo only: divide by the std of the group (original), the batch, or not at all (Dr. GRPO).
    scale_rewards: str = "group"
    # Added to the std before dividing, so a group of near-equal rewards does not blow up.
    adv_eps: float = num(1.0e-4, gt=0)
    # KL(policy || reference) penalty weight. 0 = none and NO reference model is loaded (common RLVR
    # practice: DAPO, Dr. GRPO); > 0 loads a frozen copy of the starting model.
    kl_coef: float = num(0.0, ge=0)
    # KL estimator: k3 (GRPO, Shao et al. 2024 eq. 4) | k1 | k2.
    kl_estimator: str = "k3"
    # Passes over each batch of generations, one optimizer update each (GRPO's mu, TRL's num_iterations;
    # the old log-probs are kept for the ratio). 1 = on-policy.
    epochs: int = num(1, ge=1)
    # DAPO dynamic sampling: drop groups whose rewards are all equal (zero advantage) and top the
    # batch up with new prompts, for at most max_resample_rounds extra generation rounds.
    dynamic_sampling: bool = False
    # Extra generation rounds dynamic sampling may spend topping a batch up.
    max_resample_rounds: int = num(3, ge=0)
    # Responses cut at max_new_tokens: none | mask (excluded from the loss, DAPO overlong filtering) |
    # penalty (reward -= overlong_penalty, ramped over the last overlong_buffer tokens; DAPO soft punishment).
    overlong: str = "none"
    # penalty: the most subtracted (at max_new_tokens).
    overlong_penalty: float = num(1.0, ge=0)
    # penalty: tokens before max_new_tokens over which it ramps from 0 up (0 = the whole amount at the cut).
    overlong_buffer: int = num(0, ge=0)


@dataclass
class RewardSection:
    # Reward functions and weights: [{name: gsm8k, weight: 1.0}, {name: format, pattern: ..., weight: 0.2},
    # {name: "python:my.module:fn"}, {name: model, path: runs/rm/final}]. Extra keys are the function's options.
    functions: List[Dict[str, Any]] = field(default_factory=lambda: [{"name": "gsm8k", "weight": 1.0}])


@dataclass
class GRPOConfig(RunConfig):
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    grpo: GRPOSection = field(default_factory=GRPOSection)
    # Reference model for the KL term (loaded only when grpo.kl_coef > 0).
    ref: FrozenModelConfig = field(default_factory=FrozenModelConfig)
    reward: RewardSection = field(default_factory=RewardSection)

    @staticmethod
    def check(cfg) -> None:
        """Value checks for GRPO (called from config.checks)."""
        check_grpo(cfg)

    @staticmethod
    def derive(cfg):
        # DeepSpeed divides each micro-batch loss by grad_accum and steps the optimizer at its boundary:
        # one GRPO policy update is all of a step's micro-batches.
        return {"train.grad_accum": (micro_batches_per_update(cfg), "grpo.prompts_per_step x "
                                     "grpo.num_generations / train.micro_batch_size (one update per pass)")}


def micro_batches_per_update(cfg) -> int:
    """Micro-batches per optimizer update: this process's prompts x G rows / train.micro_batch_size."""
    rows = cfg.grpo.prompts_per_step * cfg.grpo.num_generations
    return max(1, math.ceil(rows / max(1, cfg.train.micro_batch_size)))  # bad values are reported by the checks


def check_rollout(cfg, section: str) -> None:
    """Checks of the fields every RL stage shares (RolloutSection, data budget, reward functions)."""
    g = cfg[section]  # (numeric ranges are declared on the fields)
    if cfg.data.max_length <= g.max_new_tokens:
        raise ConfigError(f"data.max_length={cfg.data.max_length} must exceed {section}.max_new_tokens="
                          f"{g.max_new_tokens} (the rest is the prompt budget)")
    from omegaconf import OmegaConf

    from rlhf_cli.rewards import RewardError
    from rlhf_cli.rewards.registry import check_reward

    try:  # names, options and plugin files are checked; no plugin code runs, no sandbox starts
        check_reward(OmegaConf.to_container(cfg.reward.functions, resolve=True))
    except RewardError as e:
        raise ConfigError(f"reward.functions: {e}") from None


def check_grpo(cfg) -> None:
    g = cfg.grpo
    check_rollout(cfg, "grpo")
    from rlhf_cli.algos.advantages import ADVANTAGES

    needs = ADVANTAGES.meta(g.advantage).get("needs", ()) if g.advantage in ADVANTAGES else ()
    if needs:
        raise ConfigError(f"grpo.advantage={g.advantage} needs {' and '.join(needs)} (a critic): use the ppo stage, "
                          "or grpo | dr_grpo | rloo")
    choices = {"grpo.scale_rewards": (g.scale_rewards, ["group", "batch", "none"]),
               "grpo.overlong": (g.overlong, ["none", "mask", "penalty"])}
    for key, (value, options) in choices.items():
        if value not in options:
            raise ConfigError(f"{key}={value}: must be one of {', '.join(options)}")
