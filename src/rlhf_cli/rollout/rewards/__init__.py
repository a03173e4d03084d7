"""Reward functions for the RL stages (GRPO, PPO, RLAIF).

``build_reward(cfg.reward.functions)`` -> :class:`CombinedReward`; call it with
``(prompts, completions, **dataset_fields)`` to get a :class:`RewardOutput`.
Built-ins: ``gsm8k``, ``format``, ``code``; custom: ``python:module:function``.
"""
from .errors import RewardError
from .registry import (
    REWARDS,
    CombinedReward,
    Registry,
    RewardOutput,
    RewardTerm,
    UnknownNameError,
    build_reward,
    build_reward_fn,
    validate_scores,
)
from . import gsm8k as _gsm8k, format as _format, code as _code  # noqa: E402,F401  (register built-ins)
from .gsm8k import extract_answer, normalize_number
from .code import extract_code, run_code, ExecResult
from .plugin import load_plugin

__all__ = [
    "REWARDS", "Registry", "UnknownNameError", "RewardError", "RewardOutput", "RewardTerm",
    "CombinedReward", "build_reward", "build_reward_fn", "validate_scores", "extract_answer",
    "normalize_number", "extract_code", "run_code", "ExecResult", "load_plugin",
]
