"""Config keys that were renamed: the old name still works for one release, with a one-line warning, then
it goes. Applied to recipes, command-line overrides and the config.yaml of a run being resumed."""
from __future__ import annotations

import sys
from typing import Callable, Dict

from omegaconf import DictConfig, OmegaConf

# old key -> new key (the release that renamed it: one name per concept across code, config and metrics)
ALIASES: Dict[str, str] = {
    "grpo.num_iterations": "grpo.epochs",  # passes over a rollout: `epochs`, as ppo.epochs
}


def _warn(old: str, new: str, where: str) -> None:
    print(f"warning: {where}: '{old}' is now '{new}' (the old name works for this release only)", file=sys.stderr)


def rename_override(text: str, warn: Callable[[str, str, str], None] = _warn) -> str:
    """A ``key=value`` override with a renamed key rewritten (``+``/``~`` prefixes kept)."""
    key, sep, value = text.partition("=")
    prefix = key[: len(key) - len(key.lstrip("+~"))]
    bare = key[len(prefix):]
    if sep and bare in ALIASES:
        warn(bare, ALIASES[bare], "command line")
        return f"{prefix}{ALIASES[bare]}={value}"
    return text


def rename_keys(cfg: DictConfig, source: str, warn: Callable[[str, str, str], None] = _warn) -> None:
    """Move every renamed key of ``cfg`` (a recipe, a saved config) to its new name, in place."""
    for old, new in ALIASES.items():
        parent_key, _, leaf = old.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if isinstance(parent, DictConfig) and leaf in parent:
            value = parent[leaf]
            with_struct = OmegaConf.is_struct(parent)
            OmegaConf.set_struct(parent, False)
            del parent[leaf]
            parent[new.rpartition(".")[2]] = value
            OmegaConf.set_struct(parent, with_struct)
            warn(old, new, source)
