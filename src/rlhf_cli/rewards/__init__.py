"""Reward functions for the RL stages (GRPO, PPO, RLAIF).

``build_reward(cfg.reward.functions)`` -> :class:`CombinedReward`; call it with
``(prompts, completions, **dataset_fields)`` to get a :class:`RewardOutput`.
Built-ins: ``gsm8k``, ``math``, ``format``, ``code``, ``model``, ``judge``; custom: ``python:module:function``.
"""
# Importing the built-in reward modules registers them (decorators on REWARDS).
from . import code as _code  # noqa: F401
from . import format as _format  # noqa: F401
from . import gsm8k as _gsm8k  # noqa: F401
from . import judge as _judge  # noqa: F401
from . import math_answer as _math_answer  # noqa: F401  (no stdlib names here: see _sandbox_child)
from . import model as _model  # noqa: F401
from .code import ExecResult, extract_code, run_code
from .errors import RewardError
from .gsm8k import extract_answer, normalize_number
from .plugin import load_plugin
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

__all__ = [
    "REWARDS", "Registry", "UnknownNameError", "RewardError", "RewardOutput", "RewardTerm",
    "CombinedReward", "build_reward", "build_reward_fn", "validate_scores", "extract_answer",
    "normalize_number", "extract_code", "run_code", "ExecResult", "load_plugin",
]
