"""The ``code`` reward's verdict, decided in the trainer: a record's tests become a plan (what the sandbox is
asked to compute: sub-expressions of each assert, or stdin/stdout runs), and the plain values the sandbox
reports are checked here against expectations it never saw (``decide``). Nothing here runs the program.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Sequence, Tuple, Union

from ._sandbox_values import decode
from .errors import RewardError

if TYPE_CHECKING:
    from . import sandbox

Tests = Union[str, Sequence[Any], dict, None]


# --------------------------------------------------------------------------- test plans
# What the PARENT evaluates of an assert: comparisons, boolean logic, cheap arithmetic, subscripts,
# literals and these functions, applied to plain values. Everything else (calls of the completion's
# functions, names it or the test setup defines, costly operators) is asked of the sandbox, whose
# answers are plain data, so evaluating the rest here is bounded and cannot run the program's code.
_SAFE_FUNCS = {f.__name__: f for f in (abs, round, len, sorted, set, frozenset, tuple, list, dict, min, max, sum,
                                        float, int, str, bool, all, any, reversed)}
_SAFE_MATH = ("isclose", "isfinite", "isnan", "isinf", "fabs", "floor", "ceil", "sqrt", "pi", "e", "inf")
_RESIDUAL_NODES = (ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.Call, ast.Constant, ast.Tuple,
                   ast.List, ast.Set, ast.Dict, ast.Subscript, ast.Slice, ast.Name, ast.Attribute, ast.keyword,
                   ast.IfExp, ast.Load, ast.cmpop, ast.boolop, ast.unaryop, ast.operator, ast.expr_context)
_CHEAP_BINOPS = (ast.Add, ast.Sub, ast.Div, ast.FloorDiv, ast.Mod)


def _math_ns():
    import math
    import types

    return types.SimpleNamespace(**{n: getattr(math, n) for n in _SAFE_MATH})


@dataclass
class Check:
    """One assert, decided in the parent: ``residual`` evaluated with ``__v<i>`` = the plain value the
    sandbox reported for sub-expression ``i`` (or, for stdin/stdout tests, the expected output)."""

    residual: Any  # compiled expression (assert tests) | expected normalised stdout (io tests)
    refs: Tuple[int, ...]  # report indices the check reads
    text: str = ""  # the assert, for the debug tail


@dataclass
class Plan:
    mode: str  # "expr" (assert tests) | "io" (stdin/stdout tests)
    steps: list  # what the sandbox gets: [("exec"|"eval", idx, src)] or [stdin text]
    checks: List[Check]


class _Rename(ast.NodeTransformer):
    def __init__(self, names):
        self.names = names

    def visit_Name(self, node):
        if node.id in self.names:
            return ast.copy_location(ast.Name(id=self.names[node.id], ctx=node.ctx), node)
        return node


def _inline_checkers(stmts: List[ast.stmt]) -> List[ast.stmt]:
    """HumanEval shape: ``def check(candidate): assert candidate(...) == ...`` + ``check(f)`` -> the
    asserts at top level with ``candidate`` renamed to ``f``."""
    defs = {s.name: s for s in stmts if isinstance(s, ast.FunctionDef)
            and any(isinstance(n, ast.Assert) for n in ast.walk(s))}
    out: List[ast.stmt] = []
    for s in stmts:
        if isinstance(s, ast.FunctionDef) and s.name in defs:
            continue
        call = s.value if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) else None
        if call is not None and isinstance(call.func, ast.Name) and call.func.id in defs:
            fn = defs[call.func.id]
            params = [a.arg for a in fn.args.args]
            if call.keywords or len(call.args) != len(params) or not all(isinstance(a, ast.Name) for a in call.args):
                raise RewardError(f"code reward: tests call {fn.name}() with arguments that are not plain names")
            names = dict(zip(params, (a.id for a in call.args)))
            for body_stmt in fn.body:
                if isinstance(body_stmt, ast.Expr) and isinstance(body_stmt.value, ast.Constant):
                    continue  # docstring
                out.append(ast.fix_missing_locations(_Rename(names).visit(body_stmt)))
            continue
        out.append(s)
    return out


class _Splitter(ast.NodeTransformer):
    """Keep what the parent may evaluate; replace every other sub-expression by ``__v<i>`` and ask the
    sandbox for its value (the sandbox sees only those sub-expressions, never the expected side)."""

    def __init__(self, ask):
        self.ask = ask

    def _keep(self, node) -> bool:
        if not isinstance(node, _RESIDUAL_NODES):
            return False
        if isinstance(node, ast.Name):
            return node.id in _SAFE_FUNCS or node.id in ("math", "True", "False", "None")
        if isinstance(node, ast.BinOp):
            return isinstance(node.op, _CHEAP_BINOPS)
        if isinstance(node, ast.Attribute):
            return isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr in _SAFE_MATH
        if isinstance(node, ast.Call):
            f = node.func
            return (isinstance(f, ast.Name) and f.id in _SAFE_FUNCS) or (
                isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "math"
                and f.attr in _SAFE_MATH)
        return True

    def visit(self, node):
        if isinstance(node, ast.expr) and not self._keep(node):
            return ast.copy_location(ast.Name(id=f"__v{self.ask(node)}", ctx=ast.Load()), node)
        return self.generic_visit(node)


def plan_asserts(sources: Sequence[str]) -> Plan:
    steps: list = []
    checks: List[Check] = []
    n = 0

    def ask(node) -> int:
        nonlocal n
        steps.append(("eval", n, ast.unparse(node)))
        n += 1
        return n - 1

    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError as e:
            raise RewardError(f"code reward: tests do not parse: {e.msg} (line {e.lineno})") from None
        for stmt in _inline_checkers(tree.body):
            if not isinstance(stmt, ast.Assert):
                if any(isinstance(x, ast.Assert) for x in ast.walk(stmt)):
                    raise RewardError("code reward: tests may hold asserts only at top level (or in a "
                                      "check(candidate) function called once); got one inside "
                                      f"{type(stmt).__name__} at line {stmt.lineno}")
                steps.append(("exec", -1, ast.unparse(stmt)))
                continue
            first = n
            residual = _Splitter(ask).visit(ast.Expression(body=stmt.test))
            code = compile(ast.fix_missing_locations(residual), "<assert>", "eval")
            checks.append(Check(code, tuple(range(first, n)), text=ast.unparse(stmt.test)))
    return Plan("expr", steps, checks)


def plan_tests(tests: Tests) -> Plan:
    """Turn a record's tests into what the sandbox is asked and what the parent checks."""
    if isinstance(tests, dict):
        if set(tests) >= {"inputs", "outputs"}:
            ins, outs = tests["inputs"], tests["outputs"]
            if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
                raise RewardError("code reward: tests {inputs, outputs} must be two lists of equal length")
            tests = [{"input": i, "output": o} for i, o in zip(ins, outs)]
        else:
            raise RewardError(f"code reward: a tests mapping needs 'inputs' and 'outputs', got {sorted(tests)}")
    if isinstance(tests, (list, tuple)) and tests and all(isinstance(t, dict) for t in tests):
        steps, checks = [], []
        for i, t in enumerate(tests):
            if not isinstance(t.get("input", ""), str) or not isinstance(t.get("output"), str):
                raise RewardError("code reward: stdin/stdout tests need string 'input' and 'output' fields")
            steps.append(t.get("input", ""))
            checks.append(Check(_norm_output(t["output"]), (i,), text=f"stdin/stdout test {i}"))
        return Plan("io", steps, checks)
    if tests is None:
        return Plan("expr", [], [])
    if isinstance(tests, str):
        return plan_asserts([tests])
    if isinstance(tests, (list, tuple)) and all(isinstance(t, str) for t in tests):
        return plan_asserts(list(tests))
    raise RewardError("code reward: tests must be Python asserts (a string or a list of strings) or "
                      "stdin/stdout pairs ([{input, output}] or {inputs, outputs})")


# --------------------------------------------------------------------------- verdict (parent only)
def _norm_output(text: str) -> str:
    return "\n".join(line.rstrip() for line in str(text).strip("\n").split("\n")).rstrip()


def decide(plan: Plan, box: "sandbox.BoxResult") -> List[bool]:
    """One bool per check, from the values the sandbox reported (parent-side, never the child)."""
    bad = set(box.duplicates)
    verdicts = []
    for c in plan.checks:
        env: dict = {}
        for r in c.refs:
            got = box.results.get(r)
            if got is None or got[0] != "v" or r in bad:
                break
            try:
                env[f"__v{r}"] = decode(got[1])
            except (TypeError, ValueError, KeyError, RecursionError):
                break
        else:
            if plan.mode == "io":
                out = env[f"__v{c.refs[0]}"]
                verdicts.append(type(out) is str and _norm_output(out) == c.residual)
                continue
            try:
                ns = {"__builtins__": {}, **_SAFE_FUNCS, "math": _math_ns(), "True": True, "False": False,
                      "None": None}
                verdicts.append(bool(eval(c.residual, ns, env)))  # noqa: S307 (plain data + whitelisted functions)
            except Exception:
                verdicts.append(False)
            continue
        verdicts.append(False)
    return verdicts
