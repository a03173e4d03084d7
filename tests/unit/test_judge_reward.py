"""The batched judge (one forward per prompt, left-padded batches) and the `judge` reward, on a tiny
random judge saved as a real HF dir."""
import pytest
import torch

from helpers import save_tiny_judge
from rlhf_cli.data.constitution import load_constitution
from rlhf_cli.errors import ConfigError
from rlhf_cli.models.judge import Judge, label_token_ids, load_judge_model
from rlhf_cli.rewards import RewardError, build_reward


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory, tokenizer):
    return save_tiny_judge(tokenizer, tmp_path_factory.mktemp("judge"), seed=0)


def test_labels_are_single_tokens_or_a_one_line_error(tokenizer):
    ids = label_token_ids(tokenizer, ["A", "B"])
    assert all(len(x) >= 1 for x in ids)
    with pytest.raises(ConfigError, match="not a single token"):
        label_token_ids(tokenizer, ["A", "Supercalifragilistic"])


def test_batched_label_probs_equal_unbatched_forwards(judge_dir):
    model, tok = load_judge_model(str(judge_dir))
    j = Judge(model, tok, batch_size=3)
    prompts = [j.encode(f"Question {i}: " + "word " * (3 * i), "Answer:") for i in range(5)]
    probs, mass = j.label_probs(prompts, ["A", "B"])
    assert probs.shape == (5, 2) and torch.allclose(probs.sum(-1), torch.ones(5))
    ids = label_token_ids(tok, ["A", "B"])
    for i, p in enumerate(prompts):  # each prompt alone, no padding, full softmax by hand
        with torch.no_grad():
            z = model(torch.tensor([p])).logits[0, -1].float()
        pa, pb = torch.softmax(z, -1)[ids[0]].sum(), torch.softmax(z, -1)[ids[1]].sum()
        assert probs[i, 0].item() == pytest.approx((pa / (pa + pb)).item(), abs=1e-4)
        assert mass[i].item() == pytest.approx((pa + pb).item(), rel=1e-3)
    assert j.forward_rows == 5


def test_judge_reward_score_is_one_plus_expected_digit_and_cached_per_step(judge_dir):
    reward = build_reward([{"name": "judge", "path": str(judge_dir), "batch_size": 2}])
    fn = reward.terms[0].fn
    prompts = ["Say hi.", "Say hi.", "Name a colour.", "Say hi."]
    comps = ["hi", "hi", "red", "hello"]
    out = reward(prompts, comps)
    s = out.per_function["judge"]
    assert all(1.0 <= x <= 10.0 for x in s) and s[0] == s[1] and s[0] != s[3]
    assert fn.stats == {"calls": 1, "requested": 4, "judged": 3}  # the duplicate was judged once
    # by hand: 1 + sum_d d * p(d) with p renormalised over the digit tokens
    model, tok = load_judge_model(str(judge_dir))
    c = load_constitution("default")
    j = Judge(model, tok)
    # SmolLM2 has no " 7" token: the prefix gets the space, so the digit is the next token
    assert j.answer_prefix("Rating:", [str(d) for d in range(10)]) == "Rating: "
    assert j.answer_prefix("Response", ["A", "B"]) == "Response"
    ids = j.encode(c.render("score", prompt="Name a colour.", response="red"), "Rating: ")
    with torch.no_grad():
        z = model(torch.tensor([ids])).logits[0, -1].float()
    digit_ids = label_token_ids(tok, [str(d) for d in range(10)])
    p = torch.stack([torch.softmax(z, -1)[x].sum() for x in digit_ids])
    assert s[2] == pytest.approx(1 + (p / p.sum() @ torch.arange(10.0)).item(), abs=1e-4)


def test_judge_reward_reference_mode(judge_dir):
    reward = build_reward([{"name": "judge", "path": str(judge_dir), "mode": "reference"}])
    out = reward(["2+2?", "2+2?"], ["4", "5"], answer=["4", "4"])
    s = out.per_function["judge"]
    assert all(0.0 <= x <= 1.0 for x in s)
    assert s[0] == 0.5  # response == reference: a tie by construction, exactly (not judged: one text judged)
    assert reward.terms[0].fn.stats["judged"] == 1
    with pytest.raises(RewardError, match="no 'answer' field"):
        reward(["q"], ["a"])


def test_bad_judge_options_are_one_line_errors(tmp_path, judge_dir):
    with pytest.raises(RewardError, match="no such directory"):
        build_reward([{"name": "judge", "path": str(tmp_path / "nope")}])
    with pytest.raises(RewardError, match="mode='rank'"):
        build_reward([{"name": "judge", "path": str(judge_dir), "mode": "rank"}])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    reward = build_reward([{"name": "judge", "path": str(broken)}])
    with pytest.raises(RewardError, match="cannot load a causal LM judge") as e:
        reward(["q"], ["a"])
    assert "\n" not in str(e.value)
