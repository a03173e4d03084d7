"""Hostile completions against the ``code`` reward: every one must score 0, the test process (the
"trainer") must stay alive, and nothing may be left behind (processes, files outside the box).

Most attacks are written so that the wrong ``add`` (``a - b``) turns into the right one only if the
attack worked (read a secret, reach the network, ...): a score of 1 would show the escape.
"""
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rlhf_cli.rewards import build_reward, sandbox
from rlhf_cli.rewards.code import plan_tests, run_code

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the OS sandbox needs Linux namespaces")

TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
WRONG = "def add(a, b):\n    return a - b\n"
RIGHT_IF = "def add(a, b):\n    return a + b if ESCAPED else a - b\n"  # ESCAPED set by the attack
HOME = os.path.expanduser("~")
TOKEN = f"rlhf{os.getpid()}x{int(time.time())}"
PWNED = os.path.join(HOME, f"pwned_{TOKEN}")
SURVIVOR = str(900000 + os.getpid() % 90000)  # `sleep SURVIVOR`: a process we can look for afterwards
UNBLOCK_CTYPES = "for n in ('ctypes', '_ctypes', 'ctypes._endian'):\n    sys.modules.pop(n, None)\nimport ctypes\n"
LIST_TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]
# every string reachable from the program's globals and loaded modules (where a pass marker would be)
SCAN_STRINGS = ("import sys, os\nstrings = set()\n"
                "for m in [sys._getframe(0).f_globals] + [vars(x) for x in list(sys.modules.values()) if x]:\n"
                "    strings.update(v for v in list(m.values()) if isinstance(v, str) and len(v) < 200)\n")


def attack(body: str) -> str:
    """``body`` sets ESCAPED = True only if the attack succeeds."""
    return "ESCAPED = False\ntry:\n" + "".join(f"    {ln}\n" for ln in body.splitlines()) + \
        "except BaseException:\n    pass\n" + RIGHT_IF


@pytest.fixture(scope="module")
def listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    hits = []

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            hits.append(1)
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    yield port, hits
    srv.close()


def hostile_table(port: int, secret_file: str):
    return {
        # --- forging the verdict: markers, exit codes, runner tampering -------------------------
        "marker_from_globals_then_exit": WRONG + SCAN_STRINGS + "for v in strings:\n"
        "    print(v, '1 1'); print(v, '2 2'); print(v)\nos._exit(0)",
        "marker_from_own_source_then_exit": WRONG + "import sys, os, re\nsrc = open(sys.argv[0]).read()\n"
        "for tok in re.findall(r'[A-Za-z0-9_]{12,}', src):\n    print(tok, '1 1'); print(tok, '2 2')\nos._exit(0)",
        "atexit_prints_marker": WRONG + SCAN_STRINGS + "import atexit\n"
        "atexit.register(lambda: [print(v, n, n) for v in strings for n in (1, 2)])\nimport sys\nsys.exit(0)",
        "sys_exit_0_before_tests": WRONG + "import sys\nsys.exit(0)",
        "os_exit_0_before_tests": WRONG + "import os\nos._exit(0)",
        "empty_the_test_list": (WRONG + "import gc\nfor o in gc.get_objects():\n"
                                "    if isinstance(o, list) and o and (any('assert' in str(x) for x in o) or\n"
                                "            isinstance(o[0], (list, tuple)) and o[0][:1] in (['eval'], ['exec'])):\n"
                                "        o.clear()", LIST_TESTS),
        "replace_the_runner": (WRONG + "import sys, builtins\nmods = list(sys.modules.values())\n"
                               "for m in [sys._getframe(0).f_globals] + [vars(x) for x in mods if x]:\n"
                               "    for k in list(m):\n"
                               "        if any(w in k for w in ('exec', 'eval', 'compile', 'run_job', 'canon')):\n"
                               "            m[k] = lambda *a, **k: True\n"
                               "builtins.exec = builtins.eval = lambda *a, **k: None", LIST_TESTS),
        "forge_report_fd": WRONG + "import os\nos.write(3, b'{\"i\": 0, \"v\": true}\\n{\"i\": 1, \"v\": true}\\n')\n"
        "os._exit(0)",
        "forge_duplicate_reports": WRONG + "import os\nfor i in range(2):\n"
        "    os.write(3, ('{\"i\": %d, \"v\": 0}\\n' % i).encode())",
        "patch_json_dumps": WRONG + "import json\n_d = json.dumps\n"
        "json.dumps = lambda o, **k: _d({'i': o['i'], 'v': True})",
        "patch_builtins_eval": WRONG + "import builtins\nbuiltins.eval = lambda *a, **k: True",
        "int_subclass_eq_always_true": "class Y(int):\n    def __eq__(self, o): return True\n"
        "    def __ne__(self, o): return False\n    __hash__ = int.__hash__\n"
        "def add(a, b):\n    return Y(a - b)",
        "str_subclass_eq_always_true": "class S(str):\n    def __eq__(self, o): return True\n"
        "    __hash__ = str.__hash__\ndef add(a, b):\n    return S('x')",
        "object_eq_always_true": "class A:\n    def __eq__(self, o): return True\n"
        "def add(a, b):\n    return A()",
        "bool_for_int": "def add(a, b):\n    return True",
        "nan_result": "def add(a, b):\n    return float('nan')",
        # --- the trainer: signals, processes ------------------------------------------------------
        "ctypes_kill_parent": WRONG + "import sys, os\n" + UNBLOCK_CTYPES + ""
        "libc = ctypes.CDLL(None)\np = os.getppid()\nfor _ in range(4):\n    try:\n"
        "        if b'python' in open('/proc/%d/cmdline' % p, 'rb').read():\n            libc.kill(p, 9)\n"
        "        p = int(open('/proc/%d/stat' % p).read().rsplit(')', 1)[1].split()[1])\n"
        "    except OSError:\n        libc.kill(p, 9)\n        break",
        "kill_everything": WRONG + "import os\ntry:\n    os.kill(-1, 9)\nexcept OSError:\n    pass",
        "kill_pid_1": WRONG + "import os\nos.kill(1, 9)",
        "fork_bomb": WRONG + "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "thread_bomb": WRONG + "import threading, time\nfor _ in range(10000):\n"
        "    threading.Thread(target=time.sleep, args=(100,)).start()",
        "setsid_survivor": WRONG + "import sys\n" + UNBLOCK_CTYPES + ""
        "libc = ctypes.CDLL(None)\nif libc.fork() == 0:\n    libc.setsid()\n"
        f"    libc.execl(b'/bin/sleep', b'sleep', b'{SURVIVOR}', None)",
        "subprocess_sleep": WRONG + "import subprocess\n"
        f"subprocess.Popen(['sleep', '{SURVIVOR}'], start_new_session=True)",
        # --- secrets and files ----------------------------------------------------------------------
        "read_etc_shadow": attack("open('/etc/shadow').read()\nESCAPED = True"),
        # /proc/PID/environ holds the environment a process was started with: any other process's
        # (the trainer's above all) is a leak
        "read_parent_environ": attack("import os\nfor p in os.listdir('/proc'):\n    try:\n"
                                      "        env = open('/proc/%s/environ' % p, 'rb').read()\n"
                                      "    except OSError:\n        continue\n"
                                      "    if p.isdigit() and int(p) != os.getpid() and b'PATH=' in env:\n"
                                      "        ESCAPED = True"),
        "env_inherited": attack("import os\nESCAPED = 'RLHF_HOSTILE_SECRET' in os.environ"),
        "read_user_file": attack(f"ESCAPED = 'hunter2' in open({secret_file!r}).read()"),
        "write_into_home": attack(f"open({PWNED!r}, 'w').write('x')\nESCAPED = True"),
        "remount_root_rw": attack("import ctypes\nlibc = ctypes.CDLL(None)\n"
                                  "assert libc.mount(None, b'/', None, 32 | 4096, None) == 0\n"
                                  "open('/usr/pwned_%s', 'w')\nESCAPED = True" % TOKEN),
        "new_userns_mount": attack("import ctypes, os\nlibc = ctypes.CDLL(None)\n"
                                   "assert libc.unshare(0x10000000 | 0x00020000) == 0\n"
                                   f"assert libc.mount(b'/', b'/tmp', None, 4096 | 16384, None) == 0\n"
                                   f"ESCAPED = os.path.exists('/tmp' + {secret_file!r})"),
        # --- network --------------------------------------------------------------------------------
        "socket_to_host": attack(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                                 "ESCAPED = True"),
        "raw_socket_after_pop": attack("import sys\nsys.modules.pop('socket', None)\nimport _socket\n"
                                       f"s = _socket.socket()\ns.connect(('127.0.0.1', {port}))\nESCAPED = True"),
        # --- resources ------------------------------------------------------------------------------
        "sleep_forever": WRONG + "import time\ntime.sleep(10**6)",
        "busy_loop": WRONG + "while True:\n    pass",
        "huge_stdout": WRONG + "while True:\n    print('x' * 100000)",
        "huge_file_in_tmp": WRONG + "with open('/tmp/big', 'w') as f:\n    while True:\n        f.write('x' * 10**6)",
        "memory_bomb": WRONG + "x = bytearray(10**11)",
        "recursion_crash": WRONG + "import sys\nsys.setrecursionlimit(10**8)\ndef f(n): return f(n + 1)\nf(0)",
        "close_report_fd": WRONG + "import os\nos.close(3)",
    }


def _box_processes():
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read()
            except OSError:
                continue
            if f"_sandbox_child.py\0--owner={os.getpid()}".encode() in cmd or SURVIVOR.encode() in cmd:
                out.append(int(p))
    return out


def test_sandbox_available():
    ok, why = sandbox.probe()
    assert ok, why


@pytest.mark.parametrize("name", sorted(hostile_table(0, "/x")))
def test_hostile_completion_scores_zero(name, listener, tmp_path, monkeypatch):
    port, hits = listener
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    monkeypatch.setenv("RLHF_HOSTILE_SECRET", "hunter2")
    code = hostile_table(port, str(secret))[name]
    code, tests = code if isinstance(code, tuple) else (code, TESTS)
    before = set(_box_processes())
    t0 = time.monotonic()
    r = run_code(code, tests, timeout=2.0, max_output_bytes=1 << 16,
                 max_processes=4 if name in ("setsid_survivor", "subprocess_sleep", "fork_bomb") else 1)
    assert r.score == 0.0, (name, r)
    assert time.monotonic() - t0 < 2.0 + 8.0
    assert os.getpid() > 0  # we are alive (kill(getppid()) would have ended this process)
    assert set(_box_processes()) - before == set(), f"{name}: sandbox processes left behind"
    assert not os.path.exists(PWNED), f"{name}: wrote into $HOME"
    assert not os.path.exists(f"/usr/pwned_{TOKEN}")
    assert hits == [], f"{name}: reached the host network"


def test_correct_solutions_still_pass():
    assert run_code("def add(a, b):\n    return a + b", TESTS).score == 1.0
    # uses the stdlib, a temp file and a helper process (allowed: max_processes=2)
    code = ("import math, json, subprocess\nopen('/tmp/scratch', 'w').write('ok')\n"
            "assert open('/tmp/scratch').read() == 'ok'\n"
            "def add(a, b):\n    return int(math.fsum([a, b]))")
    assert run_code(code, TESTS, max_processes=2).score == 1.0
    io_tests = [{"input": "2 3\n", "output": "5\n"}, {"input": "-1 1", "output": "0"}]
    assert run_code("a, b = map(int, input().split())\nprint(a + b)", io_tests).score == 1.0
    assert run_code("a, b = map(int, input().split())\nprint(a - b)", io_tests).score == 0.0
    assert run_code("import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)",
                    {"inputs": ["1 2"], "outputs": ["3"]}).score == 1.0


def test_humaneval_check_function_and_other_comparisons():
    tests = ("def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(0, 0) in [0]\n"
             "    assert not candidate(1, -1)\n    assert candidate(1, 1) > 1\ncheck(add)")
    assert run_code("def add(a, b):\n    return a + b", tests).score == 1.0
    assert run_code("def add(a, b):\n    return a * b", tests).score == 0.0
    assert run_code("def f():\n    return (1, {2: 'x'}, {3})", "assert f() == (1, {2: 'x'}, {3})").score == 1.0
    assert run_code("def f():\n    return None", "assert f() is None").score == 1.0


def test_expected_values_never_reach_the_sandbox():
    plan = plan_tests("assert add(2, 3) == 123456789\nx = 1\nassert 987654321 == add(x, 1)")
    sent = repr(plan.steps)
    assert "123456789" not in sent and "987654321" not in sent
    assert [s[2] for s in plan.steps if s[0] == "eval"] == ["add(2, 3)", "add(x, 1)"]


def test_refuses_without_user_namespaces_unless_unsafe(tmp_path):
    """In a user namespace whose max_user_namespaces is 0 the box cannot be built: one line naming
    the missing capability; unsafe=true opts in (and still decides the verdict in the parent)."""
    prog = ("from rlhf_cli.rewards import build_reward, RewardError\n"
            "try:\n    build_reward([{'name': 'code'}])\nexcept RewardError as e:\n    print('REFUSED', e)\n"
            "r = build_reward([{'name': 'code', 'unsafe': True}])\n"
            "print('SCORES', r(['p', 'p'], ['def add(a, b): return a + b', 'def add(a, b): return a - b'],"
            " tests=[%r, %r]).total)\n" % (TESTS, TESTS))
    script = tmp_path / "prog.py"
    script.write_text(prog)
    r = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c",
                        f"echo 0 > /proc/sys/user/max_user_namespaces && exec {sys.executable} {script}"],
                       capture_output=True, text=True, timeout=120, env={**os.environ})
    if "REFUSED" not in r.stdout and "Permission denied" in r.stderr:
        pytest.skip("cannot lower max_user_namespaces here")
    lines = r.stdout.splitlines()
    refused = [ln for ln in lines if ln.startswith("REFUSED")]
    assert refused and "user namespace" in refused[0] and "unsafe" in refused[0], r.stdout + r.stderr
    assert "SCORES [1.0, 0.0]" in r.stdout, r.stdout + r.stderr


def test_code_reward_batch_of_64_speed(capsys):
    reward = build_reward([{"name": "code", "max_workers": 2}])
    comps = ["def add(a, b):\n    return a + b" if i % 2 == 0 else WRONG for i in range(64)]
    t0 = time.perf_counter()
    out = reward(["p"] * 64, comps, tests=[TESTS] * 64)
    dt = time.perf_counter() - t0
    assert out.per_function["code"] == [1.0 - (i % 2) for i in range(64)]
    with capsys.disabled():
        print(f"\ncode reward: 64 completions in {dt:.2f}s = {64 / dt:.1f} completions/s")


def test_nothing_left_in_tmp():
    """Neither the box nor unsafe mode leaves a temp dir behind."""
    before = set(Path("/tmp").glob("rlhf_code_*"))
    run_code(WRONG + "open('/tmp/x', 'w').write('y')", TESTS)
    run_code(WRONG + "open('x', 'w').write('y')", TESTS, unsafe=True)  # harmless program: no isolation here
    assert set(Path("/tmp").glob("rlhf_code_*")) == before


def test_process_limit_binds():
    """RLIMIT_NPROC binds inside the box (root drops to another uid, others lose capabilities):
    with max_processes=3 at most 2 forks succeed, however many are tried."""
    code = ("import os, time\ndef forks():\n    n = 0\n    for _ in range(20):\n        try:\n"
            "            if os.fork() == 0:\n                time.sleep(30)\n                os._exit(0)\n"
            "            n += 1\n        except OSError:\n            break\n    return n\n")
    assert run_code(code, "assert forks() < 3", max_processes=3).score == 1.0
    assert run_code(code, "assert forks() >= 1", max_processes=3).score == 1.0  # forking itself works
    assert _box_processes() == []


RICH_TESTS = [
    # MBPP shape: both sides are calls; only the completion's call is asked of the sandbox
    ("def common(a, b):\n    return list(set(a) & set(b))",
     "assert set(common((3, 4, 5, 6), (5, 7, 4, 10))) == set((4, 5))"),
    ("def root2():\n    return 2 ** 0.5", "assert math.isclose(root2(), 1.41421356, rel_tol=1e-6)"),
    ("def root2():\n    return 2 ** 0.5", "assert abs(root2() - 1.414) < 1e-3"),
    ("def pair():\n    return (1, [2, 3])", "assert pair() == (1, [2, 3]) and pair()[1][0] == 2"),
    ("def words(s):\n    return s.split()", "assert len(words('a b c')) == 3 and sorted(words('b a')) == ['a', 'b']"),
]
# report the same value for every question (they cannot know the expected side: a forger that knew
# it would be a program returning the right answer)
FORGERS = [
    "import builtins\nbuiltins.eval = lambda *a, **k: True",
    "import sys\nsys.modules['__main__'].canon = lambda v, depth=0: 0",
    "import json\n_d = json.dumps\njson.dumps = lambda o, **k: _d({'i': o['i'], 'v': {'__set__': []}})",
]


@pytest.mark.parametrize("good,tests", RICH_TESTS, ids=[t[:40] for _, t in RICH_TESTS])
def test_rich_asserts_are_decided_in_the_parent(good, tests):
    assert run_code(good, tests).score == 1.0
    name = good.split("(")[0].split()[-1]
    wrong = f"def {name}(*a, **k):\n    return None\n"
    assert run_code(wrong, tests).score == 0.0
    for forger in FORGERS:
        assert run_code(wrong + forger, tests).score == 0.0, forger


def test_the_sandbox_child_sees_the_standard_library_not_the_rewards_folder():
    """The child is a script in rewards/, beside code.py (and once math.py, which replaced the stdlib's
    math inside the box: tempfile imports random imports math, and every unsafe=true verdict failed).
    Its folder stays off sys.path in both modes, so a program under test imports the real modules."""
    tests = ["import code, math, tempfile\nassert hasattr(code, 'InteractiveConsole') and math.sqrt(4) == 2"]
    for unsafe in (False, True):
        if not unsafe and not sandbox.probe()[0]:
            continue
        res = run_code("x = 1", tests, unsafe=unsafe)
        assert res.passed, res.stderr
