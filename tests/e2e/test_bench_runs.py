"""`rlhf bench grpo` and the GRPO side of `--vs trl` run our real stage on the embedded model and read its
step metrics back (a metric renamed in a stage once left both dividing by zero rows)."""
import json
import subprocess
import sys

import pytest

from helpers import REPO, rlhf

pytestmark = pytest.mark.e2e


def test_bench_grpo_and_the_vs_trl_grpo_side_report_a_step():
    proc = rlhf(["bench", "grpo", "prompts=1", "generations=2", "tokens=4", "steps=2"])
    row = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith('{"bench": "grpo"')][0]
    assert row["step_time"] > 0 and row["time/generation"] > 0 and row["gen_tokens_per_s"] > 0, row
    ours = subprocess.run([sys.executable, "-m", "rlhf_cli.bench.vs", "ours", "grpo",
                           json.dumps({"prompts": 1, "generations": 2, "tokens": 4, "steps": 2, "limit": 8})],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    result = [json.loads(x[len("RESULT "):]) for x in ours.stdout.splitlines() if x.startswith("RESULT ")]
    assert result, ours.stdout[-2000:] + ours.stderr[-2000:]
    assert result[0]["step_time"] > 0 and 0 < result[0]["generated_tokens_per_step"] <= 2 * 4, result
