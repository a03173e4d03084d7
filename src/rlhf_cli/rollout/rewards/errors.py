"""Exceptions shared by the reward modules."""
from __future__ import annotations


class RewardError(ValueError):
    """A reward function is misconfigured, could not be loaded, or returned bad scores."""
