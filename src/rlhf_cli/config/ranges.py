"""Allowed ranges of numeric config fields, declared next to the fields and checked in one place.

A schema declares a numeric field with :func:`num` instead of a bare default::

    lr: float = num(2.0e-5, gt=0)               # > 0
    max_steps: int = num(-1, ge=1, also=(-1,))  # -1 or >= 1
    betas: List[float] = num(lambda: [0.9, 0.95], ge=0, lt=1)  # each item in [0, 1)

:func:`check_ranges` walks a stage's schema (nested sections included) and raises one line naming
the key and the allowed range for the first value outside it. ``tests/config`` asserts that every
int/float field of every stage schema declares a range, so a new stage cannot forget one.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Tuple, Union

from rlhf_cli.errors import ConfigError

META = "rlhf_range"


@dataclass(frozen=True)
class Range:
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    also: Tuple[Any, ...] = ()  # special values allowed outside the interval (e.g. -1 = "derive it")

    def ok(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
            return False
        if v in self.also:
            return True
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def text(self) -> str:
        lo = f"[{_g(self.ge)}" if self.ge is not None else f"({_g(self.gt)}" if self.gt is not None else None
        hi = f"{_g(self.le)}]" if self.le is not None else f"{_g(self.lt)})" if self.lt is not None else None
        if lo and hi:
            core = f"in {lo}, {hi}"
        elif lo:
            core = (">= " if lo[0] == "[" else "> ") + lo[1:]
        elif hi:
            core = ("<= " if hi[-1] == "]" else "< ") + hi[:-1]
        else:
            core = "a finite number"
        if self.also:
            return " or ".join(_g(a) for a in self.also) + f" or {core}"
        return core


def _g(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def num(default: Union[Any, Callable[[], Any]], *, ge: Optional[float] = None, gt: Optional[float] = None,
        le: Optional[float] = None, lt: Optional[float] = None, also: Tuple[Any, ...] = ()) -> Any:
    """A dataclass field with a default (or a default factory for lists) and its allowed range."""
    meta = {META: Range(ge=ge, gt=gt, le=le, lt=lt, also=tuple(also))}
    if callable(default):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _numeric_kind(tp: Any) -> Optional[str]:
    """'scalar' for int/float/Optional of them, 'list' for List[int|float], else None."""
    if tp in (int, float):
        return "scalar"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        rest = [a for a in args if a is not type(None)]
        return _numeric_kind(rest[0]) if len(rest) == 1 else None
    if origin in (list, typing.List) and args and args[0] in (int, float):
        return "list"
    return None


def numeric_fields(schema: type, prefix: str = "") -> Iterator[Tuple[str, dataclasses.Field, str]]:
    """(dotted key, field, 'scalar'|'list') for every numeric field of ``schema`` and its sections."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from numeric_fields(tp, f"{prefix}{f.name}.")
            continue
        kind = _numeric_kind(tp)
        if kind:
            yield f"{prefix}{f.name}", f, kind


def range_of(f: dataclasses.Field) -> Optional[Range]:
    return f.metadata.get(META)


def check_ranges(cfg: Any, schema: type) -> None:
    """Raise one ConfigError line for the first numeric value outside its declared range."""
    from omegaconf import OmegaConf

    for key, f, kind in numeric_fields(schema):
        rng = range_of(f)
        if rng is None:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        values = list(value) if kind == "list" else [value]
        for v in values:
            if not rng.ok(v):
                shown = list(value) if kind == "list" else value
                each = "each item " if kind == "list" else ""
                raise ConfigError(f"{key}={shown}: {each}must be {rng.text()}")
