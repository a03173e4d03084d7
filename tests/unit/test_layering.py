"""The package layering of DESIGN.md §2, checked on the source: which package may import which, no import
cycles between modules, and deepspeed / torch.distributed only inside engine/."""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "rlhf_cli"

# package -> the packages its modules may import (besides itself): the rooms of ARCHITECTURE.md, lowest
# first. Data flows one way: cli -> config -> engine.launch -> worker -> stages -> (rl, training) -> the rest.
BASE = {"errors", "text", "quiet", "resources", "output_files", "registry", "hub"}
ALLOWED = {
    "": set(),  # rlhf_cli/__init__.py
    "errors": set(),
    "text": set(),
    "quiet": set(),
    "resources": {"errors"},
    "output_files": {"errors"},
    "registry": {"errors"},
    "hub": {"errors"},
    "algos": {"registry"},
    "data": BASE,
    "rollout": BASE | {"data", "algos"},
    "models": BASE | {"data", "algos", "rollout"},
    "rewards": BASE | {"data", "models", "algos", "rollout"},
    "engine": BASE,
    "config": BASE | {"algos", "data", "models", "rollout", "rewards"},
    "training": BASE | {"algos", "data", "models", "rollout", "engine", "config"},
    "rl": BASE | {"algos", "data", "models", "rollout", "rewards", "engine", "config", "training"},
    "feedback": BASE | {"algos", "data", "models", "rollout", "rewards", "config"},
    "stages": BASE | {"algos", "data", "models", "rollout", "rewards", "engine", "config", "training", "rl",
                      "feedback"},
    "evals": BASE | {"algos", "data", "models", "rollout", "rewards", "config"},
    "report": BASE | {"config"},
    "bench": BASE | {"algos", "data", "models", "rollout", "rewards", "engine", "config", "training", "rl",
                     "stages", "worker"},
    "worker": BASE | {"config", "engine", "stages", "training"},
    "cli": None,  # the top: may import anything
}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path):
    """(imported module, line) for every import anywhere in the file (lazy ones included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = _module_name(path)
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            yield mod, node.lineno
            for a in node.names:  # `from pkg import submodule`
                yield f"{mod}.{a.name}", node.lineno


FILES = sorted(SRC.rglob("*.py"))
MODULES = {_module_name(p) for p in FILES}


def _internal(mod: str):
    """The project module an import refers to (longest existing prefix), or None."""
    if not mod.startswith("rlhf_cli"):
        return None
    parts = mod.split(".")
    while parts:
        name = ".".join(parts)
        if name in MODULES:
            return name
        parts.pop()
    return None


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_package_imports_follow_the_layering(path):
    pkg = _package(_module_name(path))
    allowed = ALLOWED.get(pkg, "unknown")
    assert allowed != "unknown", f"package {pkg!r} is not in the layering table; add it to ALLOWED"
    if allowed is None:
        return
    bad = sorted({f"{m} (line {ln})" for m, ln in _imports(path)
                  if _internal(m) and _package(_internal(m)) not in allowed | {pkg, ""}})
    assert not bad, f"{path.relative_to(SRC)} imports upward / sideways: {bad}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_deepspeed_and_torch_distributed_only_in_engine(path):
    if _package(_module_name(path)) == "engine":
        return
    bad = [f"{m} (line {ln})" for m, ln in _imports(path)
           if m.split(".")[0] == "deepspeed" or m.startswith("torch.distributed")]
    text = path.read_text()
    bad += ["dist.<collective> call"] if "dist.all_" in text or "dist.broadcast" in text else []
    assert not bad, f"{path.relative_to(SRC)} reaches past engine/: {bad}"


def test_no_import_cycles_between_modules():
    graph = {}
    for p in FILES:
        me = _module_name(p)
        graph[me] = {t for m, _ in _imports(p) if (t := _internal(m)) and t != me and not me.startswith(t + ".")
                     and t != "rlhf_cli"}
    cycles = []
    state = {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_checkpoint_discovery_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys; import rlhf_cli.training.run_dir, rlhf_cli.engine.checkpoints; "
            "print(sorted(m for m in ('torch', 'deepspeed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
