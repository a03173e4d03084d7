"""The ``math`` reward on a table of equivalent and non-equivalent answers, through the registry a stage uses."""
import pytest

from rlhf_cli.rewards import build_reward
from rlhf_cli.rewards.math_answer import answers_equal

EQUAL = [(r"\frac{1}{2}", "0.5"), (r"\boxed{\frac{1}{2}}", r"so the answer is $\boxed{0.5}$"),
         ("3", r"The answer is $\boxed{3}$."), (r"$\sqrt{2}/2$", r"$\frac{\sqrt{2}}{2}$"),
         ("10", "$10$ cm"), (r"\frac{3}{4}", "0.75"), ("$2x+1$", "$1+2x$"),
         (r"Let's see... so $x = 5$, hence $\boxed{5}$", r"$\boxed{5}$")]  # a MATH solution as the reference
DIFFERENT = [("3", r"$\boxed{33}$"), (r"\frac{1}{2}", "0.52"), ("5", "the answer is six"), ("$2x+1$", "$2x-1$"),
             ("7", "")]


@pytest.mark.parametrize("reference, completion", EQUAL)
def test_equivalent_answers_score_one(reference, completion):
    assert answers_equal(reference, completion)
    reward = build_reward([{"name": "math"}])
    assert reward(["q"], [completion], answer=[reference]).total == [1.0]


@pytest.mark.parametrize("reference, completion", DIFFERENT)
def test_different_answers_score_zero(reference, completion):
    assert not answers_equal(reference, completion)
    assert build_reward([{"name": "math"}])(["q"], [completion], answer=[reference]).total == [0.0]


def test_reference_field_option_and_missing_field():
    from rlhf_cli.rewards import RewardError

    reward = build_reward([{"name": "math", "answer_field": "solution"}])
    assert reward(["q"], [r"$\boxed{4}$"], solution=[r"2+2 gives $\boxed{4}$"]).total == [1.0]
    with pytest.raises(RewardError, match="math reward needs the dataset field 'solution'"):
        reward(["q"], ["4"], answer=["4"])
