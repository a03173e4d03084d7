"""Saved progress of a chunked data-making run (RLAIF's phases): every process writes each finished chunk
of a phase to ``output_dir/rlaif_chunks/<phase>.rank<R>.chunk<K>.json`` (records per output file + counts,
atomically), so a rerun after an interruption skips the saved chunks and continues; ``done.json`` marks the
phases finished (the merged files are written) and holds their summary for the stage that follows.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from rlhf_cli.output_files import write_output

# (no torch here: run_dir reads saved_chunks() before any worker starts)
Records = Dict[str, List[dict]]

CHUNK_DIR = "rlaif_chunks"
DONE = "done.json"


def chunk_path(out: Path, phase: str, rank: int, chunk: int) -> Path:
    return Path(out) / CHUNK_DIR / f"{phase}.rank{rank}.chunk{chunk:05d}.json"


def save_chunk(path: Path, records: Records, counts: Dict[str, float]) -> None:
    """Write a chunk's records (output file -> records) and counts whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_output(path, json.dumps({"records": records, "counts": counts}, ensure_ascii=False))


def load_chunk(path: Path) -> Optional[Tuple[Records, Dict[str, float]]]:
    """A saved chunk's (records, counts), or None when there is none (or it cannot be read: it is
    recomputed, never fatal)."""
    try:
        saved = json.loads(path.read_text())
        return dict(saved["records"]), dict(saved["counts"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def merge_chunks(out: Path, names: List[str]) -> Dict[str, List[dict]]:
    """Every process's saved records of the files ``names``, in (prompt, pair) order, ``_order`` dropped."""
    merged: Dict[str, List[dict]] = {name: [] for name in names}
    for path in sorted((Path(out) / CHUNK_DIR).glob("*.chunk*.json")):
        part = load_chunk(path)
        for name, recs in (part[0] if part else {}).items():
            if name in merged:
                merged[name] += recs
    for recs in merged.values():
        recs.sort(key=lambda x: x["_order"])
        for rec in recs:
            rec.pop("_order")
    return merged


def saved_chunks(out: Path) -> int:
    """How many chunks a run in ``out`` saved (0: no RLAIF progress to resume)."""
    d = Path(out) / CHUNK_DIR
    return len(list(d.glob("*.chunk*.json"))) + int((d / DONE).exists()) if d.is_dir() else 0


def read_done(out: Path) -> Optional[dict]:
    """The finished phases' summary, or None when the phases did not finish."""
    try:
        return json.loads((Path(out) / CHUNK_DIR / DONE).read_text())
    except (OSError, ValueError):
        return None


def write_done(out: Path, summary: dict) -> None:
    write_output(Path(out) / CHUNK_DIR / DONE, json.dumps(summary))


def drop_chunks(out: Path) -> None:
    """The chunk files once merged (done.json stays: it marks the phases finished)."""
    for path in (Path(out) / CHUNK_DIR).glob("*.chunk*.json"):
        path.unlink(missing_ok=True)
