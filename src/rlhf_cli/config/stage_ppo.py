"""PPO stage config (InstructGPT's third stage): rollout, KL-shaped reward, GAE, the clipped PPO update of
actor and critic, PPO-ptx, and the options against reward hacking."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from rlhf_cli.config.ranges import num
from rlhf_cli.config.schema import FrozenModelConfig, OptimConfig, RunConfig
from rlhf_cli.config.stage_grpo import PromptDataConfig, RewardSection, RolloutSection, check_rollout
from rlhf_cli.errors import ConfigError


@dataclass
class PPOSection(RolloutSection):
    # (prompts_per_step, num_generations, sampling, clip_low / clip_high, loss_agg: as in grpo.)
    # InstructGPT samples one response per prompt; several give more samples per prompt forward.
    num_generations: int = num(1, ge=1)
    # Symmetric clipping, as in the PPO paper (Schulman et al. 2017) and InstructGPT.
    clip_high: float = num(0.2, ge=0)
    # KL(policy || reference) penalty in the per-token reward, -kl_coef * KL_t (Ziegler et al. 2019);
    # the starting value when kl_controller=adaptive.
    kl_coef: float = num(0.05, ge=0)
    # Per-token KL estimator in the reward: k1 = log pi - log ref (InstructGPT, the N+ details) | k2 | k3.
    kl_estimator: str = "k1"
    # fixed | adaptive (Ziegler et al. 2019: kl_coef follows target_kl over kl_horizon samples).
    kl_controller: str = "fixed"
    # adaptive: the KL (summed over a response, averaged over responses) the controller aims for.
    target_kl: float = num(6.0, gt=0)
    # adaptive: samples over which kl_coef may change by at most +-20% (must exceed 0.2 x samples per step,
    # so one step changes kl_coef by less than itself).
    kl_horizon: int = num(10000, ge=1)
    # GAE discount and lambda (Schulman et al. 2016). gamma 1.0: episodes are one response long.
    gamma: float = num(1.0, ge=0, le=1)
    # GAE lambda: 1 = Monte-Carlo returns (high variance), 0 = one-step TD (biased by the critic).
    lam: float = num(0.95, ge=0, le=1)
    # Whiten advantages over the whole batch (all processes), as in every PPO for LMs.
    whiten_advantages: bool = True
    # The rollout policy's log-probs in the ratio and the KL: rollout (the sampler's own, saved while
    # generating: one actor forward less per step) | recompute (a teacher-forced forward, as OpenRLHF) |
    # auto = rollout in fp32 (they agree to ~1e-6), recompute in bf16/fp16 (decode kernels differ).
    old_logprobs: str = "auto"
    # Passes over each rollout, and mini-batches (= optimizer steps) per pass.
    epochs: int = num(4, ge=1)
    # Mini-batches each pass splits the rollout into; each is one optimizer step.
    mini_batches: int = num(1, ge=1)
    # Clipped value loss: values kept within +-value_clip of the rollout's values (PPO2); 0 or null = the
    # plain squared error (unclipped).
    value_clip: Optional[float] = num(0.2, ge=0)
    # Weight of the value loss (the critic is a separate model; this scales its loss).
    vf_coef: float = num(0.1, ge=0)
    # Entropy bonus weight (0 = off; costs a differentiable entropy over the vocabulary).
    entropy_coef: float = num(0.0, ge=0)
    # Stop the remaining epochs of a step once the approx-KL of the policy to the rollout policy passes
    # this bound (0 = never).
    target_approx_kl: float = num(0.0, ge=0)
    # PPO-ptx (InstructGPT eq. 2): ptx_coef x the SFT loss on ptx_data mixed into each update. 0 = off
    # (no ptx batch is even built).
    ptx_coef: float = num(0.0, ge=0)
    # SFT data for PPO-ptx (any SFT shape: messages, prompt/completion, text); needed when ptx_coef > 0.
    ptx_data: Optional[str] = None
    # --- against reward hacking (all off by default) ---
    # EOS trick (Huang et al. 2024): a response that never ends gets this score (<= 0) instead of its own.
    missing_eos_penalty: Optional[float] = num(None, le=0)
    # Score -= length_penalty x (response tokens / max_new_tokens).
    length_penalty: float = num(0.0, ge=0)
    # none | running: scores normalised by a running mean/std over all steps (kept in checkpoints).
    reward_norm: str = "none"
    # Clip scores (after normalisation) to [-reward_clip, reward_clip]; null = no clipping.
    reward_clip: Optional[float] = num(None, gt=0)
    # Write a few prompt -> response -> reward samples to samples.jsonl every N steps (0 = never).
    sample_every: int = num(10, ge=0)
    # Samples written each time.
    samples_per_write: int = num(4, ge=1)


@dataclass
class CriticSection:
    # reward_model: the value head starts as the reward model (InstructGPT; the N+ details paper) |
    # policy: the starting policy with a fresh value head.
    init: str = "reward_model"
    # Model to start from; null = the first `model` reward's path (init=reward_model) or model.* (policy).
    path: Optional[str] = None
    # The critic's own optimizer (its loss scale differs from the policy's).
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1.0e-5))


@dataclass
class PPOConfig(RunConfig):
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    ppo: PPOSection = field(default_factory=PPOSection)
    critic: CriticSection = field(default_factory=CriticSection)
    # The frozen reference for the KL term (null path = the starting policy).
    ref: FrozenModelConfig = field(default_factory=FrozenModelConfig)
    reward: RewardSection = field(default_factory=RewardSection)

    @staticmethod
    def check(cfg) -> None:
        check_ppo(cfg)

    @staticmethod
    def derive(cfg):
        return {"train.grad_accum": (micro_batches_per_mini_batch(cfg),
                                     "ppo.prompts_per_step x ppo.num_generations / ppo.mini_batches / "
                                     "train.micro_batch_size (one optimizer step per mini-batch)")}


def micro_batches_per_mini_batch(cfg) -> int:
    rows = cfg.ppo.prompts_per_step * cfg.ppo.num_generations / max(1, cfg.ppo.mini_batches)
    return max(1, math.ceil(rows / max(1, cfg.train.micro_batch_size)))


def critic_source(cfg) -> Optional[str]:
    """The model dir the critic starts from (None: the policy's model.* settings)."""
    if cfg.critic.path:
        return cfg.critic.path
    if cfg.critic.init == "policy":
        return None
    for fn in cfg.reward.functions:
        if fn.get("name") == "model":
            path = fn.get("path")
            return path if isinstance(path, str) else path[0]  # an ensemble: the first reward model
    raise ConfigError("critic.init=reward_model needs a `model` reward in reward.functions or critic.path "
                      "(or set critic.init=policy)")


def check_ppo(cfg) -> None:
    p = cfg.ppo
    check_rollout(cfg, "ppo")
    choices = {"ppo.reward_norm": (p.reward_norm, ["none", "running"]),
               "ppo.old_logprobs": (p.old_logprobs, ["auto", "rollout", "recompute"]),
               "critic.init": (cfg.critic.init, ["reward_model", "policy"])}
    for key, (value, options) in choices.items():
        if value not in options:
            raise ConfigError(f"{key}={value}: must be one of {', '.join(options)}")
    rows = p.prompts_per_step * p.num_generations
    if rows % p.mini_batches:
        raise ConfigError(f"ppo.mini_batches={p.mini_batches} must divide ppo.prompts_per_step x "
                          f"ppo.num_generations = {rows}")
    if p.ptx_coef > 0 and not p.ptx_data:
        raise ConfigError("ppo.ptx_coef > 0 needs ppo.ptx_data (an SFT data file)")
    if p.ptx_data:
        from rlhf_cli.config.checks import check_file

        check_file("ppo.ptx_data", p.ptx_data)
    if cfg.critic.path:
        from rlhf_cli.models.loading import resolve_model_dir

        resolve_model_dir(cfg.critic.path, key="critic.path")
    critic_source(cfg)
    if p.kl_controller == "adaptive":
        check_kl_horizon(cfg, world_size=1)  # again at the start of the run, with the real process count


def check_kl_horizon(cfg, world_size: int) -> None:
    """The adaptive KL controller changes kl_coef by at most 0.2 x samples per update / kl_horizon of itself;
    at 100% or more it could turn negative (rewarding divergence): refused in one line."""
    p = cfg.ppo
    if not p.kl_coef > 0:
        raise ConfigError(f"ppo.kl_controller=adaptive needs ppo.kl_coef > 0 (its starting value), got {p.kl_coef}")
    samples = p.prompts_per_step * p.num_generations * world_size
    if not 0.2 * samples < p.kl_horizon:
        raise ConfigError(f"ppo.kl_horizon={p.kl_horizon} is too small for {samples} samples per step "
                          f"(ppo.prompts_per_step x ppo.num_generations x {world_size} process(es)): kl_coef could "
                          f"change by {0.2 * samples / p.kl_horizon:.0%} of itself in one step and turn negative; "
                          f"use ppo.kl_horizon > {0.2 * samples:g}")
