"""ZeRO-0 fp32 clipping folded into the fused AdamW step gives DeepSpeed's clip-then-step update, clipped or not,
and reports the gradient norm (DeepSpeed's path reports none there)."""
import json

import pytest

from helpers import run_script

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("max_norm", [0.05, 1e6])  # every step clipped / none
def test_folded_clip_matches_deepspeed_and_reports_the_norm(tmp_path, max_norm):
    proc = run_script("clip_fold.py", [str(tmp_path / "run"), str(max_norm)])
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("FACTS ")]
    facts = json.loads(line[len("FACTS "):])
    assert facts["fold_installed"]
    for row in facts["steps"]:
        assert row["norm"]["folded"] == pytest.approx(row["norm"]["deepspeed"], rel=1e-5)
        if max_norm < 1:
            assert row["norm"]["folded"] > 5 * max_norm  # the clip is active, so the test compares clipped steps
        assert row["reported"] == pytest.approx(row["norm"]["folded"], rel=1e-5)
        assert row["deepspeed_reported"] is None
        assert row["max_weight_diff"] < 5e-6, row  # a clip left out moves weights by ~1e-2 here
