"""What makes one RL algorithm differ from another in the shared core: a stage builds an ``Algorithm`` from
its config section and hands it to ``rl.experience.make_experience`` and ``rl.update.PolicyUpdate``.

PPO (InstructGPT) and GRPO (DeepSeekMath, with DAPO / Dr. GRPO options) are two values of it::

    PPO:  advantage=gae (a critic), kl_in=reward (KL-shaped per-token rewards), old_logprobs=rollout|recompute,
          epochs x mini_batches shuffled, whitened advantages, value loss, PPO-ptx
    GRPO: advantage=grpo|dr_grpo|rloo (no critic), kl_in=loss (a KL term in the policy loss), one mini-batch,
          old log-probs recomputed only when epochs > 1 (on-policy: the update's own detached log-probs)

A new algorithm is a new value (and, where it needs one, a registered advantage estimator or policy loss
in ``algos/``), not a new update loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

KL_PLACEMENTS = ("reward", "loss")
OLD_LOGPROBS = ("rollout", "recompute", "current")


@dataclass
class Algorithm:
    # The stage's config section (grpo / ppo): sampling temperature, num_generations, logprob_chunk_size,
    # loss_agg and max_new_tokens (the Dr. GRPO constant) are read from it
    section: object
    # ADVANTAGES entry and the options it takes ({kwarg: value}, read from the stage's section)
    advantage: str
    advantage_options: Dict[str, object]
    # POLICY_LOSSES entry and its options
    policy_loss: str
    policy_loss_options: Dict[str, object]
    # KL(policy || reference): "reward" = -kl_coef * KL_t in the per-token reward (Ziegler et al. 2019);
    # "loss" = kl_coef * KL_t added to the per-token policy loss (GRPO, Shao et al. 2024 eq. 3)
    kl_in: str
    kl_coef: float
    kl_estimator: str
    # The log-probs of the policy that sampled (the ratio's denominator): "rollout" = the sampler's own,
    # "recompute" = a teacher-forced forward before the update, "current" = the update's own detached
    # log-probs (exactly on-policy: ratio 1, for one update per rollout)
    old_logprobs: str
    # Passes over each rollout, and optimizer steps per pass (the rollout split into mini-batches)
    epochs: int = 1
    mini_batches: int = 1
    # A seeded permutation of the rollout before each pass (PPO); False keeps the rollout's order
    shuffle: bool = False
    # Whiten the advantages over the whole batch (every process)
    whiten_advantages: bool = False
    # Stop a step's remaining passes once the approx-KL to the rollout policy exceeds this (0 = never)
    target_approx_kl: float = 0.0
    entropy_coef: float = 0.0
    # A critic's clipped value loss (PPO): None = no critic
    value_clip: Optional[float] = None
    vf_coef: float = 0.0
    # PPO-ptx: this times the SFT loss of a ptx batch per micro-batch (0 = none)
    ptx_coef: float = 0.0
    # Responses that hit the length budget without ending are excluded from the loss (DAPO overlong mask)
    mask_truncated: bool = False

    def __post_init__(self) -> None:
        if self.kl_in not in KL_PLACEMENTS:
            raise ValueError(f"kl_in={self.kl_in!r}: must be one of {', '.join(KL_PLACEMENTS)}")
        if self.old_logprobs not in OLD_LOGPROBS:
            raise ValueError(f"old_logprobs={self.old_logprobs!r}: must be one of {', '.join(OLD_LOGPROBS)}")
        if self.old_logprobs == "current" and self.epochs > 1:
            raise ValueError("old_logprobs='current' is exact only for one update per rollout (epochs=1)")


def registered_options(registry, name: str, section) -> Dict[str, object]:
    """The config values a registered entry declares as its options: ``{kwarg: section[field]}``."""
    return {arg: section[field] for arg, field in registry.meta(name).get("options", {}).items()}
