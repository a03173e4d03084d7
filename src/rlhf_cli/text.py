"""Small text helpers every layer may use (no project imports)."""
from __future__ import annotations

import difflib
from typing import Iterable


def closest(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'X'?)' for the closest option to a mistyped ``word``, or ''."""
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""
