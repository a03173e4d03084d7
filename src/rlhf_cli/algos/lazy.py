"""Registry entries whose code is imported on first call ("module:function"), so that listing or
validating names never imports a heavy module."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_entry(ref: str) -> Callable[..., Any]:
    """A callable that imports ``ref`` ("package.module:function") on first use and calls it."""
    module, _, name = ref.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = name
    call.__qualname__ = name
    call.__doc__ = f"Calls {ref} (imported on first use)."
    return call
