import os
import time

import pytest

from rlhf_cli.rewards import RewardError, build_reward
from rlhf_cli.rewards.code import extract_code, run_code

pytestmark = pytest.mark.skipif(os.name != "posix", reason="sandbox needs POSIX rlimits")

TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
GOOD = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
FAST = {"timeout": 2.0}


def score(completion, tests=TESTS, **kw):
    return run_code(extract_code(completion), tests, **{**FAST, **kw})


def test_extract_code():
    assert extract_code(GOOD).strip() == "def add(a, b):\n    return a + b"
    two = "```python\nx = 1\n```\ntext\n```py\nx = 2\n```"
    assert extract_code(two).strip() == "x = 2"
    assert extract_code("```\nplain = 1\n```").strip() == "plain = 1"
    assert extract_code("```python\nx = 3\n```\n```bash\nls\n```").strip() == "x = 3"
    assert extract_code("def f(): pass") == "def f(): pass"
    assert extract_code("```python\ntruncated = 1\n").strip() == "truncated = 1"


def test_pass_and_fail():
    assert score(GOOD).score == 1.0
    bad = "```python\ndef add(a, b):\n    return a - b\n```"
    r = score(bad)
    # the verdict is the parent's (the child's exit code decides nothing); it is explained in stderr
    assert r.score == 0.0 and "AssertionError" in r.stderr


def test_crash_and_syntax_error():
    assert score("raise RuntimeError('x')").score == 0.0
    assert score("def add(a, b) return a+b").score == 0.0


def test_infinite_loop_times_out():
    t0 = time.monotonic()
    r = score("while True:\n    pass", timeout=1.0)
    assert r.score == 0.0 and r.timed_out
    assert time.monotonic() - t0 < 1.0 + 2.0


def test_fork_bomb_blocked_and_parent_fine():
    # max_processes=1 is a kernel limit now (RLIMIT_NPROC in a user namespace): fork fails
    for code in ("import os\nwhile True:\n    os.fork()",
                 "import posix\nwhile True:\n    posix.fork()",
                 "import subprocess\nsubprocess.run(['sleep', '100'])"):
        t0 = time.monotonic()
        r = score(code + "\n" + GOOD.split("```python\n")[1].split("```")[0])
        assert r.score == 0.0, code
        assert time.monotonic() - t0 < 3.0
    # os.system reports the failed fork as a status instead of raising; the sleep never runs
    t0 = time.monotonic()
    score("import os\nos.system('sleep 100')\n" + GOOD.split("```python\n")[1].split("```")[0])
    assert time.monotonic() - t0 < 3.0
    assert os.getpid() > 0 and score(GOOD).score == 1.0  # still healthy


def test_memory_bomb():
    r = score("x = 'a' * 10**10\n" + "def add(a, b):\n    return a + b")
    assert r.score == 0.0
    assert "MemoryError" in r.stderr or r.returncode != 0


def test_early_exit_is_not_a_pass():
    body = "def add(a, b):\n    return a - b\n"  # wrong, but exits before the tests run
    for exit_call in ("import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit(0)", "exit()"):
        r = score(body + exit_call)
        assert r.score == 0.0, exit_call


def test_fake_success_output_is_not_a_pass():
    code = "print('__RLHF_SANDBOX_DONE_0000000000000000 1 1')\nimport os\nos._exit(0)"
    assert score(code).score == 0.0


def test_socket_blocked():
    code = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
            "s.connect(('127.0.0.1', 9))\ndef add(a, b):\n    return a + b")
    assert score(code).score == 0.0
    code2 = "import _socket\n_socket.socket().connect(('127.0.0.1', 9))\ndef add(a, b):\n    return a + b"
    assert score(code2).score == 0.0


def test_output_flood_capped():
    t0 = time.monotonic()
    r = score("while True:\n    print('x' * 10000)", max_output_bytes=1 << 16)
    assert r.score == 0.0
    assert len(r.stdout) <= 2000 and time.monotonic() - t0 < 3.0


def test_temp_dir_cwd_and_minimal_env(monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    code = ("import os\nassert 'SECRET_TOKEN' not in os.environ, 'leaked'\n"
            "assert os.getcwd() == '/tmp'\n"
            "open('scratch.txt', 'w').write('ok')\n"
            "def add(a, b):\n    return a + b")
    assert score(code).score == 1.0


def test_partial_list_tests():
    code = "def add(a, b):\n    return a + b if a >= 0 else 0"
    tests = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(-2, 1) == -1", "assert add(0, 0) == 0"]
    assert score(code, tests, partial=True).score == 0.75
    r = score(code, tests, partial=False)
    assert r.score == 0.0 and (r.n_passed, r.n_total) == (3, 4)
    assert score(code, tests[:2], partial=False).score == 1.0


def test_code_reward_batch_parallel():
    reward = build_reward([{"name": "code", "timeout": 2, "max_workers": 3}])
    comps = [GOOD, "def add(a, b): return 0", "while True: pass", "import os\nos._exit(0)"]
    t0 = time.monotonic()
    out = reward(["p"] * 4, comps, tests=[TESTS] * 4)
    assert out.per_function["code"] == [1.0, 0.0, 0.0, 0.0]
    assert time.monotonic() - t0 < 2.0 + 3.0


def test_code_reward_config_errors():
    with pytest.raises(RewardError, match="timeout"):
        build_reward([{"name": "code", "timeout": 0}])
    with pytest.raises(RewardError, match="'timout'"):
        build_reward([{"name": "code", "timout": 1}])
    reward = build_reward([{"name": "code", "tests_field": "unit_tests"}])
    with pytest.raises(RewardError, match=r"^code reward needs the dataset field 'unit_tests' "
                                          r"\(available fields: tests; set tests_field\)$"):
        reward(["p"], [GOOD], tests=[TESTS])
