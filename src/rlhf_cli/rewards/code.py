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

import logging
import os
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

from . import sandbox
from .code_verdict import Tests, decide, plan_tests
from .errors import RewardError, dataset_field
from .registry import REWARDS

log = logging.getLogger(__name__)


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
    verdicts = decide(plan, box)
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

