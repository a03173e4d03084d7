"""LR schedule values by hand; output_dir rules that keep finished work from being overwritten."""
import math

import pytest

from rlhf_cli.config.compose import compose
from rlhf_cli.engine.strategy import lr_lambda
from rlhf_cli.errors import RunDirError
from rlhf_cli.training.run_dir import prepare_output_dir


def test_warmup_then_cosine_to_min_ratio():
    f = lr_lambda(total_steps=12, warmup_steps=2, scheduler="cosine", min_lr_ratio=0.1)
    assert f(0) == 0.5 and f(1) == 1.0  # (k+1)/warmup
    assert f(2) == pytest.approx(1.0)  # progress 0
    # k=7: progress (7-2)/10 = 0.5 -> 0.1 + 0.9 * 0.5 * (1 + cos(pi/2)) = 0.55
    assert f(7) == pytest.approx(0.55)
    assert f(12) == pytest.approx(0.1)
    lin = lr_lambda(10, 0, "linear", 0.0)
    assert lin(5) == pytest.approx(0.5)
    assert lr_lambda(10, 0, "constant", 0.0)(9) == 1.0
    assert math.isclose(lr_lambda(10, 0, "cosine", 0.0)(10), 0.0, abs_tol=1e-12)


def _cfg(tmp_path, *extra):
    return compose("sft", None, [f"output_dir={tmp_path / 'run'}", *extra])


def test_finished_run_is_never_overwritten_silently(tmp_path):
    cfg = _cfg(tmp_path)
    prepare_output_dir(cfg, "a: 1\n")
    (tmp_path / "run" / "manifest.json").write_text("{}")
    with pytest.raises(RunDirError, match="holds a finished run; pass overwrite=true"):
        prepare_output_dir(cfg, "a: 1\n")
    prepare_output_dir(_cfg(tmp_path, "overwrite=true"), "a: 2\n")
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_changed_config_keeps_previous_copy(tmp_path):
    prepare_output_dir(_cfg(tmp_path), "a: 1\n")
    prepare_output_dir(_cfg(tmp_path), "a: 2\n")
    assert (tmp_path / "run" / "config.prev-1.yaml").read_text() == "a: 1\n"
    assert (tmp_path / "run" / "config.yaml").read_text() == "a: 2\n"


def test_resume_rules(tmp_path):
    ck = tmp_path / "run" / "checkpoints" / "step-3"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text('{"step": 3}')
    (tmp_path / "run" / "config.yaml").write_text("a: 1\n")
    with pytest.raises(RunDirError, match="has saved progress \\(step 3\\); pass resume=true"):
        prepare_output_dir(_cfg(tmp_path, "resume=false"), "a: 1\n")
    prepare_output_dir(_cfg(tmp_path, "resume=true"), "a: 1\n")
    with pytest.raises(RunDirError, match="has no checkpoint"):
        prepare_output_dir(compose("sft", None, [f"output_dir={tmp_path / 'other'}", "resume=true"]), "a\n")


def test_foreign_directory_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="is not an rlhf-cli run"):
        prepare_output_dir(_cfg(tmp_path), "a\n")
