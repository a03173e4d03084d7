"""Score post-processing: ensembles, EOS trick, length penalty, clipping, running normalisation."""
import json
import math

import pytest
import torch

from rlhf_cli.algos.logprobs import masked_moments
from rlhf_cli.algos.reward_shaping import (
    ENSEMBLE_REDUCERS,
    RunningMoments,
    apply_missing_eos_penalty,
    clip_scores,
    length_penalty,
    normalize_scores,
    post_process_scores,
    reduce_ensemble,
)
from rlhf_cli.registry import UnknownNameError


def test_ensemble_reduce_mean_min():
    s = torch.tensor([[1.0, 2.0, 3.0], [3.0, 0.0, 3.0]])  # K = 2 models, B = 3 responses
    assert reduce_ensemble(s, "mean").tolist() == [2.0, 1.0, 3.0]
    assert reduce_ensemble(s, "min").tolist() == [1.0, 0.0, 3.0]
    assert reduce_ensemble([s[0], s[1]], "min").tolist() == [1.0, 0.0, 3.0]
    assert ENSEMBLE_REDUCERS.names() == ["mean", "min"]
    with pytest.raises(UnknownNameError, match="choices: mean, min"):
        reduce_ensemble(s, "max")
    with pytest.raises(ValueError, match=r"\[K, B\]"):
        reduce_ensemble(torch.ones(3), "mean")


def test_missing_eos_penalty_replaces_the_score():
    scores = torch.tensor([0.5, 2.0, -3.0])
    finished = torch.tensor([True, False, False])
    # unfinished responses get the penalty value itself, whatever they scored (even -3 becomes -1)
    assert apply_missing_eos_penalty(scores, finished, -1.0).tolist() == [0.5, -1.0, -1.0]
    assert apply_missing_eos_penalty(scores, torch.ones(3, dtype=torch.bool), -1.0).tolist() == [0.5, 2.0, -3.0]
    with pytest.raises(ValueError):
        apply_missing_eos_penalty(scores, finished[:2], -1.0)


def test_length_penalty_hand_values():
    # over = max(len - 20, 0) = 0, 30, 80 ; penalty .5 * over / 100 = 0, .15, .4
    out = length_penalty(torch.ones(3), torch.tensor([0, 50, 100]), 0.5, max_len=100, target_len=20)
    torch.testing.assert_close(out, torch.tensor([1.0, 0.85, 0.6]))
    torch.testing.assert_close(length_penalty(torch.ones(2), torch.tensor([10, 40]), 1.0, max_len=40),
                               torch.tensor([0.75, 0.0]))
    with pytest.raises(ValueError):
        length_penalty(torch.ones(2), torch.tensor([1, 2]), 1.0, max_len=0)


def test_clip_and_normalize():
    s = torch.tensor([-7.0, 0.5, 9.0])
    assert clip_scores(s, 5.0).tolist() == [-5.0, 0.5, 5.0]
    assert clip_scores(s, None) is s
    with pytest.raises(ValueError):
        clip_scores(s, 0.0)
    # (x - 1) / 2 and x / 2
    torch.testing.assert_close(normalize_scores(torch.tensor([3.0, -1.0]), 1.0, 2.0, eps=0.0),
                               torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(normalize_scores(torch.tensor([3.0, -1.0]), 1.0, 2.0, shift_mean=False, eps=0.0),
                               torch.tensor([1.5, -0.5]))


def test_running_moments_merge_over_batches_and_ranks():
    # batches [1, 2, 3] then [4, 5]: overall mean 3, unbiased var (4+1+0+1+4)/4 = 2.5
    rm = RunningMoments()
    rm.update(masked_moments(torch.tensor([1.0, 2.0, 3.0])))  # (6, 14, 3)
    assert (rm.count, rm.mean) == (3.0, 2.0) and rm.var == pytest.approx(1.0)
    # second batch split over two ranks: [4] and [5] -> summed moments (9, 41, 2)
    a, b = masked_moments(torch.tensor([4.0])), masked_moments(torch.tensor([[5.0, 99.0]]), torch.tensor([[1, 0]]))
    rm.update(tuple(x + y for x, y in zip(a, b)))
    assert rm.count == 5.0 and rm.mean == pytest.approx(3.0) and rm.var == pytest.approx(2.5)
    assert rm.std == pytest.approx(math.sqrt(2.5))
    torch.testing.assert_close(rm.normalize(torch.tensor([3.0, 5.0]), eps=0.0),
                               torch.tensor([0.0, 2.0 / math.sqrt(2.5)]))
    # same as one batch of everything ; an empty batch changes nothing
    one = RunningMoments()
    one.update(masked_moments(torch.arange(1.0, 6.0)))
    one.update((0.0, 0.0, 0.0))
    assert one.mean == pytest.approx(rm.mean) and one.var == pytest.approx(rm.var)
    # exact resume through JSON
    state = json.loads(json.dumps(rm.state_dict()))
    back = RunningMoments()
    back.load_state_dict(state)
    nxt = masked_moments(torch.tensor([10.0, -2.0]))
    rm.update(nxt)
    back.update(nxt)
    assert back.state_dict() == rm.state_dict()
    # before two values the variance is 0
    assert RunningMoments().var == 0.0


# ---- the missing-EOS penalty is the last word (issue 23, item 1) ------------------------------------------

def _ppo_ctx(**ppo):
    """The PPO stage's scoring function with a one-process strategy (all_reduce is the identity)."""
    from types import SimpleNamespace

    opts = dict(missing_eos_penalty=None, length_penalty=0.0, max_new_tokens=4, reward_norm="none",
                reward_clip=None)
    opts.update(ppo)
    return SimpleNamespace(cfg=SimpleNamespace(ppo=SimpleNamespace(**opts)),
                           strategy=SimpleNamespace(all_reduce=lambda v: list(v)))


def _samples(rewards, finished, lengths):
    from rlhf_cli.rl.experience import Sample

    return [Sample([1], [2] * n, f, r) for r, f, n in zip(rewards, finished, lengths)]


@pytest.mark.parametrize("extra", [
    {}, {"length_penalty": 0.5}, {"reward_clip": 0.5}, {"reward_norm": "running"},
    {"length_penalty": 0.5, "reward_norm": "running", "reward_clip": 0.5},
    {"length_penalty": 2.0, "reward_norm": "running"}, {"reward_norm": "running", "reward_clip": 0.3}])
def test_a_truncated_response_scores_exactly_the_penalty_after_every_transform(extra):
    """Penalty first (as on main) gives -1.5 with length_penalty=0.5, -0.5 with reward_clip=0.5, and under the
    running normaliser [-3, -2.8, -3.4] -> [1.12, -0.32, -0.80]: the truncated response the batch's best."""
    from rlhf_cli.stages.ppo import trained_scores

    ctx = _ppo_ctx(missing_eos_penalty=-1.0, **extra)
    samples = _samples([-3.0, -2.8, -3.4, -3.1], [False, True, True, True], [4, 4, 2, 3])
    out = trained_scores(ctx, samples, RunningMoments())
    assert out[0].item() == -1.0
    # the finished ones go through the transforms as if the penalty were off
    ref = trained_scores(_ppo_ctx(**extra), samples[1:], RunningMoments())
    torch.testing.assert_close(out[1:], ref)


def test_running_statistics_leave_out_the_scores_the_penalty_replaces():
    from rlhf_cli.stages.ppo import trained_scores

    moments = RunningMoments()
    out = trained_scores(_ppo_ctx(missing_eos_penalty=-1.0, reward_norm="running"),
                         _samples([-3.0, -2.8, -3.4], [False, True, True], [4, 4, 4]), moments)
    assert moments.count == 2.0 and moments.mean == pytest.approx(-3.1)
    # (x - mean) / (unbiased std + eps): std of [-2.8, -3.4] is 0.3 * sqrt(2)
    sd = 0.3 * math.sqrt(2.0)
    torch.testing.assert_close(out, torch.tensor([-1.0, 0.3 / (sd + 1e-8), -0.3 / (sd + 1e-8)]))


def test_post_process_order_hand_values():
    # scores 1, 2; lengths 0, 4 of max_len 4; coef 1 -> 1, 1; clip 0.5 -> 0.5, 0.5; EOS missing on the 2nd -> -0.2
    out = post_process_scores(torch.tensor([1.0, 2.0]), torch.tensor([True, False]), torch.tensor([0, 4]),
                              missing_eos_penalty=-0.2, length_coef=1.0, max_len=4, clip=0.5)
    torch.testing.assert_close(out, torch.tensor([0.5, -0.2]))
