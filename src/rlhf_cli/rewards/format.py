"""``format`` reward: does the completion follow a required layout (regex)?"""
from __future__ import annotations

import re
from typing import Any, Callable, List, Optional, Sequence, Union

from .errors import RewardError
from .registry import REWARDS

_FLAG_LETTERS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "a": re.ASCII}
_MODES = ("search", "fullmatch", "match")


def parse_flags(flags: Union[str, int, None]) -> int:
    """``"s"`` -> re.DOTALL, ``"is"`` -> IGNORECASE|DOTALL; ints are passed through."""
    if flags is None or flags == "":
        return 0
    if isinstance(flags, int) and not isinstance(flags, bool):
        return flags
    if not isinstance(flags, str):
        raise RewardError(f"format: flags must be a string of letters from 'imsxa', got {flags!r}")
    out = 0
    for ch in flags.lower():
        if ch in " ,|":
            continue
        if ch not in _FLAG_LETTERS:
            raise RewardError(f"format: unknown regex flag {ch!r} in flags={flags!r} (valid: i, m, s, x, a)")
        out |= _FLAG_LETTERS[ch]
    return out


@REWARDS.register("format")
def make_format_reward(
    *,
    pattern: str,
    flags: Union[str, int, None] = "s",
    mode: str = "search",
    partial: bool = False,
    tags: Optional[Sequence[str]] = None,
    partial_scale: float = 0.5,
) -> Callable[..., List[float]]:
    """1.0 if ``pattern`` matches the completion (``mode``: search|fullmatch|match), else 0.0.

    With ``partial=true`` and ``tags`` (e.g. ``["<think>", "</think>", "<answer>",
    "</answer>"]``) a non-matching completion scores ``partial_scale`` × the fraction of
    tags that occur exactly once (``partial_scale=1.0`` scores the tag fraction alone).
    """
    if not isinstance(pattern, str) or not pattern:
        raise RewardError(f"format: 'pattern' must be a non-empty regex string, got {pattern!r}")
    try:
        regex = re.compile(pattern, parse_flags(flags))
    except re.error as e:
        raise RewardError(f"format: invalid regex pattern {pattern!r}: {e}") from None
    if mode not in _MODES:
        raise RewardError(f"format: mode must be one of {', '.join(_MODES)}, got {mode!r}")
    if partial:
        if not tags:
            raise RewardError("format: partial=true needs 'tags' (a list of strings to count)")
    elif tags:
        raise RewardError("format: 'tags' is only used with partial=true")
    if tags is not None:
        if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags):
            raise RewardError(f"format: tags must be a list of non-empty strings, got {tags!r}")
        tags = list(tags)
    partial_scale = float(partial_scale)
    if not 0.0 <= partial_scale <= 1.0:
        raise RewardError(f"format: partial_scale must be in [0, 1], got {partial_scale}")
    matcher = getattr(regex, mode)

    def format_reward(prompts: Sequence[str], completions: Sequence[str], **fields: Any) -> List[float]:
        scores = []
        for c in completions:
            c = "" if c is None else str(c)
            if matcher(c) is not None:
                scores.append(1.0)
            elif partial:
                frac = sum(c.count(t) == 1 for t in tags) / len(tags)
                scores.append(partial_scale * frac)
            else:
                scores.append(0.0)
        return scores

    return format_reward


make_format_reward.pure = True  # only checks its options: config-time validation may call it
