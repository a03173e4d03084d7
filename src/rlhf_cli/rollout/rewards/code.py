"""``code`` reward: run the completion's Python code against the record's tests in a
sandboxed subprocess.

Layers of protection (best effort -- this guards the trainer against crashes, hangs,
memory/fork/output bombs, network use and early-exit reward hacks; it is *not* a
security boundary against a determined attacker with code execution):

* a fresh ``python -I -B`` interpreter (isolated mode: no user site, no PYTHON* env),
  ``stdin`` closed, a minimal environment (PATH only + HOME/TMPDIR in the temp dir), cwd
  in a fresh temporary directory that is deleted afterwards;
* resource limits set by the child's preamble before any user code runs: address space
  (``memory_mb``), CPU seconds (timeout+1), file size (``max_output_bytes``, which also
  caps the captured stdout/stderr), RLIMIT_NPROC (``max_processes``), no core dumps.
  (Set in the child rather than in ``preexec_fn``, which is unsafe in a threaded parent.)
* a ``reliability_guard``-style preamble that replaces ``os.fork``/``exec*``/``spawn*``/
  ``system``/``kill``, ``subprocess.*``, ``_posixsubprocess.fork_exec``, destructive file
  operations and socket creation with functions that raise;
* when the parent runs as root (RLIMIT_NPROC does not apply to root) the child is run as
  ``nobody`` if that user can start the interpreter (probed once; ``user=``);
* ``unshare -n`` (or ``unshare -rn`` unprivileged) for a network namespace when it works
  (probed once; ``network=``); never required;
* a wall-clock timeout that SIGKILLs the whole process group (``start_new_session``);
* a random sentinel printed after the tests: score 1 needs the sentinel *and* exit code 0,
  so ``sys.exit(0)`` / ``os._exit(0)`` before the tests never counts as a pass.
"""
from __future__ import annotations

import logging
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .errors import RewardError
from .registry import REWARDS

log = logging.getLogger(__name__)

Tests = Union[str, Sequence[str], None]

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


# --------------------------------------------------------------------------- child script
_PREAMBLE = r'''
import os as _rlhf_os
def _rlhf_sandbox(mem_bytes, cpu_s, fsize, nproc):
    import builtins, resource, shutil, subprocess, socket, _socket, posix, faulthandler
    try:
        import _posixsubprocess
    except ImportError:
        _posixsubprocess = None
    def lim(res, v):
        try:
            soft, hard = resource.getrlimit(res)
            if hard != resource.RLIM_INFINITY:
                v = min(v, hard)
            resource.setrlimit(res, (v, v))
        except (ValueError, OSError):
            pass
    if mem_bytes:
        lim(resource.RLIMIT_AS, mem_bytes)
        lim(resource.RLIMIT_DATA, mem_bytes)
    lim(resource.RLIMIT_CPU, cpu_s)
    lim(resource.RLIMIT_FSIZE, fsize)
    lim(resource.RLIMIT_CORE, 0)
    if nproc is not None and hasattr(resource, "RLIMIT_NPROC"):
        lim(resource.RLIMIT_NPROC, nproc)
    faulthandler.disable()
    def blocked(name):
        def f(*a, **k):
            raise PermissionError(name + " is disabled in the reward sandbox")
        return f
    for mod, prefix in ((_rlhf_os, "os."), (posix, "posix.")):
        for n in ("fork", "forkpty", "vfork", "system", "popen", "kill", "killpg", "setsid",
                  "setpgid", "setpgrp", "execl", "execle", "execlp", "execlpe", "execv", "execve",
                  "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv",
                  "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp", "register_at_fork",
                  "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace",
                  "truncate", "ftruncate", "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown",
                  "chroot", "setuid", "seteuid", "setreuid", "setresuid", "setgid",
                  "link", "symlink", "mkfifo", "mknod", "pidfd_open"):
            if hasattr(mod, n):
                setattr(mod, n, blocked(prefix + n))
    for n in ("Popen", "call", "run", "check_call", "check_output", "getoutput", "getstatusoutput"):
        setattr(subprocess, n, blocked("subprocess." + n))
    if _posixsubprocess is not None:
        _posixsubprocess.fork_exec = blocked("_posixsubprocess.fork_exec")
    for n in ("rmtree", "move", "chown"):
        setattr(shutil, n, blocked("shutil." + n))
    for mod in (socket, _socket):
        for n in ("socket", "SocketType", "socketpair", "fromfd", "create_connection",
                  "create_server", "getaddrinfo", "gethostbyname", "gethostbyname_ex"):
            if hasattr(mod, n):
                setattr(mod, n, blocked("socket." + n))
    import sys
    for n in ("_posixsubprocess", "ctypes", "_ctypes", "multiprocessing", "pty"):
        sys.modules[n] = None  # "import ctypes" -> ImportError
    builtins.help = None
'''

_LIST_TESTS = r'''
_rlhf_passed = 0
for _rlhf_t in _rlhf_tests:
    try:
        _rlhf_exec(_rlhf_compile(_rlhf_t, "<test>", "exec"), globals())
        _rlhf_passed += 1
    except BaseException:
        pass
_rlhf_write(1, ("\n%s %d %d\n" % (_rlhf_sentinel, _rlhf_passed, len(_rlhf_tests))).encode())
'''


def build_script(code: str, tests: Tests, sentinel: str, *, memory_mb: Optional[int], cpu_s: int,
                 max_output_bytes: int, max_processes: Optional[int]) -> str:
    mem = int(memory_mb) * 1024 * 1024 if memory_mb else 0
    parts = [
        _PREAMBLE,
        f"_rlhf_sandbox({mem}, {int(cpu_s)}, {int(max_output_bytes)}, {max_processes!r})",
        "del _rlhf_sandbox",
        "_rlhf_write, _rlhf_exec, _rlhf_compile = _rlhf_os.write, exec, compile",
        f"_rlhf_sentinel = {sentinel!r}",
    ]
    if isinstance(tests, (list, tuple)):
        parts.append(f"_rlhf_tests = {[str(t) for t in tests]!r}")
    parts += ["# ---- completion ----", code, "", "# ---- tests ----"]
    if isinstance(tests, (list, tuple)):
        parts.append(_LIST_TESTS)
    else:
        parts.append(tests or "")
        parts.append('\n_rlhf_write(1, ("\\n%s 1 1\\n" % _rlhf_sentinel).encode())')
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- sandbox setup
@dataclass(frozen=True)
class _Launch:
    prefix: Tuple[str, ...]  # e.g. ("unshare", "-n")
    user: Optional[Tuple[int, int]]  # (uid, gid) to switch to, or None


_LAUNCH_CACHE: Dict[Tuple[str, Any, Any], _Launch] = {}
_LAUNCH_LOCK = threading.Lock()


def _try(cmd: List[str], user: Optional[Tuple[int, int]]) -> bool:
    tmp = tempfile.mkdtemp(prefix="rlhf_probe_")
    try:
        if user:
            os.chown(tmp, user[0], user[1])
        kw: Dict[str, Any] = {}
        if user:
            kw = dict(user=user[0], group=user[1], extra_groups=[])
        r = subprocess.run(cmd, cwd=tmp, env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=20, **kw)
        return r.returncode == 0
    except (OSError, subprocess.SubprocessError, ValueError):
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _resolve_user(user: Any) -> Optional[Tuple[int, int]]:
    if user in (None, False, "", "none", "off"):
        return None
    if not hasattr(os, "geteuid"):
        return None
    import pwd

    if user == "auto":
        if os.geteuid() != 0:
            return None
        try:
            pw = pwd.getpwnam("nobody")
        except KeyError:
            return None
        return (pw.pw_uid, pw.pw_gid)
    try:
        pw = pwd.getpwuid(int(user)) if str(user).isdigit() else pwd.getpwnam(str(user))
    except KeyError:
        raise RewardError(f"code: user {user!r} does not exist") from None
    if os.geteuid() != 0 and pw.pw_uid != os.geteuid():
        raise RewardError(f"code: switching to user {user!r} needs root")
    return (pw.pw_uid, pw.pw_gid)


def resolve_launch(python: str, network: Any = "auto", user: Any = "auto") -> _Launch:
    """Decide (once per combination) whether to drop to another user and use ``unshare``."""
    key = (python, network, user)
    with _LAUNCH_LOCK:
        if key in _LAUNCH_CACHE:
            return _LAUNCH_CACHE[key]
        want_user = _resolve_user(user)
        base = [python, "-I", "-B", "-c", "pass"]
        uid = want_user
        if want_user is not None and not _try(base, want_user):
            if user != "auto":
                raise RewardError(f"code: user {user!r} cannot run {python} (permissions?)")
            log.warning("code reward: cannot run %s as 'nobody'; sandbox runs as the current user "
                        "(fork protection relies on the in-process guard)", python)
            uid = None
        prefix: Tuple[str, ...] = ()
        if network in (True, "auto", "unshare", "on"):
            unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
            for cand in (("-n",), ("-r", "-n")):
                if unshare and _try([unshare, *cand, *base], uid):
                    prefix = (unshare, *cand)
                    break
            if not prefix and network != "auto":
                raise RewardError("code: network='unshare' requested but 'unshare -n' does not work here")
        elif network not in (False, None, "off", "none", "guard"):
            raise RewardError(f"code: network must be 'auto', 'unshare' or 'off', got {network!r}")
        launch = _Launch(prefix=prefix, user=uid)
        _LAUNCH_CACHE[key] = launch
        return launch


# --------------------------------------------------------------------------- execution
@dataclass
class ExecResult:
    score: float  # 1/0, or passed/total with partial list tests
    passed: bool  # sentinel seen, exit code 0 and every test passed
    returncode: Optional[int]
    timed_out: bool
    n_passed: int
    n_total: int
    elapsed: float
    stdout: str  # tail, for debugging
    stderr: str  # tail, for debugging


def _read_tail(f, n: int) -> str:
    f.flush()
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - n))
    return f.read().decode("utf-8", errors="replace")


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


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
    network: Any = "auto",
    user: Any = "auto",
) -> ExecResult:
    """Run ``code`` followed by ``tests`` in the sandbox; see the module docstring."""
    python = python or sys.executable
    launch = resolve_launch(python, network, user)
    sentinel = "__RLHF_SANDBOX_DONE_" + secrets.token_hex(8)
    is_list = isinstance(tests, (list, tuple))
    script = build_script(code or "", tests, sentinel, memory_mb=memory_mb,
                          cpu_s=int(math.ceil(timeout)) + 1, max_output_bytes=max_output_bytes,
                          max_processes=max_processes)
    tmp = tempfile.mkdtemp(prefix="rlhf_code_")
    t0 = time.monotonic()
    rc: Optional[int] = None
    timed_out = False
    try:
        path = os.path.join(tmp, "main.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(script)
        os.chmod(path, 0o644)
        kw: Dict[str, Any] = {}
        if launch.user:
            os.chown(tmp, *launch.user)
            kw = dict(user=launch.user[0], group=launch.user[1], extra_groups=[])
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        # output goes to anonymous files (capped by RLIMIT_FSIZE), read back through our fds
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            cmd = [*launch.prefix, python, "-I", "-B", "-X", "utf8", path]
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, start_new_session=True, close_fds=True, **kw)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _killpg(proc.pid)
                rc = proc.wait()
            finally:
                _killpg(proc.pid)  # stragglers left in the group
            stdout = _read_tail(out, 64 * 1024)
            stderr = _read_tail(err, 4 * 1024)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - t0
    n_passed, n_total = 0, (len(tests) if is_list else 1)
    idx = stdout.rfind(sentinel + " ")
    seen = False
    if idx >= 0:
        m = re.match(re.escape(sentinel) + r" (\d+) (\d+)", stdout[idx:])
        if m:
            seen = True
            n_passed, n_total = int(m.group(1)), int(m.group(2))
        stdout = stdout[:idx] + stdout[idx:].split("\n", 1)[-1] if m else stdout
    ok = seen and rc == 0 and not timed_out
    if not ok:
        n_passed = 0
    passed = ok and n_passed == n_total
    if partial and is_list and ok:
        score = n_passed / n_total if n_total else 1.0
    else:
        score = 1.0 if passed else 0.0
    return ExecResult(score=score, passed=passed, returncode=rc, timed_out=timed_out,
                      n_passed=n_passed, n_total=n_total, elapsed=elapsed,
                      stdout=stdout[-2000:], stderr=stderr[-2000:])


# --------------------------------------------------------------------------- reward
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
    network: Any = "auto",
    user: Any = "auto",
) -> Callable[..., List[float]]:
    """1.0 if the completion's code passes the record's ``tests`` (string of Python, or a
    list of assert snippets; ``partial=true`` scores the fraction of list items passing)."""
    timeout = float(timeout)
    if not timeout > 0:
        raise RewardError(f"code: timeout must be > 0 seconds, got {timeout}")
    if memory_mb is not None and int(memory_mb) < 64:
        raise RewardError(f"code: memory_mb must be >= 64 (the interpreter needs it), got {memory_mb}")
    if int(max_workers) < 1:
        raise RewardError(f"code: max_workers must be >= 1, got {max_workers}")
    if int(max_output_bytes) < 4096:
        raise RewardError(f"code: max_output_bytes must be >= 4096, got {max_output_bytes}")
    if python is not None and not (os.path.isfile(python) or shutil.which(python)):
        raise RewardError(f"code: python interpreter {python!r} not found")
    python_exe = shutil.which(python) if python and not os.path.isfile(python) else python
    opts = dict(timeout=timeout, memory_mb=memory_mb, max_output_bytes=int(max_output_bytes),
                max_processes=max_processes, partial=bool(partial), python=python_exe,
                network=network, user=user)
    resolve_launch(python_exe or sys.executable, network, user)  # probe/validate at build time
    workers = int(max_workers)

    def one(code_text: str, tests: Tests) -> float:
        try:
            return run_code(extract_code(code_text), tests, **opts).score
        except RewardError:
            raise
        except Exception as e:  # never let one sample take the trainer down
            log.warning("code reward: sandbox failure (%s: %s); scored 0", type(e).__name__, e)
            return 0.0

    def code_reward(prompts: Sequence[str], completions: Sequence[str], **fields: Any) -> List[float]:
        if tests_field not in fields:
            raise RewardError(
                f"code reward needs the dataset field {tests_field!r} "
                f"(available fields: {', '.join(sorted(fields)) or 'none'}; set tests_field)"
            )
        tests = fields[tests_field]
        for i, t in enumerate(tests):
            if t is not None and not isinstance(t, (str, list, tuple)):
                raise RewardError(f"code reward: {tests_field}[{i}] must be a string or a list of "
                                  f"strings, got {type(t).__name__}")
        if workers == 1 or len(completions) <= 1:
            return [one(c, t) for c, t in zip(completions, tests)]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rlhf-code-reward") as ex:
            return list(ex.map(one, completions, tests))

    return code_reward
