"""PPO maths against hand-worked values: KL-shaped rewards, GAE on them, whitening over ranks,
clipped value loss, approx-KL, explained variance, the total loss with PPO-ptx, entropy bonus."""
import math

import pytest
import torch

from rlhf_cli.algos.advantages import AdvantageInputs, gae
from rlhf_cli.algos.logprobs import masked_moments, moments_mean_var, token_entropy
from rlhf_cli.algos.policy import KL_ESTIMATORS
from rlhf_cli.algos.ppo import (
    approx_kl,
    explained_variance_from_moments,
    last_token_index,
    ppo_total_loss,
    shaped_rewards,
    value_loss,
    whiten,
)
from rlhf_cli.algos.reward_shaping import apply_missing_eos_penalty

NAN = float("nan")


def masked_whiten(x, mask, **kw):
    """``whiten`` with one process's own statistics."""
    return whiten(x, mask, masked_moments(x, mask), **kw)


def explained_variance(values, returns, mask):
    """Explained variance of one process's batch (SB3 / CleanRL ``explained_variance``)."""
    return explained_variance_from_moments(masked_moments(returns, mask), masked_moments(returns - values, mask))

# A batch of 4 responses, T = 4, of different lengths:
#   row 0: used the whole budget, no EOS (truncated)       mask 1 1 1 1
#   row 1: short (EOS at t=1), padding in the MIDDLE of the batch   1 1 0 0
#   row 2: a hole (token t=1 excluded from training), ends at t=2  1 0 1 0
#   row 3: an overlong response dropped from the loss       0 0 0 0
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
KL = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, -0.2, NAN, 7.0], [0.2, 9.0, 0.4, 9.0], [1.0, 1.0, 1.0, 1.0]])
RAW_SCORES = torch.tensor([5.0, 1.0, 2.0, 3.0])
FINISHED = torch.tensor([False, True, True, False])


def test_last_token_index():
    assert last_token_index(MASK).tolist() == [3, 1, 2, -1]
    assert last_token_index(MASK.bool()).tolist() == [3, 1, 2, -1]


def test_shaped_rewards_hand_values():
    # EOS trick first: row 0 never ended -> its score 5.0 is replaced by -1.0 (row 3 too, masked anyway)
    scores = apply_missing_eos_penalty(RAW_SCORES, FINISHED, -1.0)
    assert scores.tolist() == [-1.0, 1.0, 2.0, -1.0]
    rewards, non_score = shaped_rewards(scores, KL, MASK, kl_coef=0.1)
    # r_t = -0.1 * KL_t on valid tokens, + score at the last valid token:
    # row 0: -.01, -.02, -.03, -.04 + (-1) = -1.04              non-score sum -.1
    # row 1: -.05, +.02 + 1 = 1.02 ; pads 0 (NaN / 7 ignored)  non-score -.05 + .02 = -.03
    # row 2: -.02, hole 0, -.04 + 2 = 1.96, pad 0               non-score -.06
    # row 3: nothing (no valid token: no KL, no score)          0
    expected = torch.tensor([[-0.01, -0.02, -0.03, -1.04], [-0.05, 1.02, 0, 0], [-0.02, 0, 1.96, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(rewards, expected)
    torch.testing.assert_close(non_score, torch.tensor([-0.1, -0.03, -0.06, 0.0]))
    assert not torch.isnan(rewards).any()
    # a tensor kl_coef and a grad-carrying KL give the same, detached
    r2, _ = shaped_rewards(scores, KL.clone().requires_grad_(True), MASK.bool(), torch.tensor(0.1))
    torch.testing.assert_close(r2, expected)
    assert not r2.requires_grad
    # kl_coef = 0: only the score, at the last real token
    r0, ns0 = shaped_rewards(scores, KL, MASK, 0.0)
    torch.testing.assert_close(r0, torch.tensor([[0, 0, 0, -1.0], [0, 1.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 0]]))
    assert torch.equal(ns0, torch.zeros(4))
    with pytest.raises(ValueError, match="shaped_rewards"):
        shaped_rewards(scores[:3], KL, MASK, 0.1)


def test_gae_on_shaped_rewards_then_global_whitening():
    scores = apply_missing_eos_penalty(RAW_SCORES, FINISHED, -1.0)
    rewards, _ = shaped_rewards(scores, KL, MASK, kl_coef=0.1)
    values = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, NAN, NAN], [1.0, 9.0, 1.5, 9.0], [NAN] * 4])
    inputs = AdvantageInputs(scores, MASK, token_rewards=rewards, values=values)
    adv, ret = gae(inputs, gamma=1.0, lam=0.5)  # gamma * lam = 0.5
    # row 0: t3 d = -1.04 - .4 = -1.44 -> A = -1.44
    #        t2 d = -.03 + .4 - .3 = .07 -> A = .07 + .5 * -1.44 = -.65
    #        t1 d = -.02 + .3 - .2 = .08 -> A = .08 + .5 * -.65 = -.245
    #        t0 d = -.01 + .2 - .1 = .09 -> A = .09 + .5 * -.245 = -.0325
    # row 1: t1 d = 1.02 - .6 = .42 ; t0 d = -.05 + .6 - .5 = .05 -> A = .05 + .21 = .26
    # row 2: t2 d = 1.96 - 1.5 = .46 ; hole skipped ; t0 d = -.02 + 1.5 - 1 = .48 -> A = .48 + .23 = .71
    exp_adv = torch.tensor([[-0.0325, -0.245, -0.65, -1.44], [0.26, 0.42, 0, 0], [0.71, 0, 0.46, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(adv, exp_adv)
    # returns = A + V on valid tokens
    torch.testing.assert_close(ret, torch.tensor([[0.0675, -0.045, -0.35, -1.04], [0.76, 1.02, 0, 0],
                                                  [1.71, 0, 1.96, 0], [0, 0, 0, 0]]))
    # whitening over the 8 valid advantages: sum = -2.3675 + 1.85 = -.5175 ; mean = -.0646875
    # sum of squares = .00105625 + .060025 + .4225 + 2.0736 + .0676 + .1764 + .5041 + .2116 = 3.51688125
    # M2 = 3.51688125 - .5175^2 / 8 = 3.48340546875 ; unbiased var = M2 / 7 = .497629352678...
    s, ss, n = masked_moments(adv, MASK)
    assert (s, n) == (pytest.approx(-0.5175), 8.0) and ss == pytest.approx(3.51688125)
    mean, var = moments_mean_var((s, ss, n))
    assert mean == pytest.approx(-0.0646875) and var == pytest.approx(3.48340546875 / 7)
    # rows split over two "ranks" (rows 0-1 and 2-3): summed moments whiten each shard like the whole
    top, bottom = masked_moments(adv[:2], MASK[:2]), masked_moments(adv[2:], MASK[2:])
    glob = tuple(a + b for a, b in zip(top, bottom))
    w = torch.cat([whiten(adv[:2], MASK[:2], glob), whiten(adv[2:], MASK[2:], glob)])
    torch.testing.assert_close(w, masked_whiten(adv, MASK))
    expected_w = torch.where(MASK.bool(), (exp_adv - mean) / math.sqrt(var + 1e-8), torch.zeros(()))
    torch.testing.assert_close(w, expected_w)


def test_whiten_hand_values_biased_unbiased_shift_mean():
    # valid values 1..5 spread over rows of different lengths (0 and NaN at pads)
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, NAN, 0.0], [5.0, 9.0, 9.0]])
    m = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 0, 0]])
    # mean 3 ; sq devs 4 + 1 + 0 + 1 + 4 = 10 ; unbiased var 10/4 = 2.5 (std 1.581139), biased 2 (1.414214)
    u = 1 / math.sqrt(2.5 + 1e-8)
    b = 1 / math.sqrt(2.0 + 1e-8)
    got = masked_whiten(x, m)
    torch.testing.assert_close(got, torch.tensor([[-2 * u, -u, 0], [u, 0, 0], [2 * u, 0, 0]]))
    torch.testing.assert_close(masked_whiten(x, m, unbiased=False),
                               torch.tensor([[-2 * b, -b, 0], [b, 0, 0], [2 * b, 0, 0]]))
    # shift_mean=False adds the mean (3) back on valid tokens (TRL)
    torch.testing.assert_close(masked_whiten(x, m, shift_mean=False),
                               torch.tensor([[3 - 2 * u, 3 - u, 3], [3 + u, 0, 0], [3 + 2 * u, 0, 0]]))
    # identical values whiten to exactly 0 (no 1/sqrt(eps) blow-up of rounding noise)
    same = torch.full((2, 3), 0.7)
    assert torch.equal(masked_whiten(same, torch.ones(2, 3)), torch.zeros(2, 3))


# ------------------------------------------------------------------ value loss
V = torch.tensor([[1.0, 0.5, 2.0], [0.0, 3.0, 100.0]])
OLD_V = torch.tensor([[0.5, 0.6, 1.0], [0.1, 3.0, -100.0]])
RET = torch.tensor([[2.0, 0.0, 0.0], [1.0, 3.5, 0.0]])
VMASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_clipped_value_loss_hand_values_and_gradients():
    # value_clip 0.2:
    # (0,0) V-old = .5 -> clip .2, Vc = .7: max((1-2)^2 = 1, (.7-2)^2 = 1.69) = 1.69 (clipped) -> .845
    # (0,1) V-old = -.1 inside: both (.5-0)^2 = .25 -> .125 (tie: not counted as clipped)
    # (0,2) V-old = 1 -> Vc = 1.2: max((2-0)^2 = 4, 1.44) = 4 -> 2.0 (the larger is unclipped)
    # (1,0) V-old = -.1 inside: both 1 -> .5 ; (1,1) (3-3.5)^2 = .25 -> .125 ; (1,2) pad
    # token mean: (.845 + .125 + 2 + .5 + .125) / 5 = 3.595 / 5 = .719 ; clip fraction 1/5
    v = V.clone().requires_grad_(True)
    loss, st = value_loss(v, OLD_V, RET, VMASK, 0.2, max_len=8)
    assert loss.item() == pytest.approx(0.719)
    assert st["value_clip"].tolist() == [[True, False, False], [False, False, False]]
    assert st["value_clip_fraction"].item() == pytest.approx(0.2)
    loss.backward()
    # d/dV 0.5 * (V - R)^2 = V - R where that branch is active, 0 through a saturated clip; / 5 tokens
    # (0,0) 0 ; (0,1) .5/5 ; (0,2) 2/5 ; (1,0) -1/5 ; (1,1) -.5/5 ; pad 0
    torch.testing.assert_close(v.grad, torch.tensor([[0.0, 0.1, 0.4], [-0.2, -0.1, 0.0]]))
    # unclipped: (.5 + .125 + 2 + .5 + .125) / 5 = 3.25 / 5 = .65
    loss_u, st_u = value_loss(V, OLD_V, RET, VMASK, None, max_len=8)
    assert loss_u.item() == pytest.approx(0.65) and st_u["value_clip_fraction"].item() == 0.0
    # Dr. GRPO-style aggregation with the budget 4: (2.97 / 4 + .625 / 4) / 2 = .449375
    loss_s, _ = value_loss(V, OLD_V, RET, VMASK, 0.2, loss_agg="seq_mean_token_sum_norm", max_len=4)
    assert loss_s.item() == pytest.approx(0.449375)
    # global normalizer: 3.595 / 10 tokens
    loss_n, _ = value_loss(V, OLD_V, RET, VMASK, 0.2, max_len=8, normalizer=10)
    assert loss_n.item() == pytest.approx(0.3595)
    with pytest.raises(ValueError, match="value_clip"):
        value_loss(V, OLD_V, RET, VMASK, -0.1, max_len=8)
    with pytest.raises(TypeError, match="max_len"):
        value_loss(V, OLD_V, RET, VMASK, 0.2)


def test_approx_kl_hand_values():
    # log ratio = logps - old = ln 2 (ratio 2) and -ln 2 (ratio .5)
    old = torch.zeros(1, 2)
    logps = torch.tensor([[math.log(2.0), -math.log(2.0)]], requires_grad=True)
    ln2 = math.log(2.0)
    # k3 = (ratio - 1) - log ratio: 1 - ln2 = .306853 ; -.5 + ln2 = .193147
    torch.testing.assert_close(approx_kl(logps, old), torch.tensor([[1 - ln2, -0.5 + ln2]]))
    # k2 = .5 (log ratio)^2 = .240227 both ; k1 = -log ratio
    torch.testing.assert_close(approx_kl(logps, old, "k2"), torch.tensor([[0.5 * ln2**2] * 2]))
    torch.testing.assert_close(approx_kl(logps, old, "k1"), torch.tensor([[-ln2, ln2]]))
    assert not approx_kl(logps, old).requires_grad
    assert torch.equal(approx_kl(old, old), torch.zeros(1, 2))
    # it is the KL of the old policy to the new one: E_old[k3] = KL(old || new) exactly
    p_old = torch.softmax(torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), 0)
    p_new = torch.softmax(torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64), 0)
    kl = (p_old * (p_old.log() - p_new.log())).sum()
    torch.testing.assert_close((p_old * KL_ESTIMATORS.get("k3")(p_old.log(), p_new.log())).sum(), kl)
    torch.testing.assert_close((p_old * approx_kl(p_new.log(), p_old.log()).double()).sum(), kl)


def test_explained_variance_hand_values():
    # valid returns 1, 2, 3, 4 (rows of different lengths, NaN at a pad), values 1, 2, 3, 5
    ret = torch.tensor([[1.0, 2.0, 3.0], [4.0, NAN, 0.0]])
    val = torch.tensor([[1.0, 2.0, 3.0], [5.0, 7.0, 0.0]])
    m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # Var[R] = (2.25 + .25 + .25 + 2.25) / 4 = 1.25 ; residual 0, 0, 0, -1: mean -.25,
    # Var = (3 * .0625 + .5625) / 4 = .1875 ; EV = 1 - .1875 / 1.25 = .85
    assert explained_variance(val, ret, m) == pytest.approx(0.85)
    glob_r = tuple(a + b for a, b in zip(masked_moments(ret[:1], m[:1]), masked_moments(ret[1:], m[1:])))
    res = ret - val
    glob_e = tuple(a + b for a, b in zip(masked_moments(res[:1], m[:1]), masked_moments(res[1:], m[1:])))
    assert explained_variance_from_moments(glob_r, glob_e) == pytest.approx(0.85)
    assert explained_variance(ret, ret, m) == 1.0
    assert explained_variance(val, torch.ones(2, 3), m) == 0.0  # constant returns: undefined -> 0


# ------------------------------------------------------------------ total loss
def _losses(w):
    pg = (w * torch.tensor([1.0, -2.0])).sum()       # at w = (1, 1): -1
    vf = (w ** 2).sum()                               # 2
    ptx = -torch.log_softmax(w * torch.tensor([1.0, 3.0]), 0)[0]  # NLL of token 0
    ent = -(torch.softmax(w, 0) * torch.log_softmax(w, 0)).sum()  # ln 2 at w = (1, 1)
    return pg, vf, ptx, ent


def test_ppo_total_loss_hand_value():
    # 1 + .5 * 2 + .1 * 3 - .01 * 4 = 2.26
    t = ppo_total_loss(torch.tensor(1.0), vf_loss=torch.tensor(2.0), vf_coef=0.5, ptx_loss=torch.tensor(3.0),
                       ptx_coef=0.1, entropy=torch.tensor(4.0), entropy_coef=0.01)
    assert t.item() == pytest.approx(2.26)
    # at w = (1, 1): pg = -1, vf = 2, ptx = -log(e / (e + e^3)) = log(1 + e^2) = 2.126928, H = ln 2
    w = torch.ones(2, requires_grad=True)
    pg, vf, ptx, ent = _losses(w)
    assert ptx.item() == pytest.approx(math.log(1 + math.e**2), abs=1e-6)
    t = ppo_total_loss(pg, vf_loss=vf, vf_coef=0.5, ptx_loss=ptx, ptx_coef=2.0, entropy=ent, entropy_coef=0.1)
    assert t.item() == pytest.approx(-1 + 1 + 2 * math.log(1 + math.e**2) - 0.1 * math.log(2), abs=1e-6)


def test_ptx_coef_zero_is_bitwise_the_loss_without_ptx():
    torch.manual_seed(0)
    w0 = torch.randn(2)
    grads, values = [], []
    for kw in ({}, {"ptx_coef": 0.0}, {"ptx_coef": 0.0, "nan_ptx": True}):
        w = w0.clone().requires_grad_(True)
        pg, vf, ptx, ent = _losses(w)
        if kw.pop("nan_ptx", False):
            ptx = ptx * float("nan")  # an unused term must not leak, not even as 0 * NaN
        extra = {"ptx_loss": ptx, **kw} if kw else {}
        t = ppo_total_loss(pg, vf_loss=vf, vf_coef=0.5, entropy=ent, entropy_coef=0.01, **extra)
        t.backward()
        values.append(t.detach())
        grads.append(w.grad.clone())
    assert all(torch.equal(v, values[0]) for v in values) and all(torch.equal(g, grads[0]) for g in grads)
    # and ptx_coef > 0 changes it
    w = w0.clone().requires_grad_(True)
    pg, vf, ptx, ent = _losses(w)
    t = ppo_total_loss(pg, vf_loss=vf, vf_coef=0.5, ptx_loss=ptx, ptx_coef=0.5, entropy=ent, entropy_coef=0.01)
    assert not torch.equal(t.detach(), values[0])
    with pytest.raises(ValueError, match="ptx_coef"):
        ppo_total_loss(pg, ptx_coef=0.5)
    # actor alone (separate critic engine): no vf term
    assert torch.equal(ppo_total_loss(pg.detach()), pg.detach())


def test_differentiable_entropy_bonus():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6)
    # p = (1/4, 3/4) -> H = .25 ln 4 + .75 ln(4/3) = .562335
    two = torch.tensor([[[0.0, math.log(3.0)]]], requires_grad=True)
    h = token_entropy(two, differentiable=True)
    assert h.item() == pytest.approx(0.562335, abs=1e-6)
    # dH/dx_i = -p_i (log p_i + H): -.25 (-1.386294 + .562335) = .205990, -.75 (-.287682 + .562335) = -.205990
    h.sum().backward()
    torch.testing.assert_close(two.grad, torch.tensor([[[0.205990, -0.205990]]]), atol=1e-6, rtol=0)
    for dtype in (torch.float32, torch.bfloat16):  # bf16 goes through the checkpointed chunks
        a = x.detach().to(dtype).clone().requires_grad_(True)
        token_entropy(a, chunk_size=2, differentiable=True).sum().backward()
        b = x.detach().to(dtype).float().requires_grad_(True)
        (-(torch.softmax(b, -1) * torch.log_softmax(b, -1)).sum(-1)).sum().backward()
        torch.testing.assert_close(a.grad.float(), b.grad, atol=1e-2 if dtype == torch.bfloat16 else 1e-5,
                                   rtol=1e-2 if dtype == torch.bfloat16 else 1e-5)
    # default: for logging, no graph
    assert not token_entropy(x.requires_grad_(True)).requires_grad


@pytest.mark.parametrize("off", ["null", "0"])
def test_value_clip_can_be_turned_off(off):
    """ppo.value_clip=null / 0 is the unclipped value loss (main refused both: a float > 0 was required)."""
    from rlhf_cli.config.compose import compose

    cfg = compose("ppo", None, [f"ppo.value_clip={off}", "critic.init=policy", "data.path=builtin:gsm8k_sft.jsonl",
                                "reward.functions=[{name: format, pattern: x}]"])
    loss, st = value_loss(V, OLD_V, RET, VMASK, cfg.ppo.value_clip, max_len=8)
    assert loss.item() == pytest.approx(0.65) and st["value_clip_fraction"].item() == 0.0
