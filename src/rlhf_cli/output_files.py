"""Files a command writes on request (``out=``, ``judgements=``): never over one of its own inputs, and whole."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Sequence

from rlhf_cli.errors import ConfigError


def output_file(out: str, inputs: Iterable[str], command: str, key: str = "out") -> Path:
    """``key=out`` checked not to be one of the command's own input files, which writing it would destroy
    (``rlhf elo rankings.jsonl out=rankings.jsonl`` replaced a person's labels with the ratings)."""
    path = Path(out)
    for src in inputs:
        try:
            same = path.exists() and os.path.samefile(path, src)
        except OSError:  # src is not a file (a model name, a number): nothing to protect
            same = False
        if same:
            raise ConfigError(f"{command}: {key}={out} is also an input ({src}); writing it would destroy that "
                              f"file: choose another {key}=")
    return path


def file_values(words: Sequence[str]) -> List[str]:
    """The values of ``key=value`` words (each item of a ``[a,b]`` list too): the candidates for input files."""
    out = []
    for w in words:
        value = w.split("=", 1)[1] if "=" in w else w
        out += [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    return out


def write_output(path: Path, text: str) -> None:
    """Write a file whole or not at all (a temp file renamed over it), its folder made if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
