"""Errors keep the CLI contract with several processes: one line on stderr, as with one process."""
import json

import pytest

from helpers import TINY, rlhf

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("nproc", ["1", "2"])
def test_worker_data_error_is_one_line_on_stderr(tmp_path, nproc):
    data = tmp_path / "train.jsonl"
    rows = [json.dumps({"text": "fine"}), json.dumps({"foo": "no known field"})]
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    proc = rlhf(["train", "sft", *TINY, f"data.path={data}", "train.max_steps=1", f"output_dir={out}",
                 "--nproc", nproc], check=False, timeout=600)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and f"{data}:2: record has none of" in errors[0], proc.stderr[-3000:]
    assert "error:" not in proc.stdout, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
