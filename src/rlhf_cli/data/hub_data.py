"""Datasets from the Hugging Face Hub: ``data.path=org/name`` with ``data.subset`` (the config name),
``data.split`` (``train``, ``test``, ``train[:100]``, ``train[10:20]``, ``train[:1%]``, ``train[-5%:]``) and
``data.revision``, resolved by ``huggingface_hub`` into its cache (``rlhf_cli.hub``) and read with the same
readers as local files (parquet, jsonl, json, gzipped jsonl).

Which files hold a split: the ``configs:`` mapping of the repo's README.md header (what ``datasets`` itself
reads), else the Hub's conventions: ``[<subset>/]<split>.<ext>``, ``[<subset>/]data/<split>[-*].<ext>``,
``[<subset>/]<split>-*.<ext>`` and ``<subset>/<split>/*.<ext>``. Records are numbered across the split's files
(1-based), so an error names ``org/name:split:N``.
"""
from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from rlhf_cli import hub
from rlhf_cli.errors import ConfigError

EXTS = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz")
SPLIT = re.compile(r"^(?P<name>[\w.-]+)(?:\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


@dataclass(frozen=True)
class HubDataset:
    """A split of a Hub dataset repo (what ``data.path=org/name`` names with the data.* selection keys)."""

    repo: str
    subset: Optional[str] = None
    split: str = "train"
    revision: Optional[str] = None
    key: str = "data.path"

    def __str__(self) -> str:
        sub = f"[{self.subset}]" if self.subset else ""
        return f"{self.repo}{sub}:{self.split}"

    @property
    def split_key(self) -> str:
        """The config key the split came from (for errors)."""
        return "data.eval_split" if self.key == "data.eval_path" else "data.split"

    @property
    def split_name(self) -> str:
        return parse_split(self.split, self.split_key)[0]


def parse_split(split: str, key: str = "data.split") -> Tuple[str, Optional[str], Optional[str]]:
    """``'train[:1%]'`` -> ``('train', None, '1%')``; one-line ConfigError for another shape."""
    m = SPLIT.match(str(split).strip())
    if m is None:
        raise ConfigError(f"{key}={split}: a split name, optionally sliced: train, train[:100], train[10:20], "
                          "train[:1%]")
    return m.group("name"), m.group("start"), m.group("stop")


def _bound(value: Optional[str], n: int) -> Optional[int]:
    if value is None:
        return None
    if value.endswith("%"):
        pct = int(value[:-1])
        return int(math.copysign(round(abs(pct) * n / 100), pct))
    return int(value)


def slice_bounds(split: str, n: int, key: str = "data.split") -> range:
    """The record indices ``split``'s slice keeps out of ``n`` records (Python slice semantics)."""
    _, start, stop = parse_split(split, key)
    return range(n)[slice(_bound(start, n), _bound(stop, n))]


def _readme_configs(root: Path) -> list:
    """The ``configs:`` list of the dataset card's YAML header, or []."""
    card = root / "README.md"
    if not card.is_file():
        return []
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return []
    header = text.split("---", 2)[1] if text.count("---") >= 2 else ""
    try:
        import yaml

        meta = yaml.safe_load(header) or {}
    except Exception:
        return []
    configs = meta.get("configs") if isinstance(meta, dict) else None
    return configs if isinstance(configs, list) else []


def _card_files(root: Path, subset: Optional[str], split: str) -> Optional[List[Path]]:
    """The files the card maps (subset, split) to, or None when the card says nothing about them."""
    configs = _readme_configs(root)
    if not configs:
        return None
    chosen = [c for c in configs if isinstance(c, dict) and (
        c.get("config_name") == subset if subset else c.get("default") or c.get("config_name") == "default"
        or len(configs) == 1)]
    if not chosen:
        return None
    data_files = chosen[0].get("data_files")
    if isinstance(data_files, (str, list)) and not (isinstance(data_files, list) and data_files
                                                  and isinstance(data_files[0], dict)):
        data_files = [{"split": "train", "path": data_files}]
    for entry in data_files or []:
        if isinstance(entry, dict) and entry.get("split") == split:
            patterns = entry.get("path")
            patterns = [patterns] if isinstance(patterns, str) else list(patterns or [])
            return hub.files_of(root, patterns)
    return []


def _convention_files(root: Path, subset: Optional[str], split: str) -> List[Path]:
    """The Hub's file-name conventions for a split without a card: at the top (or under ``data/``) first, then,
    as the datasets library does when those find nothing, at any depth (Anthropic/hh-rlhf keeps
    ``harmless-base/train.jsonl.gz`` beside ``helpful-base/train.jsonl.gz``; ``data.subset`` picks a folder)."""
    base = f"{subset}/" if subset else ""
    flat, nested = [], []
    for ext in EXTS:
        flat += [f"{base}{split}{ext}", f"{base}data/{split}{ext}", f"{base}data/{split}-*{ext}",
                 f"{base}{split}-*{ext}", f"{base}{split}/*{ext}"]
        nested += [f"{base}**/{split}{ext}", f"{base}**/{split}-*{ext}", f"{base}**/{split}/*{ext}"]
    return hub.files_of(root, flat) or hub.files_of(root, nested)


def available_splits(root: Path, subset: Optional[str]) -> List[str]:
    """Split names the repo's files suggest (for the error message)."""
    names = set()
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and any(rel.endswith(e) for e in EXTS) and (not subset or rel.startswith(f"{subset}/")):
            stem = p.name.split(".")[0]
            names.add(stem.split("-")[0])
    return sorted(names)


def split_files(ds: HubDataset) -> List[Path]:
    """The local files of ``ds``'s split (downloaded into the Hub cache unless offline)."""
    root = hub.snapshot(ds.repo, ds.key, ds.revision, repo_type="dataset")
    name = ds.split_name
    files = _card_files(root, ds.subset, name)
    if files is None:
        files = _convention_files(root, ds.subset, name)
    files = [f for f in files if any(fnmatch.fnmatch(f.name, f"*{e}") for e in EXTS)]
    if not files:
        have = available_splits(root, ds.subset)
        sub = f" (subset {ds.subset})" if ds.subset else ""
        raise ConfigError(f"{ds.key}={ds.repo}: no data files for split '{name}'{sub} in the dataset; "
                          f"splits found: {', '.join(have) or 'none'} (set data.split / data.subset)")
    return files


def read_hub_records(ds: HubDataset, read_file) -> Iterator[Tuple[int, dict]]:
    """``(record number, record)`` over the split's files in order, sliced as ``ds.split`` asks;
    ``read_file(path)`` is the local reader (``readers.read_records`` of one file, bad lines yielded)."""
    files = split_files(ds)
    _, start, stop = parse_split(ds.split, ds.split_key)
    if start is None and stop is None:
        n = 0
        for f in files:
            for _, rec in read_file(f):
                n += 1
                yield n, rec
        return
    records = [rec for f in files for _, rec in read_file(f)]
    for i in slice_bounds(ds.split, len(records), ds.split_key):
        yield i + 1, records[i]
