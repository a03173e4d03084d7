"""Registering a toy entry of every kind makes it a valid config choice (compose) shown by `rlhf config`,
and ``Registry.unregister`` takes it away again (the wrong name then fails with the closest match)."""
import importlib.util
import sys
from pathlib import Path

import pytest

from rlhf_cli.config.choices import annotate_choices
from rlhf_cli.config.compose import compose, to_yaml
from rlhf_cli.errors import ConfigError

TOYS = Path(__file__).resolve().parents[1] / "e2e" / "scripts" / "toy_registrations.py"
CONFIGS = {  # stage -> (overrides choosing the toys, [(yaml key, toy name)])
    "dpo": (["dpo.loss=toy_hinge"], [("loss", "toy_hinge")]),
    "rm": (["rm.loss=toy_rm_hinge"], [("loss", "toy_rm_hinge")]),
    "grpo": (["grpo.advantage=toy_centered", "grpo.loss_agg=toy_seq_sum", "grpo.kl_estimator=toy_sq",
              "grpo.policy_loss=toy_vanilla", "reward.functions=[{name: toy_length}]"],
             [("advantage", "toy_centered"), ("loss_agg", "toy_seq_sum"), ("kl_estimator", "toy_sq"),
              ("policy_loss", "toy_vanilla"), ("name", "toy_length")]),
}


@pytest.fixture
def toys():
    spec = importlib.util.spec_from_file_location("toy_registrations", TOYS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_registrations"] = module
    spec.loader.exec_module(module)
    yield module
    module.unregister_all()
    sys.modules.pop("toy_registrations", None)


@pytest.mark.parametrize("stage", sorted(CONFIGS))
def test_toy_choice_composes_and_is_listed(toys, stage, tmp_path):
    overrides, shown = CONFIGS[stage]
    cfg = compose(stage, None, ["model=tiny", f"output_dir={tmp_path}", *overrides])
    lines = annotate_choices(to_yaml(cfg)).splitlines()
    for key, name in shown:
        (line,) = [ln for ln in lines if ln.strip().lstrip("- ").startswith(f"{key}: {name}  # choices:")]
        assert name in [x.strip() for x in line.split("# choices:")[1].split(",")]


def test_every_kind_is_registered_and_unregister_removes_it(toys):
    for registry, name in toys.ENTRIES.items():
        assert name in registry and name in registry.names()
    assert toys.DPO_LOSSES.meta("toy_hinge") == {"options": ("label_smoothing",)}
    assert toys.ADVANTAGES.meta("toy_centered") == {"options": {"eps": "adv_eps"}}
    toys.unregister_all()
    for registry, name in toys.ENTRIES.items():
        assert name not in registry
    with pytest.raises(ConfigError, match=r"dpo.loss=toy_hinge: must be one of .*"):
        compose("dpo", None, ["model=tiny", "dpo.loss=toy_hinge"])
    with pytest.raises(ConfigError, match=r"grpo.kl_estimator=k33: must be one of .*did you mean.*k3"):
        compose("grpo", None, ["model=tiny", "grpo.kl_estimator=k33"])
