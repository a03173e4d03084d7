"""The step loop's non-finite guard: a loss or grad norm that becomes NaN/inf stops the run with one line
naming the step and the metric, and no checkpoint is written at or after the bad step."""
import re

import pytest

from helpers import TINY, metrics, rlhf

pytestmark = pytest.mark.e2e


def test_diverging_run_stops_with_one_line_and_keeps_only_good_checkpoints(tmp_path):
    out = tmp_path / "run"
    proc = rlhf(["train", "sft", *TINY, "data.limit=32", "train.micro_batch_size=2",
                 "optim.lr=1e30", "optim.max_grad_norm=0", "optim.scheduler=constant", "train.max_steps=4",
                 "train.save_every=1", "train.keep_checkpoints=10", "train.eval_every=0", f"output_dir={out}"],
                check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    m = re.match(r"error: step (\d+): (loss|grad_norm) is (nan|inf|-inf);", errors[0])
    assert m, errors[0]
    bad, metric = int(m.group(1)), m.group(2)
    assert bad >= 2  # step 1 starts from finite weights; the 1e30 update breaks the next one
    rows = {r["step"]: r for r in metrics(out)}
    assert rows[bad][metric] != rows[bad][metric] or abs(rows[bad][metric]) == float("inf")
    assert all(abs(rows[s]["loss"]) < 1e6 for s in range(1, bad))
    ckpts = sorted(int(p.name[5:]) for p in (out / "checkpoints").glob("step-*"))
    assert ckpts == list(range(1, bad)), ckpts  # every good step was saved, none at or after the bad one
    assert f"last good checkpoint {out / 'checkpoints' / f'step-{bad - 1}'}" in errors[0]
    assert not (out / "final").exists() and not (out / "manifest.json").exists()
