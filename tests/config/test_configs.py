"""Every shipped YAML composes and validates; bad input fails with one line naming the key/file."""
from pathlib import Path

import pytest

from helpers import REPO, rlhf
from rlhf_cli.config.compose import compose, conf_dir, group_options
from rlhf_cli.config.stages import STAGES
from rlhf_cli.errors import ConfigError


def available_stages():
    out = []
    for name, info in STAGES.items():
        try:
            assert info.schema is not None
        except ImportError:
            continue  # a stage whose module is not built yet
        out.append(name)
    return out


@pytest.mark.parametrize("stage", available_stages())
def test_stage_defaults_compose(stage):
    cfg = compose(stage)
    assert cfg.stage == stage
    assert Path(cfg.output_dir).is_absolute()


def test_an_output_dir_with_the_shape_of_a_hub_id_is_still_a_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/ here yet: 'runs/x' looks like the Hub repo x of user runs
    cfg = compose("sft", None, ["output_dir=runs/x"])
    assert cfg.output_dir == str(tmp_path / "runs" / "x")


@pytest.mark.parametrize("group", ["model", "engine"])
def test_every_group_option_composes(group):
    for option in group_options(group):
        cfg = compose("sft", None, [f"{group}={option}"])
        assert cfg[group] is not None


def test_every_data_option_composes_with_some_stage():
    for option in group_options("data"):
        errors = []
        for stage in available_stages():
            try:
                compose(stage, None, [f"data={option}"])
                break
            except ConfigError as e:
                errors.append(str(e))
        else:
            pytest.fail(f"data={option} composes with no stage: {errors}")


def recipe_stage(path: Path) -> str:
    return path.stem.split("_")[0]


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_recipes_compose(recipe):
    stage = recipe_stage(recipe)
    if stage not in available_stages():
        pytest.skip(f"stage {stage} not built")
    cfg = compose(stage, str(recipe))
    assert cfg.stage == stage


def test_layering_order_defaults_recipe_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("engine: zero3\noptim:\n  lr: 0.5\ntrain:\n  max_steps: 7\n")
    cfg = compose("sft", str(recipe), ["optim.lr=0.25"])
    assert cfg.engine.zero_stage == 3  # recipe's group choice
    assert cfg.train.max_steps == 7  # recipe value
    assert cfg.optim.lr == 0.25  # override beats recipe
    assert cfg.optim.weight_decay == 0.0  # packaged default kept
    cfg = compose("sft", str(recipe), ["engine=zero1"])
    assert cfg.engine.zero_stage == 1  # command-line group choice beats recipe's


@pytest.mark.parametrize("overrides,expected", [
    (["optim.lrr=1"], "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"),
    (["optim.lr=abc"], "optim.lr=abc"),
    (["engine=zero9"], "engine=zero9: no such engine config"),
    (["data.path=/nonexistent.jsonl"], "data.path=/nonexistent.jsonl: file not found"),
    (["precision=fp8"], "precision=fp8: must be one of"),
    (["engine.offload_params=true"], "needs engine.zero_stage=3"),
    (["train.micro_batch_size=0"], "train.micro_batch_size=0: must be >= 1"),
    (["data.path=builtin:nope.jsonl"], "no such example"),
])
def test_bad_overrides_name_the_key(overrides, expected):
    with pytest.raises(ConfigError) as e:
        compose("sft", None, overrides)
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_key_in_recipe_names_file(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  max_stpes: 3\n")
    expected = r"bad.yaml: unknown key 'train.max_stpes' \(did you mean 'train.max_steps'\?\)"
    with pytest.raises(ConfigError, match=expected):
        compose("sft", str(recipe))


def test_invalid_yaml_names_file(tmp_path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: invalid YAML"):
        compose("sft", str(recipe))


def test_unknown_stage_and_missing_recipe():
    with pytest.raises(ConfigError, match="unknown stage 'sfd' \\(did you mean 'sft'\\?\\)"):
        compose("sfd")
    with pytest.raises(ConfigError, match="conf=missing.yaml: file not found"):
        compose("sft", "missing.yaml")


@pytest.mark.parametrize("args", [
    ["train", "sft", "optim.lrr=1"],
    ["train", "sfx"],
    ["train", "sft", "conf=does-not-exist.yaml"],
    ["config", "sft", "engine=zero7"],
])
def test_cli_errors_are_one_line_without_traceback(args):
    proc = rlhf(args, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_conf_is_packaged_with_every_group():
    for group in ("stage", "model", "engine", "data"):
        assert (conf_dir() / group).is_dir()
