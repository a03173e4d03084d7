"""A real Hugging Face Hub cache, built by a test: ``models--org--name/snapshots/<commit>/`` (or
``datasets--org--name/...``) holding the repo's files and ``refs/<branch>`` naming the commit, exactly the
layout ``huggingface_hub`` reads. With ``HF_HUB_OFFLINE=1`` (set for every test in conftest.py) a Hub ID then
resolves through ``huggingface_hub.snapshot_download`` the way an online run's second use does."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Dict, Union


def _commit(files: Dict[str, bytes]) -> str:
    h = hashlib.sha1()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha1(files[name]).digest())
    return h.hexdigest()


def add_repo(cache: Path, repo_id: str, files: Dict[str, Union[str, bytes, Path]], repo_type: str = "model",
             branch: str = "main") -> str:
    """Put ``files`` (repo path -> text, bytes or a local file to copy) in the cache as a commit of
    ``repo_id`` that ``branch`` points to; returns the commit hash."""
    data = {}
    for name, value in files.items():
        data[name] = value.read_bytes() if isinstance(value, Path) else (value.encode() if isinstance(value, str)
                                                                        else value)
    commit = _commit(data)
    root = Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snap = root / "snapshots" / commit
    for name, content in data.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_bytes(content)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / branch).write_text(commit)
    return commit


def add_model_dir(cache: Path, repo_id: str, model_dir: Path, branch: str = "main") -> str:
    """A local Hugging Face model dir as a Hub model repo."""
    return add_repo(cache, repo_id, {p.name: p for p in Path(model_dir).iterdir() if p.is_file()}, "model", branch)


def parquet_bytes(rows) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(list(rows)), buf)
    return buf.getvalue()


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def card(configs) -> str:
    """A dataset card whose YAML header maps splits to files (what the Hub shows as 'configs')."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines.append(f"- config_name: {name}")
        lines.append("  data_files:")
        for split, pattern in splits.items():
            lines += [f"  - split: {split}", f"    path: {pattern}"]
    return "\n".join(lines + ["---", "", "A test dataset."]) + "\n"


def env(cache: Path) -> Dict[str, str]:
    """The environment a subprocess needs to read ``cache`` offline."""
    return {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def clear(cache: Path) -> None:
    shutil.rmtree(cache, ignore_errors=True)
