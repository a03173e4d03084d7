import math

import pytest
import torch

from rlhf_cli.algos import advantages as A
from rlhf_cli.algos.advantages import ADVANTAGES, AdvantageInputs, estimate, group_has_signal


def grpo(r, num_generations, **options):
    """GRPO's per-response advantages (the registered estimator, one token per response)."""
    adv, returns = A.grpo(AdvantageInputs(r, torch.ones(len(r), 1), num_generations), **options)
    assert returns is None and adv.shape == (len(r), 1)
    return adv[:, 0]


def rloo(r, num_generations):
    return A.rloo(AdvantageInputs(r, torch.ones(len(r), 1), num_generations))[0][:, 0]


def gae(rewards, values, mask, gamma, lam):
    return A.gae(AdvantageInputs(torch.zeros(len(rewards)), mask, token_rewards=rewards, values=values), gamma, lam)


def test_registry():
    assert {"grpo", "dr_grpo", "rloo"} <= set(ADVANTAGES.names())


def test_grpo_group_scaling_and_all_equal_group():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = sqrt(1/3) = 0.577350
    #   -> +-0.5 / (0.577350 + 1e-4) = +-0.865875
    # group 2: all equal -> exactly 0
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert a == pytest.approx(0.865875, abs=1e-6)
    out = grpo(r, num_generations=4)
    torch.testing.assert_close(out, torch.tensor([a, -a, -a, a, 0, 0, 0, 0]), atol=1e-6, rtol=0)
    assert torch.all(out[4:] == 0)
    # spread over each response's tokens, 0 where the mask is 0 (an overlong response masked out)
    mask = torch.tensor([[1, 1, 0]] * 7 + [[0, 0, 0]], dtype=torch.float32)
    adv, _ = ADVANTAGES.get("grpo")(AdvantageInputs(r, mask, 4))
    torch.testing.assert_close(adv, out[:, None] * mask)


def test_grpo_batch_and_none_scaling():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # 'none' (Dr. GRPO): r - group mean
    expected_none = torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    torch.testing.assert_close(grpo(r, 4, scale_rewards="none"), expected_none)
    torch.testing.assert_close(estimate("dr_grpo", AdvantageInputs(r, torch.ones(8, 1), 4))[0][:, 0], expected_none)
    # 'batch': batch mean 0.75 ; sq devs 6 * 0.0625 + 2 * 0.5625 = 1.5 ; /7 -> std = sqrt(3/14) = 0.462910
    s = math.sqrt(1.5 / 7)
    torch.testing.assert_close(grpo(r, 4, scale_rewards="batch"), expected_none / (s + 1e-4), atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        grpo(r, 4, scale_rewards="nope")


def test_grpo_bad_shapes():
    with pytest.raises(ValueError):
        grpo(torch.ones(7), 4)
    with pytest.raises(ValueError):
        grpo(torch.ones(4), 1)


def test_rloo():
    # (1, 2, 3): 1 - (2+3)/2 = -1.5 ; 2 - (1+3)/2 = 0 ; 3 - (1+2)/2 = 1.5 ; second group all equal -> 0
    out = rloo(torch.tensor([1.0, 2.0, 3.0, 4.0, 4.0, 4.0]), num_generations=3)
    torch.testing.assert_close(out, torch.tensor([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]))


def test_group_has_signal():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.5])
    assert group_has_signal(r, 4).tolist() == [True, False, True]


def test_gae_hand_values_with_padding():
    gamma, lam = 0.9, 0.8  # gamma * lam = 0.72
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.6, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # row 0: d2 = 1 - 0.7 = 0.3 ; A2 = 0.3
    #        d1 = 0.9 * 0.7 - 0.6 = 0.03 ; A1 = 0.03 + 0.72 * 0.3 = 0.246
    #        d0 = 0.9 * 0.6 - 0.5 = 0.04 ; A0 = 0.04 + 0.72 * 0.246 = 0.21712
    # row 1 (last position padded; its reward 5 and value 9 must be ignored):
    #        d1 = 1 - 0.6 = 0.4 ; A1 = 0.4 ; d0 = 0.04 ; A0 = 0.04 + 0.72 * 0.4 = 0.328
    adv, ret = gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, torch.tensor([[0.21712, 0.246, 0.3], [0.328, 0.4, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.71712, 0.846, 1.0], [0.828, 1.0, 0.0]]))


def test_gae_lambda1_gamma1_is_monte_carlo():
    torch.manual_seed(0)
    rewards, values = torch.randn(2, 6), torch.randn(2, 6, requires_grad=True)
    mask = torch.ones(2, 6)
    mask[1, 4:] = 0
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # returns = reward-to-go on valid positions
    rtg = torch.flip(torch.cumsum(torch.flip(rewards * mask, [1]), 1), [1]) * mask
    torch.testing.assert_close(ret, rtg)
    assert not adv.requires_grad


@pytest.mark.parametrize("value", [0.7, 123.456, -3.3, 1e6 + 0.1])
def test_all_equal_group_is_exactly_zero_for_every_scaling(value):
    # float32 rounding of the mean used to give 0.7 x 12 -> 1.2e-3 each and 123.456 x 12 -> ~0.13
    # (a -6e-8 residue divided by std + eps = 1e-4); the advantage of a flat group must be exactly 0.
    r = torch.full((12,), value)
    for scale in ("group", "batch", "none"):
        out = grpo(r, 12, scale_rewards=scale)
        assert out.dtype == torch.float32
        assert torch.equal(out, torch.zeros(12)), (scale, out)
    assert torch.equal(rloo(r, 12), torch.zeros(12))
    # a flat group next to a group with signal, batch scaling: the flat one stays exactly 0
    mixed = torch.cat([r, torch.tensor([value + 1.0, value] * 6)])
    out = grpo(mixed, 12, scale_rewards="batch")
    assert torch.equal(out[:12], torch.zeros(12))
    assert (out[12:] != 0).all()


def test_grpo_batch_scaling_float64_hand_value():
    # groups (0.7 x 4) and (0.7, 0.7, 0.7, 1.7): group means 0.7 and 0.95 ; centred (0,0,0,0) and
    # (-.25, -.25, -.25, .75) ; batch (all 8) mean 0.825, sq devs 7 * .015625 + .765625 = .875,
    # unbiased var .875 / 7 = .125, std .353553 -> (-.25, .75) / (.353553 + 1e-4) = -.706907, 2.120721
    r = torch.tensor([0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 1.7])
    out = grpo(r, 4, scale_rewards="batch")
    s = math.sqrt(0.125) + 1e-4
    torch.testing.assert_close(out, torch.tensor([0, 0, 0, 0, -0.25 / s, -0.25 / s, -0.25 / s, 0.75 / s]),
                               atol=1e-6, rtol=0)
    assert torch.equal(out[:4], torch.zeros(4))


def test_gae_hole_in_the_middle_is_skipped_and_rows_of_different_lengths():
    gamma, lam = 0.9, 0.8  # gamma * lam = 0.72
    nan = float("nan")
    # row 0: the row of test_gae_hand_values_with_padding, [0, 0, 1] / [.5, .6, .7], with a masked
    #        token inserted at t=2 (reward 9, value 7 must be ignored): same advantages, hole gets 0.
    #        t3: d = 1 - .7 = .3 -> A = .3 ; t2 hole: skipped, V_next stays .7, A_next stays .3
    #        t1: d = .9 * .7 - .6 = .03 -> A = .03 + .72 * .3 = .246 ; t0: d = .04 -> A = .21712
    # row 1: an overlong response dropped from the loss (whole row masked, NaN values): all 0
    # row 2: shorter, right-padded (NaN at pads must not leak): [0, 1] / [.5, .6]
    #        t1: d = 1 - .6 = .4 ; t0: d = .9 * .6 - .5 = .04 -> A = .04 + .72 * .4 = .328
    rewards = torch.tensor([[0.0, 0.0, 9.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 1.0, nan, 5.0]])
    values = torch.tensor([[0.5, 0.6, 7.0, 0.7], [nan, nan, nan, nan], [0.5, 0.6, nan, nan]])
    mask = torch.tensor([[1, 1, 0, 1], [0, 0, 0, 0], [1, 1, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, torch.tensor([[0.21712, 0.246, 0.0, 0.3], [0.0] * 4, [0.328, 0.4, 0.0, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.71712, 0.846, 0.0, 1.0], [0.0] * 4, [0.828, 1.0, 0.0, 0.0]]))
    # bool masks give the same; shapes are checked
    adv_b, _ = gae(rewards, values, mask.bool(), gamma, lam)
    assert torch.equal(adv_b, adv)
    with pytest.raises(ValueError, match="one \\[B, T\\] shape"):
        gae(rewards, values[:, :3], mask, gamma, lam)


def test_every_estimator_has_the_one_signature_and_gae_needs_a_critic():
    r = torch.tensor([1.0, 0.0, 2.0, 2.0])
    for name in ADVANTAGES.names():
        needs = ADVANTAGES.meta(name).get("needs", ())
        inputs = AdvantageInputs(r, torch.ones(4, 3), 2, token_rewards=torch.zeros(4, 3) if needs else None,
                                 values=torch.zeros(4, 3) if needs else None)
        adv, _ = estimate(name, inputs, **{"gamma": 1.0, "lam": 0.95} if name == "gae" else {})
        assert adv.shape == (4, 3) and adv.dtype == torch.float32, name
    with pytest.raises(ValueError, match="'gae' needs token_rewards, values"):
        estimate("gae", AdvantageInputs(r, torch.ones(4, 3), 2), gamma=1.0, lam=0.95)
