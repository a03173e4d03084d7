import pytest

from rlhf_cli.rewards import build_reward
from rlhf_cli.rewards.gsm8k import extract_answer, normalize_number

GSM8K_SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
    "#### 72"
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("#### 1,234", "1234"),
        ("so the total is 5 dollars\n#### 1,234", "1234"),
        (r"Thus the result is \boxed{-3.5}.", "-3.5"),
        (r"first \boxed{2} then corrected: \boxed{7}", "7"),
        (r"\boxed{\frac{3}{4}}", "3/4"),
        (r"\boxed{x = 12}", "12"),
        ("She pays $18 in total.", "18"),
        ("The answer is 42.", "42"),
        ("The answer is 42. Check: 40 + 2 = 42 and 3 more steps", "42"),
        ("Final Answer: **$1,250.50**", "1250.50"),
        ("no number here", None),
        ("", None),
        ("The price rose from 2.5 to 3.75", "3.75"),
        ("The temperature dropped to -8 degrees", "-8"),
        ("x = -7", "-7"),
        ("We have 3 apples, 5 pears and 11 plums", "11"),
        ("so 12 - 5 = 7", "7"),
        (GSM8K_SOLUTION, "72"),
        ("Sales grew by 70%", "70"),
        ("It costs \u22124 today", "-4"),
        ("It took 1/2 of the cake", "1/2"),
        ("A total of 1,000,000 people.", "1000000"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_priority_hash_over_boxed_and_last_number():
    assert extract_answer(r"\boxed{5} ... #### 9 and then 100") == "9"
    assert extract_answer(r"The answer is 3. \boxed{4} 99") == "4"
    assert extract_answer("the answer is 3, I counted 99 things") == "3"


def test_extract_answer_without_fallback():
    assert extract_answer("I got 12 apples", fallback_last_number=False) is None


@pytest.mark.parametrize(
    "s, v",
    [("1,234", 1234.0), ("$18.00", 18.0), ("70%", 70.0), ("3/4", 0.75), (r"\frac{3}{4}", 0.75),
     ("72 dollars", 72.0), ("-3.5", -3.5), ("42.", 42.0), (7, 7.0), ("abc", None), (None, None), ("1/0", None)],
)
def test_normalize_number(s, v):
    assert normalize_number(s) == v


def test_gsm8k_reward_against_references():
    reward = build_reward([{"name": "gsm8k"}])
    completions = [
        "Step 1 ... so she sold 72 clips. #### 72",          # raw gsm8k ref
        r"The final result is \boxed{1,234}",               # plain ref with comma
        "The answer is 18.",                                 # numeric ref (int)
        "I think it's 17",                                   # wrong
        "no idea",                                           # nothing
        "The answer is 0.5",                                 # decimal vs fraction ref
        "#### -3",                                           # negative
    ]
    answers = [GSM8K_SOLUTION, "1234", 18, "18", "5", "1/2", "#### -3"]
    out = reward(["q"] * len(completions), completions, answer=answers)
    assert out.per_function["gsm8k"] == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    assert out.total == out.per_function["gsm8k"]


def test_gsm8k_reward_custom_field_and_missing_field():
    reward = build_reward([{"name": "gsm8k", "answer_field": "solution"}])
    assert reward(["q"], ["#### 5"], solution=["#### 5"]).total == [1.0]
    with pytest.raises(Exception, match=r"^gsm8k reward needs the dataset field 'solution' "
                                        r"\(available fields: answer; set answer_field\)$"):
        reward(["q"], ["#### 5"], answer=["5"])


def test_gsm8k_unknown_option():
    with pytest.raises(Exception, match="answer_feild.*did you mean 'answer_field'"):
        build_reward([{"name": "gsm8k", "answer_feild": "x"}])
