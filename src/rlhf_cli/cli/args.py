"""Split `key=value` command-line words into the recipe (conf=...) and Hydra overrides."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from rlhf_cli.config.options import parse_kv  # noqa: F401  (re-exported for the commands)
from rlhf_cli.errors import ConfigError


def split_args(words: Sequence[str]) -> Tuple[Optional[str], List[str]]:
    recipe, overrides = None, []
    for w in words:
        if w.startswith("conf="):
            recipe = w[len("conf="):]
        elif "=" in w or w.startswith("~"):
            overrides.append(w)
        else:
            raise ConfigError(f"unexpected argument '{w}': use key=value overrides or conf=recipe.yaml")
    return recipe, overrides
