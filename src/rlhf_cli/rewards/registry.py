"""Reward registry and the weighted combination used by every RL stage.

A reward function has the contract::

    fn(prompts: list[str], completions: list[str], **fields) -> list[float]

where ``fields`` are per-record dataset columns, each a list of the same
length as ``prompts`` (e.g. ``answer=[...]``, ``tests=[...]``).

``REWARDS`` maps a name to a *factory*: ``factory(**spec_kwargs) -> fn``.
:func:`build_reward` turns the config list ``reward.functions`` into a
:class:`CombinedReward`::

    build_reward([
        {"name": "gsm8k", "weight": 1.0},
        {"name": "format", "weight": 0.2, "pattern": "<answer>.*</answer>"},
        {"name": "python:my_pkg.rewards:length_penalty", "weight": 0.1},
    ])
"""
from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Sequence, TypeVar, Union

from rlhf_cli.registry import Registry, UnknownNameError  # noqa: F401 (re-exported)

from .errors import RewardError

F = TypeVar("F", bound=Callable)

RewardFn = Callable[..., Sequence[float]]

PLUGIN_PREFIX = "python:"
#: spec keys consumed by build_reward itself (never passed to factories)
RESERVED_KEYS = ("name", "weight", "alias")


# The one registry class of the project (names -> callables, closest-name errors). The built-in rewards
# register themselves when the package (rewards/__init__.py) imports their modules.
REWARDS = Registry("reward function")


# --------------------------------------------------------------------------- helpers
def _call_factory(name: str, factory: Callable, kwargs: Dict[str, Any]) -> RewardFn:
    """Call ``factory(**kwargs)``, turning unknown/missing keys into clear errors."""
    _check_kwargs(name, factory, kwargs)
    try:
        fn = factory(**kwargs)
    except RewardError:
        raise
    except (TypeError, ValueError) as e:
        raise RewardError(f"reward {name!r}: bad options: {e}") from e
    if not callable(fn):
        raise RewardError(f"reward {name!r}: factory returned a non-callable {type(fn).__name__}")
    return fn


def _check_kwargs(name: str, factory: Callable, kwargs: Dict[str, Any]) -> None:
    """Unknown / missing options of a factory, from its signature (nothing is called)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # pragma: no cover - builtins without signature
        sig = None
    if sig is not None:
        params = sig.parameters
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        valid = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not accepts_any:
            for key in kwargs:
                if key not in valid:
                    close = difflib.get_close_matches(key, valid, n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    raise RewardError(
                        f"reward {name!r}: unknown option {key!r} ({hint}valid options: "
                        f"{', '.join(valid) or '(none)'})"
                    )
        missing = [
            n
            for n, p in params.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            and p.default is p.empty
            and n not in kwargs
        ]
        if missing:
            raise RewardError(f"reward {name!r}: missing required option(s) {', '.join(map(repr, missing))}")


def _adapt_fields(fn: Callable) -> Callable[..., Any]:
    """Return ``call(prompts, completions, fields)`` passing only the fields ``fn`` accepts."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return lambda p, c, f: fn(p, c, **f)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return lambda p, c, f: fn(p, c, **f)
    names = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return lambda p, c, f: fn(p, c, **{k: v for k, v in f.items() if k in names})


def validate_scores(name: str, scores: Any, n: int) -> List[float]:
    """Check a reward function's return value: 1-D, length ``n``, finite numbers."""
    if hasattr(scores, "tolist") and not isinstance(scores, (list, tuple)):  # numpy / torch
        scores = scores.tolist()
    if isinstance(scores, (str, bytes)) or not isinstance(scores, (list, tuple)):
        raise RewardError(
            f"reward {name!r} must return a list of {n} floats, got {type(scores).__name__}"
        )
    if len(scores) != n:
        raise RewardError(f"reward {name!r} returned {len(scores)} scores for {n} completions")
    out: List[float] = []
    for i, s in enumerate(scores):
        if isinstance(s, (list, tuple)):
            raise RewardError(f"reward {name!r} returned a nested sequence at index {i} (expected 1-D)")
        if hasattr(s, "item") and not isinstance(s, (int, float)):  # numpy / torch scalar
            s = s.item()
        if isinstance(s, (str, bytes)) or s is None:
            raise RewardError(f"reward {name!r} returned a non-numeric score at index {i}: {s!r}")
        try:
            v = float(s)
        except (TypeError, ValueError):
            raise RewardError(
                f"reward {name!r} returned a non-numeric score at index {i}: {s!r}"
            ) from None
        if math.isnan(v):
            raise RewardError(f"reward {name!r} returned NaN at index {i}")
        if math.isinf(v):
            raise RewardError(f"reward {name!r} returned {v} at index {i} (scores must be finite)")
        out.append(v)
    return out


# --------------------------------------------------------------------------- combination
@dataclass
class RewardOutput:
    total: List[float]
    per_function: Dict[str, List[float]] = field(default_factory=dict)


@dataclass
class RewardTerm:
    key: str  # name used in RewardOutput.per_function (alias, or name, de-duplicated)
    name: str  # registry name or python:... spec
    weight: float
    fn: RewardFn


class CombinedReward:
    """``total = Σ weight_i · score_i`` over the configured reward functions."""

    def __init__(self, terms: Sequence[RewardTerm]):
        if not terms:
            raise RewardError("no reward functions configured (reward.functions is empty)")
        self.terms = list(terms)
        self._calls = [_adapt_fields(t.fn) for t in self.terms]

    @property
    def names(self) -> List[str]:
        return [t.key for t in self.terms]

    @property
    def weights(self) -> Dict[str, float]:
        return {t.key: t.weight for t in self.terms}

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **fields: Any) -> RewardOutput:
        prompts, completions = list(prompts), list(completions)
        n = len(completions)
        if len(prompts) != n:
            raise RewardError(f"got {len(prompts)} prompts but {n} completions")
        clean: Dict[str, list] = {}
        for k, v in fields.items():
            if hasattr(v, "tolist") and not isinstance(v, (list, tuple)):
                v = v.tolist()
            if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
                raise RewardError(f"field {k!r} must be a list with one value per completion, got {type(v).__name__}")
            if len(v) != n:
                raise RewardError(f"field {k!r} has {len(v)} values for {n} completions")
            clean[k] = list(v)
        total = [0.0] * n
        per: Dict[str, List[float]] = {}
        for term, call in zip(self.terms, self._calls):
            try:
                raw = call(prompts, completions, clean)
            except RewardError:
                raise
            except Exception as e:
                raise RewardError(f"reward {term.key!r} raised {type(e).__name__}: {e}") from e
            scores = validate_scores(term.key, raw, n)
            per[term.key] = scores
            for i, s in enumerate(scores):
                total[i] += term.weight * s
        return RewardOutput(total=total, per_function=per)

    def __repr__(self) -> str:
        inner = ", ".join(f"{t.key}×{t.weight:g}" for t in self.terms)
        return f"CombinedReward({inner})"


SpecLike = Union[str, Mapping[str, Any], Any]


def _spec_to_dict(spec: SpecLike, idx: int) -> Dict[str, Any]:
    if isinstance(spec, str):
        return {"name": spec}
    if hasattr(spec, "model_dump"):  # pydantic v2 model from the config schema
        spec = spec.model_dump()
    elif hasattr(spec, "dict") and not isinstance(spec, Mapping):  # pydantic v1
        spec = spec.dict()
    if not isinstance(spec, Mapping):
        raise RewardError(f"reward.functions[{idx}] must be a mapping with a 'name', got {type(spec).__name__}")
    spec = dict(spec)
    if "name" not in spec or not isinstance(spec["name"], str) or not spec["name"].strip():
        raise RewardError(f"reward.functions[{idx}] needs a 'name' (string), got {spec!r}")
    return spec


def build_reward_fn(name: str, **kwargs: Any) -> RewardFn:
    """Build one reward callable from a registry name or ``python:`` plugin spec."""
    if name.startswith(PLUGIN_PREFIX):
        from .plugin import load_plugin

        return load_plugin(name, **kwargs)
    try:
        factory = REWARDS.get(name)
    except UnknownNameError as e:
        raise RewardError(f"{e} (or use 'python:module:function' for a custom reward)") from None
    return _call_factory(name, factory, kwargs)


def check_reward_fn(name: str, **kwargs: Any) -> None:
    """Validate one reward spec without side effects (``rlhf config`` / ``--dry-run``): plugins are
    resolved, not imported; a built-in factory is only called when it is marked ``pure`` (it just
    checks options), else its ``validate(**kwargs)`` hook runs (e.g. ``code`` starts no sandbox)."""
    if name.startswith(PLUGIN_PREFIX):
        from .plugin import check_plugin

        check_plugin(name, **kwargs)
        return
    try:
        factory = REWARDS.get(name)
    except UnknownNameError as e:
        raise RewardError(f"{e} (or use 'python:module:function' for a custom reward)") from None
    _check_kwargs(name, factory, kwargs)
    validate = getattr(factory, "validate", None)
    try:
        if validate is not None:
            validate(**kwargs)
        elif getattr(factory, "pure", False):
            factory(**kwargs)
    except RewardError:
        raise
    except (TypeError, ValueError) as e:
        raise RewardError(f"reward {name!r}: bad options: {e}") from e


def _parse_specs(specs: Union[SpecLike, Sequence[SpecLike]]):
    """(key, name, weight, kwargs) per spec: names, weights and aliases checked."""
    if isinstance(specs, (str, Mapping)) or hasattr(specs, "model_dump"):
        specs = [specs]
    if specs is None:
        specs = []
    out = []
    used: Dict[str, int] = {}
    for i, raw in enumerate(specs):
        spec = _spec_to_dict(raw, i)
        name = spec.pop("name").strip()
        weight = spec.pop("weight", 1.0)
        alias = spec.pop("alias", None)
        if weight is None:
            weight = 1.0
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise RewardError(f"reward {name!r}: weight must be a finite number, got {weight!r}")
        key = str(alias) if alias else name
        if key in used:
            if alias:
                raise RewardError(f"duplicate reward alias {key!r}")
            used[key] += 1
            key = f"{key}#{used[key]}"
        used.setdefault(key, 1)
        out.append((key, name, float(weight), spec))
    if not out:
        raise RewardError("no reward functions configured (reward.functions is empty)")
    return out


def check_reward(specs: Union[SpecLike, Sequence[SpecLike]]) -> None:
    """Everything :func:`build_reward` checks, without importing plugins or starting anything."""
    for _key, name, _weight, kwargs in _parse_specs(specs):
        check_reward_fn(name, **kwargs)


def build_reward(specs: Union[SpecLike, Sequence[SpecLike]]) -> CombinedReward:
    """Build a :class:`CombinedReward` from ``reward.functions``.

    Each spec is ``{"name": ..., "weight": 1.0, "alias": optional, **kwargs}`` (a bare
    string is shorthand for ``{"name": s}``).  ``per_function`` keys are the alias, else
    the name (``name#2``, ``name#3`` ... for repeats).
    """
    terms = [RewardTerm(key=key, name=name, weight=weight, fn=build_reward_fn(name, **kwargs))
             for key, name, weight, kwargs in _parse_specs(specs)]
    return CombinedReward(terms)
