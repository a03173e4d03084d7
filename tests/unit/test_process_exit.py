"""A finished worker leaves through exit_process: its exit code, buffered output and atexit handlers survive,
its process group is destroyed, and the interpreter's teardown (finalizers) is skipped."""
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import atexit, sys, tempfile
    import torch.distributed as dist
    from rlhf_cli.engine.process_exit import exit_process

    class Finalized:
        def __del__(self):
            print("FINALIZER RAN", flush=True)

    KEEP = Finalized()  # a module global: only the interpreter's teardown would delete it
    atexit.register(lambda: print("ATEXIT RAN", flush=True))
    store = dist.FileStore(tempfile.mktemp(), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    atexit.register(lambda: print("GROUP ALIVE AT EXIT:", dist.is_initialized(), flush=True))
    print("buffered line, never flushed by hand")
    sys.stderr.write("buffered error line\\n")
    exit_process(int(sys.argv[1]))
""")


def run_child(code: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout to a pipe: block-buffered
    return subprocess.run([sys.executable, "-c", CHILD, str(code)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_exit_code_output_and_atexit_survive_and_teardown_is_skipped():
    for code in (0, 3):
        proc = run_child(code)
        assert proc.returncode == code, proc.stderr
        assert "buffered line, never flushed by hand" in proc.stdout
        assert "buffered error line" in proc.stderr
        assert "ATEXIT RAN" in proc.stdout
        assert "GROUP ALIVE AT EXIT: False" in proc.stdout  # destroyed before the atexit handlers
        assert "FINALIZER RAN" not in proc.stdout
