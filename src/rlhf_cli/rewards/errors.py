"""Exceptions shared by the reward modules, and the check of a dataset field a reward reads."""
from __future__ import annotations

from typing import Any, Mapping

from rlhf_cli.errors import RlhfError


class RewardError(RlhfError, ValueError):
    """A reward function is misconfigured, could not be loaded, or returned bad scores (exit code 2)."""

    exit_code = 2


def dataset_field(fields: Mapping[str, Any], name: str, reward: str, option: str) -> Any:
    """``fields[name]``, or a one-line RewardError naming the fields the records do have and the option
    (``option``) that picks another."""
    if name not in fields:
        raise RewardError(f"{reward} reward needs the dataset field {name!r} "
                          f"(available fields: {', '.join(sorted(fields)) or 'none'}; set {option})")
    return fields[name]
