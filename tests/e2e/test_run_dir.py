"""Run dirs under stress: one live run per output_dir, changed configs on resume, torn caches and side files,
and a checkpoint that does not fit on the disk."""
import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from helpers import REPO, TINY, hold_at, interrupt_at, metrics, rlhf
from prefdata import pairs, write_jsonl

pytestmark = pytest.mark.e2e
SFT = ["train", "sft", *TINY, "data.limit=200", "train.micro_batch_size=2"]


def launch(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "rlhf_cli.cli.app", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def wait_for_steps(out, n, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").exists() and len(metrics(out)) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"run did not reach {n} steps: {proc.poll()}")


def test_one_live_run_per_dir_and_resume_rules(tmp_path):
    out = tmp_path / "run"
    first = launch([*SFT, "train.max_steps=100000", "train.save_every=1", f"output_dir={out}"])
    try:
        wait_for_steps(out, 2, first)
        second = rlhf([*SFT, "train.max_steps=100000", "train.save_every=1", f"output_dir={out}"], check=False)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"in use by a running rlhf process (pid {first.pid})" in lines[0], lines
    finally:
        first.send_signal(signal.SIGKILL)  # a crash: the lock dies with its holder
        first.wait()
    from rlhf_cli.engine.checkpoints import list_checkpoints

    last = list_checkpoints(out / "checkpoints")[-1]
    # a changed model is refused in one line naming model.*
    bad = rlhf([*SFT, f"train.max_steps={last + 1}", "model.tiny.seed=3", f"output_dir={out}"], check=False)
    assert bad.returncode == 2 and "model.tiny.seed" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    # other changes are allowed and listed; the crashed run's lock does not block its resume
    ok = rlhf([*SFT, f"train.max_steps={last + 1}", "train.save_every=1", f"output_dir={out}"])
    assert "changed settings: train.max_steps: 100000 -> " in ok.stderr
    assert f"Resumed from {out / 'checkpoints' / f'step-{last}'}" in ok.stdout
    assert (out / "final" / "model.safetensors").exists()


def test_torn_cache_and_metrics_are_rebuilt_not_fatal(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(24))
    out = tmp_path / "dpo"
    args = ["train", "dpo", *TINY, f"data.path={data}", "train.micro_batch_size=2", "train.max_steps=4",
            "train.save_every=2", "data.eval_fraction=0", f"output_dir={out}"]
    proc = hold_at(args[:-1], out, 3)  # after step 3 of 4 (the checkpoint of step 2 is on disk)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "ref_logps.json").exists()
    cache = (out / "ref_logps.json").read_text()
    (out / "ref_logps.json").write_text(cache[: len(cache) // 2])  # torn mid-write
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')  # a line cut by the kill
    done = rlhf(args)
    assert "stale or unreadable, recomputing" in done.stdout
    assert sorted(r["step"] for r in metrics(out) if "loss" in r) == [1, 2, 3, 4]
    json.loads((out / "ref_logps.json").read_text())  # rewritten whole


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))


def test_checkpoint_that_does_not_fit_keeps_the_last_good_one(tmp_path):
    out = tmp_path / "run"
    args = [*SFT, "train.max_steps=8", "train.save_every=2", f"output_dir={out}"]
    interrupt_at(args[:-1], out, 3)  # SIGTERM after step 3 of 8: checkpoints of steps 2 and 3
    from rlhf_cli.engine.checkpoints import list_checkpoints

    good = list_checkpoints(out / "checkpoints")
    assert good
    full = launch(args, preexec_fn=_limit_file_size)  # every file over 8 MB fails, like a full disk
    _, err = full.communicate(timeout=600)
    assert full.returncode == 2, err
    line = err.strip().splitlines()[-1]
    assert "out of disk space" in line and f"step-{good[-1]} is intact" in line, err
    # the failed write (a periodic checkpoint, or final/ when the run got that far) left no partial dir
    assert not list((out / "checkpoints").glob(".step-*.tmp")) and not (out / ".final.tmp").exists()
    assert list_checkpoints(out / "checkpoints") == good
    rlhf(args)  # with space again it resumes from the last good checkpoint and finishes
    assert (out / "final" / "model.safetensors").exists()
    assert os.path.exists(out / "manifest.json")
