"""Renamed config keys work for one release with a one-line warning: on the command line, in a recipe, and
in the config.yaml of a run being resumed (grpo.num_iterations -> grpo.epochs, one name with ppo.epochs)."""
from omegaconf import OmegaConf

from rlhf_cli.config.aliases import ALIASES
from rlhf_cli.config.compose import compose, load_resolved, to_yaml


def test_old_key_on_the_command_line_and_in_a_recipe(tmp_path, capsys):
    assert ALIASES["grpo.num_iterations"] == "grpo.epochs"
    cfg = compose("grpo", None, ["grpo.num_iterations=3"])
    assert cfg.grpo.epochs == 3 and "num_iterations" not in cfg.grpo
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: command line: 'grpo.num_iterations' is now 'grpo.epochs' (the old name works for "
                   "this release only)"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text("grpo:\n  num_iterations: 2\n")
    assert compose("grpo", str(recipe), []).grpo.epochs == 2
    assert f"warning: {recipe}: 'grpo.num_iterations' is now 'grpo.epochs'" in capsys.readouterr().err
    assert compose("grpo", None, ["grpo.epochs=4"]).grpo.epochs == 4  # the new name: no warning
    assert capsys.readouterr().err == ""


def test_a_config_saved_with_the_old_key_still_loads(tmp_path):
    text = to_yaml(compose("grpo", None, ["grpo.epochs=2", f"output_dir={tmp_path / 'run'}"]))
    saved = OmegaConf.create(text)
    saved.grpo["num_iterations"] = saved.grpo.pop("epochs")
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml(saved))
    assert load_resolved(path).grpo.epochs == 2
