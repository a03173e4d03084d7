"""rlhf_cli.algos must stay pure tensor maths: torch + stdlib only (and the project's base registry module,
itself stdlib only)."""
import ast
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

import pytest

import rlhf_cli.algos as algos_pkg

ALLOWED_THIRD_PARTY = {"torch"}
FORBIDDEN = {"transformers", "deepspeed", "numpy", "accelerate", "peft", "trl", "vllm", "datasets"}
STDLIB = set(sys.stdlib_module_names)
# The base modules algos may use: Registry (names users pick) and the errors it raises; stdlib only.
PROJECT_BASE = {"rlhf_cli.registry"}

MODULE_FILES = sorted(Path(algos_pkg.__file__).parent.glob("*.py"))


def _imported_top_level(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module if node.module in PROJECT_BASE else node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.append("__import__")  # dynamic imports are not allowed either
    return names


def test_expected_modules_present():
    names = {p.stem for p in MODULE_FILES}
    assert {"logprobs", "sft", "preference", "reward_model", "advantages", "policy", "ppo", "kl_control",
            "reward_shaping", "ai_feedback"} <= names


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.name)
def test_only_torch_and_stdlib_imports(path):
    bad = [n for n in _imported_top_level(path)
           if n in FORBIDDEN or not (n in ALLOWED_THIRD_PARTY or n in STDLIB or n in PROJECT_BASE or n == "__future__")]
    assert bad == [], f"{path.name} imports {bad}"


def test_checker_detects_forbidden_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import numpy as np\nfrom transformers import AutoModel\nfrom . import x\nimport torch.nn\n")
    assert _imported_top_level(f) == ["numpy", "transformers", "torch"]


def test_all_modules_import_and_public_functions_documented():
    mods = [m.name for m in pkgutil.iter_modules(algos_pkg.__path__)]
    assert mods
    for name in mods:
        mod = importlib.import_module(f"rlhf_cli.algos.{name}")
        for fname, fn in inspect.getmembers(mod, inspect.isfunction):
            if fn.__module__ == mod.__name__ and not fname.startswith("_"):
                assert fn.__doc__ and fn.__doc__.strip(), f"{name}.{fname} lacks a docstring"


def test_the_base_registry_is_stdlib_only():
    import rlhf_cli.registry as registry

    names = _imported_top_level(Path(registry.__file__))
    assert all(n in STDLIB or n in ("__future__", "rlhf_cli") for n in names), names
