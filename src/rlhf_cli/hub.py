"""Models and datasets from the Hugging Face Hub, resolved by ``huggingface_hub`` into its cache.

Any place that names a model dir or a data file also takes a Hub ID: ``org/name`` (optionally
``org/name@REVISION``: a branch, tag or commit). An existing local path always wins; otherwise the ID is
resolved by ``huggingface_hub.snapshot_download`` into the standard cache (``$HF_HUB_CACHE``, else
``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), the same code path an online run takes; with
``HF_HUB_OFFLINE=1`` only the cache is read. A gated or private repo uses the token ``huggingface_hub``
finds in its standard places (``HF_TOKEN``, ``huggingface-cli login``); it is never printed.

Every resolution is recorded (``resolved()``: ID, asked revision, the commit it resolved to) so the run's
manifest names the exact weights and data used, and a rerun on a moved branch is seen.
A base module: errors only; ``huggingface_hub`` is imported when an ID is first resolved.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from rlhf_cli.errors import ConfigError

# org/name, letters, digits, '-', '_', '.' (the Hub's repo-id rule), optionally @revision
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?$")
# What a model snapshot needs: config, weights, tokenizer, generation config, chat template files.
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]
_RESOLVED: Dict[str, dict] = {}


def is_hub_id(value: str) -> bool:
    """``value`` names a Hub repo rather than a local path: the ID shape, no such local path, and its
    first part is not a local directory either (``runs/sft`` with a ``runs/`` here is a local path that
    does not exist yet, not the repo ``sft`` of a user ``runs``)."""
    if not isinstance(value, str) or value.startswith(("/", "./", "../", "~")) or Path(value).exists():
        return False
    m = HUB_ID.match(value)
    return m is not None and not Path(m.group("repo").split("/")[0]).is_dir()


def split_id(value: str, revision: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """``org/name@rev`` -> (``org/name``, ``rev``); an explicit ``revision`` argument wins over ``@rev``."""
    m = HUB_ID.match(value)
    if m is None:
        raise ValueError(f"not a Hub ID: {value!r}")
    return m.group("repo"), revision or m.group("revision")


def offline() -> bool:
    """HF_HUB_OFFLINE, read now (not at import), as huggingface_hub understands it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cache_dir() -> Path:
    """The Hub cache huggingface_hub uses, from the environment as it is now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home).expanduser() / "hub"


def snapshot(value: str, key: str, revision: Optional[str] = None, repo_type: str = "model",
             allow_patterns: Optional[Sequence[str]] = None) -> Path:
    """The local snapshot dir of Hub repo ``value`` (downloading what is missing unless offline); one-line
    ConfigError naming ``key`` and the ID otherwise. The resolution is recorded under ``key``."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, rev = split_id(value, revision)
    kind = "dataset" if repo_type == "dataset" else "model"
    where = f"{key}={value}" + (f" ({key.rsplit('.', 1)[0]}.revision={revision})" if revision else "")
    try:
        path = Path(snapshot_download(repo, repo_type=repo_type, revision=rev, cache_dir=str(cache_dir()),
                                      local_files_only=offline(), allow_patterns=list(allow_patterns or []) or None))
    except GatedRepoError:
        raise ConfigError(f"{where}: a gated {kind} on the Hub; accept its terms on the Hub and log in "
                          "(HF_TOKEN or `huggingface-cli login`)") from None
    except RevisionNotFoundError:
        raise ConfigError(f"{where}: revision {rev!r} not found on the Hub") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"{where}: no such local path, and no such {kind} on the Hub (or it is private: "
                          "log in with HF_TOKEN or `huggingface-cli login`)") from None
    except LocalEntryNotFoundError:
        if offline():
            raise ConfigError(f"{where}: not in the Hub cache {cache_dir()} and HF_HUB_OFFLINE=1 (download it "
                              "once online, or unset HF_HUB_OFFLINE)") from None
        raise ConfigError(f"{where}: no such local path, and the Hub cannot be reached to fetch it (no network?); "
                          f"the cache {cache_dir()} does not hold it") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        msg = " ".join(str(e).split())[:300]
        raise ConfigError(f"{where}: cannot fetch it from the Hub: {msg}") from None
    record = key if _RESOLVED.get(key, {}).get("id", repo) == repo else f"{key}:{repo}"  # e.g. an RM ensemble
    _RESOLVED[record] = {"id": repo, "revision": rev or "main", "commit": path.name, "type": repo_type,
                         "path": str(path)}
    return path


def model_snapshot(value: str, key: str, revision: Optional[str] = None) -> Path:
    """``snapshot`` of a model repo, weights in safetensors (and the tokenizer, configs, chat template)."""
    return snapshot(value, key, revision, "model", MODEL_FILES)


def model_config_file(value: str, key: str, revision: Optional[str] = None) -> Path:
    """Only the ``config.json`` of Hub model ``value`` (what a memory plan needs: no weights fetched)."""
    snap = snapshot(value, key, revision, "model", ["config.json"])
    _RESOLVED.pop(key, None)  # a plan reads a config; the run itself records what it trains
    if not (snap / "config.json").exists():
        raise ConfigError(f"{key}={value}: the Hub repo has no config.json (not a transformers model)")
    return snap / "config.json"


def resolved() -> Dict[str, dict]:
    """Every Hub resolution of this process so far: key -> {id, revision, commit, type, path}."""
    return {k: dict(v) for k, v in _RESOLVED.items()}


def files_of(root: Path, patterns: Sequence[str]) -> List[Path]:
    """Files under ``root`` matching any glob of ``patterns``, sorted, each once."""
    seen, out = set(), []
    for pattern in patterns:
        for p in sorted(root.glob(pattern)):
            if p.is_file() and p not in seen:
                seen.add(p)
                out.append(p)
    return out
