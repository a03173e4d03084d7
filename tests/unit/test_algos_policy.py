import math

import pytest
import torch

from rlhf_cli.algos.policy import KL_ESTIMATORS, LOSS_AGGREGATIONS, aggregate_loss, clipped_surrogate
from rlhf_cli.registry import UnknownNameError


def test_kl_estimators_hand_values():
    # logps = log .5, ref = log .25 ; d = ref - logps = -log 2 = -0.693147
    # k1 = 0.693147 ; k2 = 0.5 * 0.480453 = 0.240227 ; k3 = e^d - d - 1 = 0.5 + 0.693147 - 1 = 0.193147
    logps = torch.tensor([math.log(0.5)])
    ref = torch.tensor([math.log(0.25)])
    ln2 = math.log(2)
    assert KL_ESTIMATORS.get("k1")(logps, ref).item() == pytest.approx(ln2, abs=1e-6)
    assert KL_ESTIMATORS.get("k2")(logps, ref).item() == pytest.approx(0.5 * ln2**2, abs=1e-6)
    assert KL_ESTIMATORS.get("k3")(logps, ref).item() == pytest.approx(0.5 + ln2 - 1, abs=1e-6)
    for name in ("k1", "k2", "k3"):
        assert KL_ESTIMATORS.get(name)(ref, ref).item() == 0.0


def test_k3_nonnegative_and_unbiased():
    torch.manual_seed(0)
    # policy = N(0,1) logits over 5 tokens, ref different; E_pi[k1] = E_pi[k3] = KL(pi || ref)
    p = torch.softmax(torch.randn(5, dtype=torch.float64), 0)
    q = torch.softmax(torch.randn(5, dtype=torch.float64), 0)
    kl = (p * (p.log() - q.log())).sum()
    k1 = (p * KL_ESTIMATORS.get("k1")(p.log(), q.log())).sum()
    k3v = KL_ESTIMATORS.get("k3")(p.log(), q.log())
    assert (k3v >= 0).all()
    torch.testing.assert_close(k1, kl)
    torch.testing.assert_close((p * k3v).sum(), kl)


def test_clipped_surrogate_asymmetric():
    clip_low, clip_high = 0.2, 0.28  # bounds [0.8, 1.28]
    ratios = torch.tensor([[1.5, 0.5, 1.25, 0.9, 1.5, 0.5]], dtype=torch.float64)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, -1.0, 1.0]], dtype=torch.float64)
    old = torch.zeros_like(ratios)
    logps = ratios.log().requires_grad_(True)
    loss, st = clipped_surrogate(logps, old, adv, clip_low=clip_low, clip_high=clip_high)
    # r=1.5 A=+1: min(1.5, 1.28) -> -1.28 (clipped high, no grad)
    # r=0.5 A=-1: min(-0.5, -0.8) -> 0.8 (clipped low, no grad)
    # r=1.25 A=+1: inside [0.8, 1.28] (a symmetric 0.2 clip would cut it) -> -1.25
    # r=0.9 A=-1: -> 0.9
    # r=1.5 A=-1: min(-1.5, -1.28) = -1.5 -> 1.5 (pessimistic, unclipped)
    # r=0.5 A=+1: min(0.5, 0.8) = 0.5 -> -0.5 (unclipped)
    torch.testing.assert_close(loss, torch.tensor([[-1.28, 0.8, -1.25, 0.9, 1.5, -0.5]], dtype=torch.float64))
    loss.sum().backward()
    # d loss / d logps = -A * ratio where unclipped, 0 where clipped
    torch.testing.assert_close(logps.grad, torch.tensor([[0.0, 0.0, -1.25, 0.9, 1.5, -0.5]], dtype=torch.float64))
    assert st["clip_high"].tolist() == [[True, False, False, False, False, False]]
    assert st["clip_low"].tolist() == [[False, True, False, False, False, False]]
    torch.testing.assert_close(st["ratio"], ratios)
    assert not st["ratio"].requires_grad


def test_clipped_surrogate_broadcast_seq_advantages_and_old_logp_constant():
    logps = torch.log(torch.tensor([[1.1, 1.0], [1.0, 0.7]])).requires_grad_(True)
    old = torch.zeros(2, 2, requires_grad=True)
    adv = torch.tensor([2.0, -1.0])  # [B]
    loss, st = clipped_surrogate(logps, old, adv, clip_low=0.2, clip_high=0.2)
    # row 0, A=2: -(1.1*2), -(1*2) ; row 1, A=-1: 1.0, ratio .7 < .8 -> clipped: -min(-.7, -.8) = 0.8
    torch.testing.assert_close(loss, torch.tensor([[-2.2, -2.0], [1.0, 0.8]]))
    assert st["clip_low"].tolist() == [[False, False], [False, True]]
    loss.sum().backward()
    assert old.grad is None or torch.all(old.grad == 0)


PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 100.0, 100.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


def test_aggregate_token_mean():
    # (1+2+3+4+5) / 5 = 3 ; global normalizer 10 -> 1.5
    assert aggregate_loss(PER_TOKEN, MASK, "token_mean", max_len=8).item() == pytest.approx(3.0)
    assert aggregate_loss(PER_TOKEN, MASK, "token_mean", max_len=8, normalizer=10).item() == pytest.approx(1.5)


def test_aggregate_seq_mean_token_mean():
    # per seq: 6/3 = 2, 9/2 = 4.5 ; mean 3.25 ; normalizer 4 sequences -> 6.5 / 4 = 1.625
    assert aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_mean", max_len=8).item() == pytest.approx(3.25)
    assert aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_mean", max_len=8,
                          normalizer=4).item() == pytest.approx(1.625)


def test_aggregate_seq_mean_token_sum_norm():
    # max_len 10: (6/10 + 9/10) / 2 = 0.75 ; normalizer 4 sequences: 1.5 / 4 = 0.375
    assert aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_sum_norm", max_len=10).item() == pytest.approx(0.75)
    assert aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_sum_norm", max_len=10,
                          normalizer=4).item() == pytest.approx(0.375)


def test_dr_grpo_normaliser_is_the_budget_not_the_padded_width():
    # the same two sequences in a batch padded to width 4 and to width 7 (a longer batch-mate):
    # the loss must not change, since the denominator is max_len = 10 both times (it was T before)
    wide = torch.cat([PER_TOKEN, torch.full((2, 3), 100.0)], dim=1)
    wide_mask = torch.cat([MASK, torch.zeros(2, 3, dtype=MASK.dtype)], dim=1)
    a = aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_sum_norm", max_len=10)
    b = aggregate_loss(wide, wide_mask, "seq_mean_token_sum_norm", max_len=10)
    assert a.item() == b.item() == pytest.approx(0.75)
    # impossible to call without it, whatever the mode
    for mode in LOSS_AGGREGATIONS.names():
        with pytest.raises(TypeError, match="max_len"):
            aggregate_loss(PER_TOKEN, MASK, mode)
        with pytest.raises(TypeError, match="max_len"):
            LOSS_AGGREGATIONS.get(mode)(PER_TOKEN, MASK)
    for bad in (None, 0, 2.5):
        with pytest.raises(ValueError, match="max_new_tokens"):
            aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_sum_norm", max_len=bad)


def test_aggregate_grads_and_unknown_mode():
    x = PER_TOKEN.clone().requires_grad_(True)
    aggregate_loss(x, MASK, "seq_mean_token_mean", max_len=8).backward()
    # row 0 tokens weight 1/3 / 2 = 1/6, row 1 tokens 1/2 / 2 = 1/4, masked 0
    torch.testing.assert_close(x.grad, torch.tensor([[1 / 6, 1 / 6, 1 / 6, 0], [0.25, 0.25, 0, 0]]))
    assert set(LOSS_AGGREGATIONS.names()) == {"token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"}
    with pytest.raises(UnknownNameError, match="did you mean 'token_mean'"):
        aggregate_loss(PER_TOKEN, MASK, "token_men", max_len=8)


def test_reinforce_is_the_unclipped_importance_weighted_policy_gradient():
    """POLICY_LOSSES['reinforce']: -ratio * A (Williams 1992 with an importance ratio). On-policy its gradient
    is -A d log pi; off-policy it is not clipped (no token counted as clipped), where ppo_clip cuts it."""
    from rlhf_cli.algos.policy import POLICY_LOSSES

    fn = POLICY_LOSSES.get("reinforce")
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    loss, st = fn(logps, logps.detach(), adv, torch.ones(2, 2))
    torch.testing.assert_close(loss, torch.tensor([[-2.0, -2.0], [1.0, 1.0]]), check_dtype=False)
    loss.sum().backward()
    torch.testing.assert_close(logps.grad, torch.tensor([[-2.0, -2.0], [1.0, 1.0]]))  # -A, ratio 1
    # far off-policy (ratio e = 2.718 > 1.2): reinforce keeps the full gradient, ppo_clip zeroes it
    old = logps.detach() - 1.0
    loss_r, st_r = fn(logps, old, adv, torch.ones(2, 2))
    loss_c, st_c = POLICY_LOSSES.get("ppo_clip")(logps, old, adv, torch.ones(2, 2), clip_low=0.2, clip_high=0.2)
    torch.testing.assert_close(loss_r[0], -math.e * torch.tensor([2.0, 2.0]))
    assert not st_r["clip_high"].any() and st_c["clip_high"][0].all()
    assert set(POLICY_LOSSES.names()) >= {"ppo_clip", "reinforce"}
