import math
import sys
from pathlib import Path

import pytest

from rlhf_cli.rewards import REWARDS, RewardError, build_reward
from rlhf_cli.rewards.plugin import load_plugin
from rlhf_cli.rewards.registry import Registry, UnknownNameError, validate_scores

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rewards_plugin"
MOD = "rlhf_test_reward_plugin"


@pytest.fixture
def plugin_path(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    yield
    sys.modules.pop(MOD, None)


# ---------------------------------------------------------------- registry
def test_builtins_registered():
    assert {"gsm8k", "format", "code"} <= set(REWARDS.names())
    assert "gsm8k" in REWARDS and "nope" not in REWARDS


def test_registry_unknown_name_suggests_closest():
    reg = Registry("thing")
    reg.register("alpha")(lambda: 1)
    with pytest.raises(UnknownNameError, match="did you mean 'alpha'.*choices: alpha"):
        reg.get("alpah")
    with pytest.raises(ValueError):
        reg.register("alpha")(lambda: 2)


def test_build_reward_unknown_name():
    with pytest.raises(RewardError, match="gsm8") as ei:
        build_reward([{"name": "gsm8"}])
    assert "did you mean 'gsm8k'" in str(ei.value)
    assert "python:" in str(ei.value)


# ---------------------------------------------------------------- combination
def test_combined_weights_and_per_function():
    reward = build_reward([
        {"name": "gsm8k", "weight": 1.0},
        {"name": "format", "weight": 0.2, "pattern": r"<answer>.*</answer>"},
    ])
    comps = ["<answer>#### 4</answer>", "#### 4", "<answer>5</answer>", "nothing"]
    out = reward(["q"] * 4, comps, answer=["4"] * 4)
    assert out.per_function == {"gsm8k": [1.0, 1.0, 0.0, 0.0], "format": [1.0, 0.0, 1.0, 0.0]}
    assert out.total == pytest.approx([1.2, 1.0, 0.2, 0.0])
    assert reward.weights == {"gsm8k": 1.0, "format": 0.2}


def test_combined_duplicate_names_and_alias():
    reward = build_reward([
        {"name": "format", "pattern": "a"},
        {"name": "format", "pattern": "b", "weight": -1},
        {"name": "format", "pattern": "c", "alias": "has_c"},
    ])
    assert reward.names == ["format", "format#2", "has_c"]
    out = reward(["p"], ["abc"])
    assert out.total == [1.0]


def test_string_shorthand_and_bad_weight():
    assert build_reward("gsm8k").names == ["gsm8k"]
    with pytest.raises(RewardError, match="weight"):
        build_reward([{"name": "gsm8k", "weight": "heavy"}])
    with pytest.raises(RewardError, match="weight"):
        build_reward([{"name": "gsm8k", "weight": math.nan}])
    with pytest.raises(RewardError, match="empty"):
        build_reward([])
    with pytest.raises(RewardError, match="name"):
        build_reward([{"weight": 1.0}])


def test_field_length_mismatch():
    reward = build_reward("gsm8k")
    with pytest.raises(RewardError, match="'answer' has 1 values for 2"):
        reward(["a", "b"], ["1", "2"], answer=["1"])
    with pytest.raises(RewardError, match="prompts"):
        reward(["a"], ["1", "2"], answer=["1", "2"])


@pytest.mark.parametrize(
    "scores, msg",
    [([1.0], "returned 1 scores for 2"), ([1.0, "x"], "non-numeric score at index 1"),
     ([1.0, None], "non-numeric"), ([1.0, math.nan], "NaN at index 1"), ([1.0, math.inf], "finite"),
     ("11", "must return a list"), ([[1.0], [2.0]], "nested")],
)
def test_validate_scores(scores, msg):
    with pytest.raises(RewardError, match=msg) as ei:
        validate_scores("myfn", scores, 2)
    assert "myfn" in str(ei.value)


def test_validate_scores_accepts_tuples_bools_and_arrays():
    assert validate_scores("f", (1, True), 2) == [1.0, 1.0]
    torch = pytest.importorskip("torch")
    assert validate_scores("f", torch.tensor([0.5, 1.5]), 2) == [0.5, 1.5]


# ---------------------------------------------------------------- plugins
def test_plugin_by_module_path(plugin_path):
    reward = build_reward([
        {"name": f"python:{MOD}:length_penalty", "weight": 0.1, "max_len": 3},
        {"name": f"python:{MOD}:uses_answer"},  # no **fields: only named fields are passed
    ])
    out = reward(["p", "p"], ["ab", "abcdef"], answer=["ab", "zz"], tests=["unused", "unused"])
    assert out.per_function[f"python:{MOD}:length_penalty"] == [0.0, -1.0]
    assert out.per_function[f"python:{MOD}:uses_answer"] == [1.0, 0.0]
    assert out.total == pytest.approx([1.0, -0.1])


def test_plugin_by_file_path(tmp_path):
    f = tmp_path / "my_reward.py"
    f.write_text("def score(prompts, completions, **kw):\n    return [float(len(c)) for c in completions]\n")
    out = build_reward([{"name": f"python:{f}:score"}])(["p"], ["abc"])
    assert out.total == [3.0]
    with pytest.raises(RewardError, match="file not found"):
        load_plugin(f"python:{tmp_path / 'missing.py'}:score")


def test_plugin_errors(plugin_path):
    with pytest.raises(RewardError, match="module 'no_such_mod_xyz' not found"):
        load_plugin("python:no_such_mod_xyz:fn")
    with pytest.raises(RewardError, match="has no attribute 'length_penalt'.*did you mean 'length_penalty'"):
        load_plugin(f"python:{MOD}:length_penalt")
    with pytest.raises(RewardError, match="not a callable"):
        load_plugin(f"python:{MOD}:NOT_CALLABLE")
    for bad in ("python:", "python:just_module", "python::fn", "python:mod:not-ident"):
        with pytest.raises(RewardError, match="invalid reward plugin spec"):
            load_plugin(bad)
    with pytest.raises(RewardError, match="option 'foo' is not a parameter"):
        build_reward([{"name": f"python:{MOD}:uses_answer", "foo": 1}])


@pytest.mark.parametrize(
    "fn, msg",
    [("wrong_length", "returned 3 scores for 2"), ("returns_nan", "NaN"),
     ("returns_text", "non-numeric"), ("raises", "raised ZeroDivisionError: boom")],
)
def test_plugin_bad_outputs(plugin_path, fn, msg):
    reward = build_reward([{"name": f"python:{MOD}:{fn}"}])
    with pytest.raises(RewardError, match=msg) as ei:
        reward(["p", "p"], ["a", "b"])
    assert fn in str(ei.value)
