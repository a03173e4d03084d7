"""Every command, file and config key the README names exists: `rlhf X` is a command of the CLI, a config
key (`ppo.kl_horizon`, `data.prob_field=...`) resolves in a stage's composed config (what `rlhf config`
prints), a repository path is in the repository, and a run-dir file (`ref_logps.json`) is one the code
names. (The README once named an `rlhf data` command, `output_dir/ref_logps.pt` and a `DESIGN.md`.)"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlhf_cli.cli.app import app
from rlhf_cli.config.compose import compose
from rlhf_cli.config.stages import STAGES

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SRC = "\n".join(p.read_text() for p in (ROOT / "src" / "rlhf_cli").rglob("*.py"))
CODE = re.findall(r"`([^`\n]+)`", README)  # inline code spans (fenced blocks hold no single backticks)
COMMANDS = {c.name or c.callback.__name__ for c in app.registered_commands}
FILE_EXT = re.compile(r"\.(safetensors|json|jsonl|yaml|yml|py|pt|gz|sh|png|html|txt|md|toml|csv|parquet)$")
REPO_DIRS = ("src/", "recipes/", "conf/", "tests/", "examples/", "scripts/", ".ci/")
# Files of the user's own that the README's examples name, and a Hub dataset's conventional file names.
USER_FILES = {"hosts.txt", "c.yaml", "elo.json", "train.jsonl"}
PACKAGES = {p.name for p in (ROOT / "src" / "rlhf_cli").iterdir() if p.is_dir()}


@lru_cache(maxsize=None)
def stage_config(stage: str):
    return OmegaConf.to_container(compose(stage, None, []), resolve=False)


def top_level_keys():
    return {k for stage in STAGES for k in stage_config(stage)}


def key_exists(key: str) -> bool:
    for stage in STAGES:
        node = stage_config(stage)
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return True
    return False


def config_keys():
    tops = top_level_keys()
    keys = set()
    for span in CODE:
        for word in span.split():
            key = word.split("=", 1)[0].strip("'\"[](),")
            if (re.fullmatch(r"[a-z_]+(\.[a-z_0-9]+)+", key) and key.split(".")[0] in tops
                    and not FILE_EXT.search(key)):
                keys.add(key)
    return sorted(keys)


def named_files():
    files = set()
    for span in CODE:
        for word in re.split(r"[\s=,()\[\]]+", span):
            word = word.strip("'\":;")
            if FILE_EXT.search(word) and not any(c in word for c in "*<>{}$") and not word.startswith(("http", "~")):
                files.add(word)
    return sorted(files)


def test_every_rlhf_command_named_exists():
    named = {m for span in CODE for m in re.findall(r"(?:^|\s)rlhf ([a-z][\w-]*)", span)}
    assert named and named - COMMANDS == set(), f"README names commands the CLI lacks: {named - COMMANDS}"


@pytest.mark.parametrize("key", config_keys())
def test_every_config_key_named_resolves(key):
    from rlhf_cli.config.aliases import ALIASES

    if key in ALIASES:  # a renamed key the README names as the old name: it must lead to a real one
        key = ALIASES[key]
    assert key_exists(key), f"README names config key {key!r}, which no stage's config has"


def test_the_readme_names_many_keys():
    assert len(config_keys()) > 100


@pytest.mark.parametrize("name", named_files())
def test_every_file_named_exists(name):
    """A repository path exists (package-relative ones like `engine/host_memory.py` under src/rlhf_cli); any
    other file name is one the code itself names (a run-dir file it writes or reads) or a user's own."""
    path = name.lstrip("./")
    if path.startswith(REPO_DIRS) or path in ("README.md", "Makefile", "pyproject.toml"):
        assert (ROOT / path).exists(), f"README names {name}, which the repository lacks"
    elif path.split("/")[0] in PACKAGES:
        assert (ROOT / "src" / "rlhf_cli" / path).exists(), f"README names {name}, not in src/rlhf_cli"
    elif path.startswith("builtin:"):
        from rlhf_cli.data.readers import resolve_data_path

        resolve_data_path(path)  # a one-line ConfigError when no such file is bundled
    else:
        base = path.split("/")[-1]
        pattern = base.split("-N.")[0] + "-" if "-N." in base else base  # config.prev-N.yaml: f"config.prev-{n}..."
        assert pattern in SRC or base in USER_FILES, f"README names {name}: neither in the repository nor named " \
                                                     "by the code (a user's own file? add it to USER_FILES)"
