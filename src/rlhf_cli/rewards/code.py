"""``code`` reward: run the completion's Python code against the record's tests, and decide the
verdict in the trainer, where the code under test cannot reach it.

How a score is decided (a policy searching for any output that scores 1 finds none):

* The parent turns the tests into questions and keeps the answers. Each assert is split: the
  sub-expressions that need the program (calls of its functions, names it or the test setup
  define) are sent to the sandbox as questions; the rest -- comparisons, boolean logic, cheap
  arithmetic, literals and a few pure functions (``set``, ``sorted``, ``abs``, ``math.isclose``,
  ...) -- stays in the parent. ``assert f(2, 3) == 5`` asks for ``f(2, 3)`` and keeps ``== 5``;
  ``assert set(f(a)) == set((4, 5))`` asks for ``f(a)``; ``assert abs(g() - 1.41) < 1e-2`` asks
  for ``g()``. stdin/stdout tests (``[{"input": ..., "output": ...}]`` or
  ``{"inputs": [...], "outputs": [...]}``) send only the inputs; the parent compares the output.
* The sandbox reports each question's value as plain JSON on a file descriptor; the parent reads
  it after every process of the sandbox is dead, decodes it into exact built-in types (an int
  subclass whose ``__eq__`` is always true is reported as the int it holds) and evaluates the kept
  part of the assert on those values. There is no pass marker: exit
  codes, printed text, ``atexit`` handlers, replacing the test runner or emptying the test list
  only change which values get reported, and a value the program did not compute cannot match an
  expected value it never saw.
* The program runs in an OS sandbox (:mod:`.sandbox`): its own user, PID, mount, network, IPC and
  UTS namespaces; a read-only root holding only the interpreter and system libraries (no home, no
  /etc, no /proc) and a small writable /tmp; a process limit that binds (another uid when the
  trainer is root, no capabilities otherwise); address-space, CPU, file-size and open-file limits;
  a wall-clock limit after which the whole namespace is killed. Where the platform cannot build it,
  the reward refuses with one line naming the missing capability unless ``unsafe: true``.
"""
from __future__ import annotations

import ast
import logging
import os
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from . import sandbox
from ._sandbox_child import decode
from .errors import RewardError, dataset_field
from .registry import REWARDS

log = logging.getLogger(__name__)

Tests = Union[str, Sequence[Any], dict, None]

# --------------------------------------------------------------------------- extraction
_FENCE_RE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PY_LANGS = {"python", "py", "python3", "py3"}


def extract_code(text: Optional[str]) -> str:
    """The last ```python fenced block, else the last ``` block, else the whole text.
    An unterminated final fence (truncated generation) counts as a block."""
    if not text:
        return ""
    blocks = _FENCE_RE.findall(text)
    py = [body for lang, body in blocks if lang.lower() in _PY_LANGS]
    if py:
        return py[-1]
    if blocks:
        return blocks[-1][1]
    return text


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


def judge(plan: Plan, box: "sandbox.BoxResult") -> List[bool]:
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


# --------------------------------------------------------------------------- execution
@dataclass
class ExecResult:
    score: float  # 1/0, or passed/total with partial=true
    passed: bool  # every test passed
    returncode: Optional[int]
    timed_out: bool
    n_passed: int
    n_total: int
    elapsed: float
    stdout: str  # tail, for debugging
    stderr: str  # tail, for debugging (ends with the parent's verdict on failed tests)


def run_code(
    code: str,
    tests: Tests = None,
    *,
    timeout: float = 5.0,
    memory_mb: Optional[int] = 512,
    max_output_bytes: int = 1 << 20,
    max_processes: Optional[int] = 1,
    partial: bool = False,
    python: Optional[str] = None,
    unsafe: bool = False,
) -> ExecResult:
    """Run ``code`` against ``tests`` in the OS sandbox; the verdict is decided here, in the parent."""
    sandbox.require(python, unsafe)
    plan = plan_tests(tests)
    t0 = time.monotonic()
    box = sandbox.run_box(code or "", plan.mode, plan.steps, timeout=timeout, memory_mb=memory_mb,
                          max_output_bytes=max_output_bytes, max_processes=max_processes or 1,
                          python=python, unsafe=unsafe)
    verdicts = judge(plan, box)
    n_total = len(verdicts)
    n_passed = sum(verdicts)
    passed = n_total > 0 and n_passed == n_total
    if n_total == 0:  # no tests: the program only has to run to the end without error
        passed = box.returncode == 0 and not box.timed_out and not box.stderr.strip()
        n_total, n_passed = 1, int(passed)
    score = n_passed / n_total if partial else float(passed)
    failed = [f"AssertionError: {c.text}" for c, ok in zip(plan.checks, verdicts) if not ok]
    stderr = box.stderr + ("\n" + "\n".join(failed[:5]) if failed else "")
    return ExecResult(score=score, passed=passed, returncode=box.returncode, timed_out=box.timed_out,
                      n_passed=n_passed, n_total=n_total, elapsed=time.monotonic() - t0,
                      stdout=box.stdout[-2000:], stderr=stderr[-2000:])


# --------------------------------------------------------------------------- reward
def validate_code_options(*, timeout: float = 5.0, memory_mb: Optional[int] = 512, max_output_bytes: int = 1 << 20,
                          max_processes: Optional[int] = 1, max_workers: int = 2, python: Optional[str] = None,
                          unsafe: bool = False, **_: Any) -> None:
    """Option checks shared by the factory and config-time validation (which starts no sandbox)."""
    if not float(timeout) > 0:
        raise RewardError(f"code: timeout must be > 0 seconds, got {timeout}")
    if memory_mb is not None and int(memory_mb) < 64:
        raise RewardError(f"code: memory_mb must be >= 64 (the interpreter needs it), got {memory_mb}")
    if int(max_workers) < 1:
        raise RewardError(f"code: max_workers must be >= 1, got {max_workers}")
    if int(max_output_bytes) < 4096:
        raise RewardError(f"code: max_output_bytes must be >= 4096, got {max_output_bytes}")
    if max_processes is not None and int(max_processes) < 1:
        raise RewardError(f"code: max_processes must be >= 1, got {max_processes}")
    if not isinstance(unsafe, bool):
        raise RewardError(f"code: unsafe must be true or false, got {unsafe!r}")
    if python is not None and not (os.path.isfile(python) or shutil.which(python)):
        raise RewardError(f"code: python interpreter {python!r} not found")


@REWARDS.register("code")
def make_code_reward(
    *,
    tests_field: str = "tests",
    timeout: float = 5.0,
    memory_mb: Optional[int] = 512,
    max_output_bytes: int = 1 << 20,
    max_processes: Optional[int] = 1,
    partial: bool = False,
    max_workers: int = 2,
    python: Optional[str] = None,
    unsafe: bool = False,
) -> Callable[..., List[float]]:
    """1.0 if the completion's code passes the record's ``tests`` (Python asserts as a string or a
    list, or stdin/stdout pairs; ``partial=true`` scores the fraction passing). ``unsafe=true`` runs
    without the OS sandbox where the platform cannot build one (never chosen silently)."""
    validate_code_options(timeout=timeout, memory_mb=memory_mb, max_output_bytes=max_output_bytes,
                          max_processes=max_processes, max_workers=max_workers, python=python, unsafe=unsafe)
    timeout = float(timeout)
    python_exe = shutil.which(python) if python and not os.path.isfile(python) else python
    opts = dict(timeout=timeout, memory_mb=memory_mb, max_output_bytes=int(max_output_bytes),
                max_processes=max_processes, partial=bool(partial), python=python_exe, unsafe=unsafe)
    sandbox.require(python_exe or sys.executable, unsafe)  # probe once, refuse in one line
    if unsafe:
        log.warning("code reward: unsafe=true, completions run WITHOUT the OS sandbox")
    workers = int(max_workers)

    def one(code_text: str, tests: Tests) -> float:
        plan_tests(tests)  # a malformed test is a data error, raised to the user
        try:
            return run_code(extract_code(code_text), tests, **opts).score
        except RewardError:
            raise
        except Exception as e:  # never let one sample take the trainer down
            log.warning("code reward: sandbox failure (%s: %s); scored 0", type(e).__name__, e)
            return 0.0

    def code_reward(prompts: Sequence[str], completions: Sequence[str], **fields: Any) -> List[float]:
        tests = dataset_field(fields, tests_field, "code", "tests_field")
        for i, t in enumerate(tests):
            if t is not None and not isinstance(t, (str, list, tuple, dict)):
                raise RewardError(f"code reward: {tests_field}[{i}] must be a string, a list or a mapping, "
                                  f"got {type(t).__name__}")
        if workers == 1 or len(completions) <= 1:
            return [one(c, t) for c, t in zip(completions, tests)]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rlhf-code-reward") as ex:
            return list(ex.map(one, completions, tests))

    return code_reward


make_code_reward.validate = validate_code_options  # config time: check options, start nothing

