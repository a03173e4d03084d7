"""Typed ``key=value`` options of the non-training commands (generate, chat, eval, bench, label, ...)."""
from __future__ import annotations

from typing import Any, Dict, Sequence

from rlhf_cli.errors import ConfigError
from rlhf_cli.text import closest


def parse_kv(words: Sequence[str], allowed: Dict[str, Any], command: str) -> Dict[str, object]:
    """Plain key=value options for non-training commands, typed by ``allowed``: ``{key: type}`` or
    ``{key: (type, Range)}`` for a number with an allowed range (config.ranges)."""
    out: Dict[str, object] = {}
    for w in words:
        key, sep, value = w.partition("=")
        if not sep:
            raise ConfigError(f"{command}: expected key=value, got '{w}'")
        if key not in allowed:
            raise ConfigError(f"{command}: unknown key '{key}'{closest(key, allowed)}; keys: {', '.join(allowed)}")
        typ, rng = allowed[key] if isinstance(allowed[key], tuple) else (allowed[key], None)
        if typ is bool:
            if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
                raise ConfigError(f"{command}: {key}={value}: expected true or false")
            out[key] = value.lower() in ("1", "true", "yes")
            continue
        try:
            out[key] = typ(value)
        except ValueError:
            raise ConfigError(f"{command}: {key}={value}: expected {typ.__name__}") from None
        if rng is not None and not rng.ok(out[key]):
            raise ConfigError(f"{command}: {key}={value}: must be {rng.text()}")
    return out
