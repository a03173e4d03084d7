"""The values the ``code`` reward's sandbox reports and the trainer reads: ``canon`` (in the box: a value the
program computed -> plain JSON, exact built-in types only) and ``decode`` (in the trainer: that JSON ->
plain Python values). Standard library only: the box imports it with ``python -I -S -B``.
"""
import json


def canon(v, depth=0):
    """Plain JSON value of ``v``; tuples, sets, dicts and non-finite floats are tagged
    ({"__tuple__": [...]}, ...). Exact base types only, so an int subclass with a custom __eq__ is
    reported as the int it holds."""
    if depth > 50:
        raise ValueError("nested too deep")
    if v is None or type(v) is bool or type(v) is str:
        return v
    if isinstance(v, bool):
        return bool.__bool__(v)
    if isinstance(v, int):
        return int.__index__(v)
    if isinstance(v, float):
        f = float.__float__(v)
        if f != f or f in (float("inf"), float("-inf")):
            return {"__float__": repr(f)}
        return f
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, list):
        return [canon(x, depth + 1) for x in v]
    if isinstance(v, tuple):
        return {"__tuple__": [canon(x, depth + 1) for x in v]}
    if isinstance(v, (set, frozenset)):
        items = [canon(x, depth + 1) for x in v]
        return {"__set__": sorted(items, key=lambda x: json.dumps(x, sort_keys=True))}
    if isinstance(v, dict):
        return {"__dict__": sorted(([canon(k, depth + 1), canon(x, depth + 1)] for k, x in v.items()),
                                   key=lambda kv: json.dumps(kv[0], sort_keys=True))}
    raise TypeError("value of type %s is not plain data" % type(v).__name__)


def decode(v, depth=0):
    """The parent's inverse of :func:`canon`: JSON from the sandbox -> plain Python values (exact
    built-in types only; anything malformed raises)."""
    if depth > 60:
        raise ValueError("nested too deep")
    if v is None or type(v) in (bool, int, float, str):
        return v
    if type(v) is list:
        return [decode(x, depth + 1) for x in v]
    if type(v) is dict and len(v) == 1:
        (tag, inner), = v.items()
        if tag == "__tuple__" and type(inner) is list:
            return tuple(decode(x, depth + 1) for x in inner)
        if tag == "__set__" and type(inner) is list:
            return {decode(x, depth + 1) for x in inner}
        if tag == "__dict__" and type(inner) is list:
            return {decode(k, depth + 1): decode(x, depth + 1) for k, x in inner}
        if tag == "__float__" and inner in ("nan", "inf", "-inf"):
            return float(inner)
    raise ValueError("not a value the sandbox encodes")
