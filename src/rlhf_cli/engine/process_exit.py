"""End a launched training process without the interpreter's teardown.

Why: after a run has finished and saved, CPython's finalization still destroys whatever C++ objects the
libraries keep alive (process-group backends that DeepSpeed and ZeRO-3 hold references to after
``destroy_process_group``, their transport threads, the rendezvous store) in no fixed order. Rarely one of
them is a thread that was never joined, and the process aborts with "terminate called without an active
exception" (SIGABRT) — the launcher then reports a finished two-process ZeRO-3 run as failed and kills the
other ranks, which breaks a shell script that chains stages. The teardown also costs ~0.8 s per process.

So a worker that is done runs what Python would run at exit on purpose (``atexit`` handlers: logging's
flush, temporary directories), flushes its standard streams and leaves with ``os._exit``. Every file the
run writes is closed or flushed by then (checkpoints, ``metrics.jsonl``); a lock held on the run
directory is released by the kernel with the process.
"""
from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn


def exit_process(code: int) -> NoReturn:
    """Destroy the process groups, run the ``atexit`` handlers, flush stdout/stderr, ``os._exit(code)``.

    Only for a process of its own (a launched worker); never call it inside a test runner or the CLI."""
    try:
        from rlhf_cli.engine.strategy import Strategy

        Strategy.shutdown()
    except Exception:  # a failed run may leave the group unusable; its exit code already says so
        pass
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a closed pipe: nothing more can be said there
                pass
        os._exit(code)
