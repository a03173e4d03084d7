"""Read dataset files into (line_number, record) pairs.

Formats: ``.jsonl`` / ``.jsonl.gz`` (line numbers are file lines), ``.json`` (a list, or a mapping with
one list value; "line" is the 1-based record index), ``.parquet`` and ``datasets.save_to_disk`` dirs
(record index). ``builtin:NAME`` names an example file shipped with rlhf-cli; ``org/name`` (no such local
path) a dataset on the Hugging Face Hub (``data/hub_data.py``: ``data.subset``, ``data.split``,
``data.revision``), read the same way.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

from rlhf_cli.errors import ConfigError, DataError

Record = Dict[str, object]
T = TypeVar("T")


def builtin_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    for cand in (here / "examples", here.parent.parent / "examples"):
        if cand.is_dir():
            return cand
    raise ConfigError("bundled examples directory not found")


def builtin_names() -> List[str]:
    d = builtin_dir()
    return sorted(p.name for p in d.iterdir() if p.suffix in (".jsonl", ".gz", ".json", ".parquet"))


def data_source(path: str, d=None, key: str = "data.path", split: Optional[str] = None):
    """What ``path`` names, for ``read_records``: a local file / dir / bundled example (a ``Path``), or a
    split of a Hub dataset (``hub_data.HubDataset``, selected by ``d``'s ``subset``, ``split`` (or
    ``split``), ``revision``). One-line ConfigError naming ``key`` when it is neither."""
    from rlhf_cli.hub import is_hub_id, split_id

    if isinstance(path, str) and not path.startswith("builtin:") and is_hub_id(path):
        from rlhf_cli.data.hub_data import HubDataset, split_files

        repo, rev = split_id(path, getattr(d, "revision", None) if d is not None else None)
        ds = HubDataset(repo, getattr(d, "subset", None) if d is not None else None,
                        split or (getattr(d, "split", None) if d is not None else None) or "train", rev, key)
        split_files(ds)  # resolvable, and the split exists: fail here, in one line, not mid-run
        return ds
    return resolve_data_path(path, key=key)


def source_for(path, d):
    """``data_source`` of a loader's ``path`` under data config ``d``: ``d.path`` reads ``d.split``,
    ``d.eval_path`` reads ``d.eval_split`` (a Hub dataset's held-out split)."""
    if not isinstance(path, str):
        return path
    is_eval = d is not None and path == getattr(d, "eval_path", None) and path != getattr(d, "path", None)
    key = "data.eval_path" if is_eval else "data.path"
    return data_source(path, d, key=key, split=getattr(d, "eval_split", None) if is_eval else None)


def resolve_data_path(path: str, key: str = "data.path") -> Path:
    """Map a config value to an existing file/dir or raise a one-line ConfigError naming ``key``."""
    if path.startswith("builtin:"):
        name = path[len("builtin:"):]
        resolved = builtin_dir() / name
        if not resolved.exists():
            from rlhf_cli.text import closest

            raise ConfigError(f"{key}={path}: no such example{closest(name, builtin_names())}; "
                              f"examples: {', '.join(builtin_names())}")
        return resolved
    resolved = Path(path)
    if not resolved.exists():
        raise ConfigError(f"{key}={path}: file not found")
    if resolved.is_dir() and not (resolved / "dataset_info.json").exists() and not (
            resolved / "dataset_dict.json").exists():
        raise ConfigError(f"{key}={path}: a directory must be a datasets.save_to_disk dir")
    return resolved


class BadRecord(DataError, ValueError):
    """A line that could not be read as a record (bad bytes, bad JSON, not an object, broken gzip). A
    DataError: should one ever reach the CLI, it is one line like any other.

    ``read_records(..., bad="yield")`` yields it in place of the record so loaders count it like any
    other bad record under ``data.skip_bad`` (``raise rec`` inside their per-record ``try``)."""


def _gzip_error(e: Exception) -> str:
    if isinstance(e, gzip.BadGzipFile):
        return f"not a gzip file ({e})"
    if isinstance(e, EOFError):
        return "truncated gzip file (compressed stream ended early)"
    return f"corrupt gzip data ({type(e).__name__}: {e})"


def _read_jsonl(path: Path, gz: bool) -> Iterator[Tuple[int, Record]]:
    import zlib

    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        line_no = 0
        while True:
            try:
                raw = f.readline()
            except (EOFError, OSError, zlib.error) as e:
                if not gz:
                    raise
                yield line_no + 1, BadRecord(_gzip_error(e))  # nothing after this can be read
                return
            if not raw:
                return
            line_no += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield line_no, BadRecord(f"invalid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
                continue
            if line_no == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield line_no, BadRecord(f"invalid JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(rec, dict):
                yield line_no, BadRecord(f"a record must be a JSON object, got {type(rec).__name__}")
                continue
            yield line_no, rec


def _read_json(path: Path) -> Iterator[Tuple[int, Record]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: invalid UTF-8 (byte 0x{raw[e.start]:02x})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a list of records or a mapping with one list of records")
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of records")
    for i, rec in enumerate(data, start=1):
        if not isinstance(rec, dict):
            yield i, BadRecord(f"record {i} must be an object, got {type(rec).__name__}")
            continue
        yield i, rec


def _read_table(path: Path) -> Iterator[Tuple[int, Record]]:
    if path.is_dir():
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            split = "train" if "train" in ds else next(iter(ds))
            ds = ds[split]
        rows = ds
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    for i, rec in enumerate(rows, start=1):
        yield i, dict(rec)


def read_records(path: str | Path, limit: int = 0, bad: str = "raise") -> Iterator[Tuple[int, Record]]:
    """Yield (line, record) from any supported file; stop after ``limit`` records when > 0.

    A line that cannot be read raises ``DataError("file:line: why")`` (``bad="raise"``) or is yielded
    as a :class:`BadRecord` (``bad="yield"``) for the caller to skip and count or report."""
    from rlhf_cli.data.hub_data import HubDataset, read_hub_records

    if isinstance(path, str):
        path = data_source(path)
    if isinstance(path, HubDataset):
        it = read_hub_records(path, lambda f: read_records(f, bad="yield"))
        for n, (line, rec) in enumerate(it):
            if limit and n >= limit:
                return
            if isinstance(rec, BadRecord) and bad == "raise":
                raise DataError(f"{path}:{line}: {rec}")
            yield line, rec
        return
    name = path.name.lower()
    if path.is_dir() or name.endswith(".parquet"):
        it = _read_table(path)
    elif name.endswith(".jsonl.gz") or name.endswith(".json.gz"):
        it = _read_jsonl(path, gz=True)
    elif name.endswith(".jsonl"):
        it = _read_jsonl(path, gz=False)
    elif name.endswith(".json"):
        it = _read_json(path)
    else:
        raise DataError(f"{path}: unsupported file type (use .jsonl, .jsonl.gz, .json, .parquet or a dataset dir)")
    for n, (line, rec) in enumerate(it):
        if limit and n >= limit:
            return
        if isinstance(rec, BadRecord) and bad == "raise":
            raise DataError(f"{path}:{line}: {rec}")
        yield line, rec


def parsed_records(path, parse: Callable[[Record], T], stats, skip_bad: bool, limit: int = 0,
                   errors: Tuple[type, ...] = (ValueError,)) -> Iterator[Tuple[int, Record, T]]:
    """Yield ``(line, record, parse(record))`` for every good record of ``path``, counting ``stats.records``.

    The one bad-record rule every loader follows: a line that cannot be read, or whose ``parse`` raises one
    of ``errors``, stops the run with ``DataError("file:line: why")`` unless ``skip_bad``, which skips it
    and counts ``stats.skipped``."""
    for line, rec in read_records(path, limit=limit, bad="yield"):
        stats.records += 1
        try:
            if isinstance(rec, BadRecord):
                raise rec
            parsed = parse(rec)
        except errors as e:
            if skip_bad:
                stats.skipped += 1
                continue
            raise DataError(f"{path}:{line}: {e} (set data.skip_bad=true to skip bad records)") from None
        yield line, rec, parsed
