"""The precomputed-reference cache is reused only for the same reference weights and data."""
from rlhf_cli.config.compose import compose
from rlhf_cli.stages.dpo import reference_cache_key
from rlhf_cli.training.run_dir import OWNED


def key(*overrides):
    return reference_cache_key(compose("dpo", None, ["model=tiny", *overrides]))


def test_key_follows_what_the_log_probs_depend_on(tmp_path):
    base = key()
    assert key("train.max_steps=99", "optim.lr=0.5") == base  # resuming with a longer run reuses the cache
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text("{}")
    assert key(f"ref.path={tmp_path / 'other'}") != base  # another reference model
    assert key("model.tiny.seed=1") != base  # other starting weights
    assert key("data.max_length=32") != base  # other tokenisation
    assert key("data.eval_fraction=0.5") != base  # other split
    assert key("seed=7") != base


def test_overwrite_removes_the_cache():
    assert "ref_logps.json" in OWNED
