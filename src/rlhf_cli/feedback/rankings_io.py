"""Crash-safe JSONL for labelling sessions: one complete line per judgement, fsynced before the UI moves on.

``append`` writes one ``json + "\\n"`` with a single ``os.write`` on an ``O_APPEND`` descriptor, then
``fsync``: after it returns the line is on disk whole. A crash mid-write can leave at most a torn LAST line
(no newline); ``read_lines`` ignores it and ``JsonlAppender`` cuts it off before appending, so the next
line never glues onto it. ``undo`` truncates the file back to before a line this session wrote.

Files of a labelling session (``out=rankings.jsonl``):

- ``rankings.jsonl``: K-wise rankings the rm stage reads (``data.format=ranking``);
- ``rankings.skipped.jsonl``: items skipped or judged "all bad" (all tied: nothing for the rm to learn);
  kept so a rerun does not show them again.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Tuple


def read_lines(path: Path) -> List[dict]:
    """Complete JSON lines of ``path`` (a torn last line, from a crash, is ignored)."""
    p = Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    end = data.rfind(b"\n") + 1  # bytes after the last newline are a torn line
    out = []
    for i, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            from rlhf_cli.errors import DataError

            raise DataError(f"{p}:{i}: invalid JSON in a labelling file") from None
        out.append(rec)
    return out


class JsonlAppender:
    """Append-only writer with fsync per line and truncate-undo."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        size = os.fstat(self.fd).st_size
        if size:
            with open(self.path, "rb") as f:
                data = f.read()
            keep = data.rfind(b"\n") + 1
            if keep != size:  # a torn last line from a crash: drop it
                os.ftruncate(self.fd, keep)
                os.fsync(self.fd)

    def append(self, record: dict) -> Tuple[int, int]:
        """Write one line durably; returns (offset before, offset after) for ``undo``."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        start = os.fstat(self.fd).st_size
        n = os.write(self.fd, line)
        if n != len(line):
            raise OSError(f"{self.path}: short write ({n} of {len(line)} bytes)")
        os.fsync(self.fd)
        return start, start + n

    def undo(self, start: int) -> None:
        os.ftruncate(self.fd, start)
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def skipped_path(out: Path) -> Path:
    out = Path(out)
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.skipped.jsonl")


def item_key(prompt) -> str:
    """The identity of a prompt across runs (labelled prompts are not shown again)."""
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def done_keys(out: Path, annotator: str) -> set:
    """Prompts this annotator already ranked, skipped or judged all bad."""
    keys = set()
    for p in (Path(out), skipped_path(out)):
        for rec in read_lines(p):
            if rec.get("annotator") == annotator and "prompt" in rec:
                keys.add(item_key(rec["prompt"]))
    return keys


def ranks_from_groups(groups: List[List[int]], k: int) -> List[int]:
    """[[2], [0, 3], [1]] (best group first, candidate indices) -> ranks per candidate [1, 2, 0, 1]."""
    ranks = [-1] * k
    for r, g in enumerate(groups):
        for i in g:
            ranks[i] = r
    if min(ranks) < 0:
        raise ValueError("every candidate needs a rank")
    return ranks
