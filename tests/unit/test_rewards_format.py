import pytest

from rlhf_cli.rewards import RewardError, build_reward

PATTERN = r"<think>.*</think>\s*<answer>.*</answer>"
TAGS = ["<think>", "</think>", "<answer>", "</answer>"]


def _score(spec, completions):
    return build_reward([spec])(["p"] * len(completions), completions).total


def test_format_match_and_no_match():
    good = "<think>\nstep 1\nstep 2\n</think>\n<answer>42</answer>"
    bad = "The answer is 42"
    assert _score({"name": "format", "pattern": PATTERN}, [good, bad]) == [1.0, 0.0]


def test_format_dotall_default_and_flags():
    multi = "<think>a\nb</think><answer>1</answer>"
    assert _score({"name": "format", "pattern": PATTERN}, [multi]) == [1.0]
    assert _score({"name": "format", "pattern": PATTERN, "flags": ""}, [multi]) == [0.0]
    assert _score({"name": "format", "pattern": "<ANSWER>", "flags": "is"}, ["<answer>"]) == [1.0]


def test_format_fullmatch_mode():
    spec = {"name": "format", "pattern": PATTERN, "mode": "fullmatch"}
    assert _score(spec, ["<think>x</think><answer>1</answer>", "hi <think>x</think><answer>1</answer>"]) == [1.0, 0.0]


def test_format_partial_credit():
    spec = {"name": "format", "pattern": PATTERN, "partial": True, "tags": TAGS, "partial_scale": 1.0}
    scores = _score(spec, [
        "<think>x</think><answer>1</answer>",       # full match
        "<think>x</think> 1",                       # 2 of 4 tags
        "<think><think>x</think> <answer>",         # think twice -> 2 of 4 exactly once
        "nothing",
    ])
    assert scores == [1.0, 0.5, 0.5, 0.0]
    # default partial_scale=0.5 keeps partial credit below a full match
    spec.pop("partial_scale")
    assert _score(spec, ["<answer>1</answer> <think>x</think>"]) == [0.5]


def test_format_invalid_regex_is_build_time_error():
    with pytest.raises(RewardError, match="invalid regex"):
        build_reward([{"name": "format", "pattern": "<think>(.*"}])


def test_format_config_errors():
    with pytest.raises(RewardError, match="pattern"):
        build_reward([{"name": "format"}])
    with pytest.raises(RewardError, match="'patern'"):
        build_reward([{"name": "format", "patern": "x"}])
    with pytest.raises(RewardError, match="mode"):
        build_reward([{"name": "format", "pattern": "x", "mode": "exact"}])
    with pytest.raises(RewardError, match="tags"):
        build_reward([{"name": "format", "pattern": "x", "partial": True}])
    with pytest.raises(RewardError, match="flag"):
        build_reward([{"name": "format", "pattern": "x", "flags": "q"}])
