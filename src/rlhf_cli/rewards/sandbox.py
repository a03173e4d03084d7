"""Run untrusted Python in an OS sandbox (user + PID + mount + network namespaces, rlimits).

The parent side of :mod:`._sandbox_child`: it starts the launcher, hands it the job on stdin, waits
(with a backstop timeout), and reads back what the program reported on fd 3, only after every
process of the box is dead. What the sandbox guarantees, and how it is tested, is in README
("Reliability"). ``probe()`` checks once per interpreter that the platform can build the box; when
it cannot, :func:`require` raises one line naming the missing capability, unless the caller passed
``unsafe=True`` (then the same launcher runs without namespaces: rlimits and a temp dir only).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import RewardError

CHILD = str(Path(__file__).with_name("_sandbox_child.py"))
_LOCK = threading.Lock()  # probe()
_CACHE_LOCK = threading.Lock()  # _python_paths() / _newroot(), called from the reward's worker threads
_PROBED: Dict[str, Tuple[bool, str]] = {}
_PATHS: Dict[str, List[str]] = {}
_NEWROOT: List[str] = []


@dataclass
class BoxResult:
    results: Dict[int, Tuple[str, Any]] = field(default_factory=dict)  # i -> ("v", value) | ("err", name)
    duplicates: List[int] = field(default_factory=list)  # indices reported more than once (never a pass)
    returncode: Optional[int] = None
    timed_out: bool = False
    stdout: str = ""
    stderr: str = ""


def _python_paths(python: str) -> List[str]:
    """Directories the interpreter needs (its prefix: binary, libpython, stdlib), resolved."""
    with _CACHE_LOCK:
        if python not in _PATHS:
            _PATHS[python] = _find_python_paths(python)
        return _PATHS[python]


def _find_python_paths(python: str) -> List[str]:
    code = "import sys, json; print(json.dumps([sys.base_prefix, sys.base_exec_prefix, sys.executable]))"
    try:
        out = subprocess.run([python, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=30,
                             check=True).stdout
        prefix, exec_prefix, exe = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise RewardError(f"code: cannot run the sandbox interpreter {python}: {e}") from None
    paths = {os.path.realpath(prefix), os.path.realpath(exec_prefix), os.path.dirname(os.path.realpath(exe))}
    system = ("/usr", "/lib", "/lib64", "/lib32", "/bin")
    return sorted(p for p in paths if p != "/" and not any(p == s or p.startswith(s + "/") for s in system))


def _newroot() -> str:
    """An empty directory the box mounts its tmpfs root on (inside its own mount namespace only)."""
    with _CACHE_LOCK:
        if not _NEWROOT:
            import atexit

            _NEWROOT.append(tempfile.mkdtemp(prefix="rlhf_box_"))
            atexit.register(lambda: os.path.isdir(_NEWROOT[0]) and os.rmdir(_NEWROOT[0]))
        return _NEWROOT[0]


def _read(f, limit: int) -> str:
    f.flush()
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - limit))
    return f.read().decode("utf-8", errors="replace")


def run_box(code: str, mode: str, steps: list, *, timeout: float, memory_mb: Optional[int],
            max_output_bytes: int, max_processes: int, python: Optional[str] = None,
            unsafe: bool = False, probe: bool = False) -> BoxResult:
    """Run ``code`` then ``steps`` in a fresh box; see the module docstrings for what it reports."""
    python = python or sys.executable
    job = {
        "code": code, "mode": mode, "steps": steps, "timeout": float(timeout), "probe": probe,
        "unsafe": bool(unsafe), "newroot": _newroot(), "python_paths": _python_paths(python),
        "limits": {"memory_bytes": int(memory_mb) * 1024 * 1024 if memory_mb else 0,
                   "cpu_s": int(timeout) + 1, "fsize": int(max_output_bytes),
                   "nproc": max(1, int(max_processes)), "tmp_mb": 16},
    }
    res = BoxResult()
    with tempfile.TemporaryFile() as inp, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as rep:
        job["report_fd"] = rep.fileno()
        inp.write(json.dumps(job).encode())
        inp.seek(0)
        job_fd = rep.fileno()
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        cmd = [python, "-I", "-S", "-B", "-X", "utf8", CHILD, f"--owner={os.getpid()}"]  # tag: ps, tests
        proc = subprocess.Popen(cmd, stdin=inp, stdout=out, stderr=err, env=env, cwd="/",
                                start_new_session=True, close_fds=True, pass_fds=(job_fd,))
        try:
            res.returncode = proc.wait(timeout=float(timeout) + 10)  # launcher enforces `timeout` itself
        except subprocess.TimeoutExpired:
            res.timed_out = True
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            if res.returncode is None:
                res.returncode = proc.wait()
        if res.returncode == 124:
            res.timed_out = True
        res.stdout = _read(out, 4096)
        res.stderr = _read(err, 4096)
        rep.seek(0)
        raw = rep.read(int(max_output_bytes) + 1)
    for line in raw.decode("utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            i = rec["i"]
            if type(i) is not int:
                continue
            item = ("v", rec["v"]) if "v" in rec else ("err", str(rec.get("err")))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if i in res.results:
            res.duplicates.append(i)
        res.results[i] = item
    if probe:
        res.results = {}
        try:
            res.results[-1] = ("v", json.loads(raw.decode()))
        except ValueError:
            pass
    return res


def probe(python: Optional[str] = None) -> Tuple[bool, str]:
    """(ok, why-not): can this platform build the box? Checked once per interpreter."""
    python = python or sys.executable
    with _LOCK:
        if python in _PROBED:
            return _PROBED[python]
        try:
            r = run_box("", "expr", [], timeout=20, memory_mb=None, max_output_bytes=1 << 16, max_processes=4,
                        python=python, probe=True)
            info = r.results.get(-1, ("", None))[1]
            if r.returncode == 0 and isinstance(info, dict) and info.get("pid") == 1:
                ok = (True, "")
            else:
                why = (r.stderr.strip().splitlines() or [f"launcher exited with {r.returncode}"])[-1]
                ok = (False, why.removeprefix("sandbox: "))
        except RewardError as e:
            ok = (False, str(e))
        _PROBED[python] = ok
        return ok


def require(python: Optional[str] = None, unsafe: bool = False) -> None:
    """Raise one line naming the missing capability unless the box works or ``unsafe`` is set."""
    if unsafe:
        return
    ok, why = probe(python)
    if not ok:
        raise RewardError(f"code reward: OS sandbox unavailable ({why}); the code reward needs unprivileged "
                          f"user namespaces (user, pid, mount, net); set unsafe: true on the code reward "
                          f"to run completions without isolation")
