"""Stop strings of the rollout: a row finishes once the decoded tail of its response contains one."""
from __future__ import annotations

from typing import Any

import torch


class StopChecker:
    """Checks whether the decoded tail of each unfinished row contains a stop string."""

    def __init__(self, stop_strings: tuple[str, ...], tokenizer: Any):
        if tokenizer is None or not hasattr(tokenizer, "decode"):
            raise ValueError("stop_strings require a tokenizer with a `decode` method")
        self.stop_strings = stop_strings
        self.tokenizer = tokenizer
        # A stop string of n chars spans at most n tokens if each token decodes to >= 1 char;
        # +2 gives slack for tokens that decode to partial / empty text.
        self.window = max(len(s) for s in stop_strings) + 2

    def __call__(self, response: torch.Tensor, t: int, finished: torch.Tensor) -> torch.Tensor:
        """Return a [B] bool tensor of rows that hit a stop string at step ``t`` (unfinished rows only)."""
        lo = max(0, t + 1 - self.window)
        rows = (~finished).nonzero(as_tuple=True)[0].tolist()
        hit = torch.zeros_like(finished)
        if not rows:
            return hit
        tails = response[rows, lo : t + 1].tolist()
        for r, tail in zip(rows, tails):
            text = self.tokenizer.decode(tail)
            if any(s in text for s in self.stop_strings):
                hit[r] = True
        return hit
