"""Load user reward functions: ``python:pkg.module:function`` or ``python:/path/file.py:function``."""
from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from types import ModuleType
from typing import Any, Callable, Tuple

from .errors import RewardError

PREFIX = "python:"
_FORMAT = "expected 'python:package.module:function' or 'python:/path/to/file.py:function'"


def parse_plugin_spec(spec: str) -> Tuple[str, str]:
    """``"python:a.b:fn"`` -> ``("a.b", "fn")``; raises :class:`RewardError` on bad format."""
    if not isinstance(spec, str) or not spec.startswith(PREFIX):
        raise RewardError(f"invalid reward plugin spec {spec!r}: {_FORMAT}")
    body = spec[len(PREFIX):].strip()
    if ":" not in body:
        raise RewardError(f"invalid reward plugin spec {spec!r}: missing ':function' ({_FORMAT})")
    target, attr = body.rsplit(":", 1)
    target, attr = target.strip(), attr.strip()
    if not target or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise RewardError(f"invalid reward plugin spec {spec!r}: {_FORMAT}")
    return target, attr


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or os.sep in target or "/" in target


def _import_file(path: str, spec: str) -> ModuleType:
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise RewardError(f"reward plugin {spec!r}: file not found: {path}")
    stem = os.path.splitext(os.path.basename(path))[0]
    mod_name = f"_rlhf_reward_plugin_{stem}_{hashlib.sha1(path.encode()).hexdigest()[:8]}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    mspec = importlib.util.spec_from_file_location(mod_name, path)
    if mspec is None or mspec.loader is None:
        raise RewardError(f"reward plugin {spec!r}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(mspec)
    sys.modules[mod_name] = module  # needed by dataclasses/pickle inside the module
    try:
        mspec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(mod_name, None)
        raise RewardError(f"reward plugin {spec!r}: error while executing {path}: "
                          f"{type(e).__name__}: {e}") from e
    return module


def _import_module(name: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise RewardError(f"reward plugin {spec!r}: module {name!r} not found "
                              f"(is it installed or on PYTHONPATH?)") from e
        raise RewardError(f"reward plugin {spec!r}: importing {name!r} failed: {e}") from e
    except Exception as e:
        raise RewardError(f"reward plugin {spec!r}: importing {name!r} failed: "
                          f"{type(e).__name__}: {e}") from e


def load_plugin(spec: str, **kwargs: Any) -> Callable[..., Any]:
    """Import and return the reward callable named by ``spec``.

    Extra ``kwargs`` (the remaining keys of the config spec) are bound with
    :func:`functools.partial` and passed on every call; the function must accept them.
    """
    target, attr = parse_plugin_spec(spec)
    module = _import_file(target, spec) if _is_file_target(target) else _import_module(target, spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            avail = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            close = difflib.get_close_matches(part, avail, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise RewardError(f"reward plugin {spec!r}: {target!r} has no attribute {attr!r} "
                              f"({hint}callables: {', '.join(avail) or 'none'})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RewardError(f"reward plugin {spec!r}: {attr!r} is a {type(obj).__name__}, not a callable")
    if kwargs:
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            params = None
        if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            for k in kwargs:
                if k not in params:
                    raise RewardError(f"reward plugin {spec!r}: option {k!r} is not a parameter of "
                                      f"{attr}() (parameters: {', '.join(params)})")
        bound = functools.partial(obj, **kwargs)
        functools.update_wrapper(bound, obj)  # keep __name__/__doc__ for logging
        return bound
    return obj


# --------------------------------------------------------------------------- config-time check
def _locate_module(name: str, spec: str) -> str:
    """The source file of module ``name``, found without importing it or its parent packages."""
    from importlib.machinery import PathFinder

    if name in sys.modules and getattr(sys.modules[name], "__file__", None):
        return sys.modules[name].__file__
    path = None
    found = None
    for i in range(len(name.split("."))):
        full = ".".join(name.split(".")[: i + 1])
        found = PathFinder.find_spec(full, path)
        if found is None:
            raise RewardError(f"reward plugin {spec!r}: module {name!r} not found (is it installed or on "
                              f"PYTHONPATH?)")
        path = found.submodule_search_locations
    return found.origin or ""


def check_plugin(spec: str, **kwargs: Any) -> None:
    """Resolve a plugin spec WITHOUT executing the plugin's code (``rlhf config`` / ``--dry-run``):
    the module file exists, defines ``function`` at top level, and a plain ``def`` accepts ``kwargs``.
    The import itself happens in the worker (:func:`load_plugin`)."""
    import ast

    target, attr = parse_plugin_spec(spec)
    if _is_file_target(target):
        path = os.path.abspath(os.path.expanduser(target))
        if not os.path.isfile(path):
            raise RewardError(f"reward plugin {spec!r}: file not found: {path}")
    else:
        path = _locate_module(target, spec)
    if not path.endswith(".py") or not os.path.isfile(path):
        return  # an extension module or a namespace package: checked when the worker imports it
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)
    except (SyntaxError, ValueError) as e:
        raise RewardError(f"reward plugin {spec!r}: {path} does not parse: {e}") from None
    top = attr.split(".")[0]
    defs = {}
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs[node.name] = node
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    if top not in names and not any(isinstance(n, (ast.If, ast.Try)) for n in tree.body):
        close = difflib.get_close_matches(top, sorted(names), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RewardError(f"reward plugin {spec!r}: {target!r} defines no {top!r}{hint}")
    fn = defs.get(top)
    if kwargs and isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and "." not in attr:
        a = fn.args
        if a.kwarg is None:
            params = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
            for k in kwargs:
                if k not in params:
                    raise RewardError(f"reward plugin {spec!r}: option {k!r} is not a parameter of "
                                      f"{attr}() (parameters: {', '.join(params)})")
