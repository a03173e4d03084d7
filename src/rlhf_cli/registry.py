"""Name -> callable registries (what users pick by name: losses, estimators, rewards, evals...) with
helpful error messages, and lazy entries whose code is imported on first call ("module:function"), so that
listing or validating names never imports a heavy module. A base module: every room may use it."""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Dict, Iterator, List, TypeVar

from rlhf_cli.errors import ConfigError

F = TypeVar("F", bound=Callable)


class UnknownNameError(ConfigError, KeyError):
    """Raised by :meth:`Registry.get` for a name that was never registered (a config error: exit code 2,
    one line with the closest name; a KeyError too, for code that looks names up)."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return str(self.args[0]) if self.args else ""


class Registry:
    """Maps names to callables.

    Example::

        REG = Registry("dpo loss")

        @REG.register("dpo")
        def dpo(*args, **kwargs): ...

        REG.get("dpo")    # -> dpo
        REG.get("dpp")    # UnknownNameError: unknown dpo loss 'dpp'
                          #   (did you mean 'dpo'? choices: dpo)
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, Callable] = {}
        self._meta: Dict[str, Dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[F], F]:
        """Decorator adding ``fn`` under ``name``. ``meta`` describes the entry to its caller (e.g. which
        config fields it reads, whether it needs a reference model); read it back with :meth:`meta`."""
        def deco(fn: F) -> F:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = fn
            self._meta[name] = dict(meta)
            return fn

        return deco

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a toy entry clean up with this)."""
        self._items.pop(name, None)
        self._meta.pop(name, None)

    def meta(self, name: str) -> Dict[str, Any]:
        """The keyword metadata ``name`` was registered with (raises like :meth:`get` if unknown)."""
        self.get(name)
        return self._meta[name]

    def get(self, name: str) -> Callable:
        try:
            return self._items[name]
        except KeyError:
            pass
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r} ({hint}choices: {', '.join(names)})"
        )

    def names(self) -> List[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def lazy_entry(ref: str) -> Callable[..., Any]:
    """A callable that imports ``ref`` ("package.module:function") on first use and calls it."""
    module, _, name = ref.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = name
    call.__qualname__ = name
    call.__doc__ = f"Calls {ref} (imported on first use)."
    return call
