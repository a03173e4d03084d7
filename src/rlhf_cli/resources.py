"""Where the packaged files live (no project imports beyond errors): the conf/ tree."""
from __future__ import annotations

from pathlib import Path

from rlhf_cli.errors import ConfigError


def conf_dir() -> Path:
    """The packaged conf/ tree: inside the wheel, or at the repo root in a source checkout."""
    here = Path(__file__).resolve().parent
    for cand in (here / "conf", here.parent.parent / "conf"):
        if (cand / "stage").is_dir():
            return cand
    raise ConfigError(f"packaged config directory not found next to {here}")
