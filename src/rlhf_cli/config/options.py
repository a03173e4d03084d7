"""Typed ``key=value`` options of the non-training commands (generate, chat, eval, label, ...)."""
from __future__ import annotations

from typing import Dict, Sequence

from rlhf_cli.errors import ConfigError
from rlhf_cli.text import closest


def parse_kv(words: Sequence[str], allowed: Dict[str, type], command: str) -> Dict[str, object]:
    """Plain key=value options for non-training commands (generate, eval...), typed by ``allowed``."""
    out: Dict[str, object] = {}
    for w in words:
        key, sep, value = w.partition("=")
        if not sep:
            raise ConfigError(f"{command}: expected key=value, got '{w}'")
        if key not in allowed:
            raise ConfigError(f"{command}: unknown key '{key}'{closest(key, allowed)}; keys: {', '.join(allowed)}")
        typ = allowed[key]
        try:
            out[key] = (value.lower() in ("1", "true", "yes")) if typ is bool else typ(value)
        except ValueError:
            raise ConfigError(f"{command}: {key}={value}: expected {typ.__name__}") from None
    return out
