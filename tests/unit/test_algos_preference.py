import math

import pytest
import torch

from rlhf_cli.algos.preference import (
    DPO_LOSSES,
    dpo_loss,
    ipo_loss,
    kto_kl_reference_point,
    kto_loss,
    loss_spec,
)
from rlhf_cli.registry import UnknownNameError

# policy chosen/rejected, ref chosen/rejected:
# h = (pc - rc) - (pr - rr) = (-1 + 2) - (-3 + 2) = 1 - (-1) = 2
PC, PR, RC, RR = -1.0, -3.0, -2.0, -2.0


def _t(*vals, grad=False):
    return [torch.tensor([v], dtype=torch.float64, requires_grad=grad) for v in vals]


def test_registry_names():
    assert {"dpo", "cdpo", "ipo", "simpo"} <= set(DPO_LOSSES.names())
    with pytest.raises(UnknownNameError, match="did you mean 'dpo'"):
        DPO_LOSSES.get("dpp")


def test_dpo_hand_value_rewards_and_grad():
    pc, pr, rc, rr = _t(PC, PR, RC, RR, grad=True)
    losses, cr, rj = DPO_LOSSES.get("dpo")(pc, pr, rc, rr, beta=0.1)
    # -log sigma(0.1 * 2) = -log sigma(0.2) = 0.598139
    assert losses.item() == pytest.approx(0.5981388693815918, abs=1e-9)
    # implicit rewards: 0.1 * (pc - rc) = 0.1, 0.1 * (pr - rr) = -0.1, detached
    assert cr.item() == pytest.approx(0.1) and rj.item() == pytest.approx(-0.1)
    assert not cr.requires_grad and not rj.requires_grad
    losses.sum().backward()
    # dL/dpc = -beta * (1 - sigma(0.2)) = -0.1 * 0.450166 = -0.0450166; dL/dpr = +0.0450166
    assert pc.grad.item() == pytest.approx(-0.04501660026875221, abs=1e-9)
    assert pr.grad.item() == pytest.approx(0.04501660026875221, abs=1e-9)


def test_cdpo_label_smoothing():
    pc, pr, rc, rr = _t(PC, PR, RC, RR)
    # -(0.9) log sigma(0.2) - 0.1 log sigma(-0.2) = 0.9 * 0.598139 + 0.1 * 0.798139 = 0.618139
    expected = -0.9 * math.log(1 / (1 + math.exp(-0.2))) - 0.1 * math.log(1 / (1 + math.exp(0.2)))
    assert expected == pytest.approx(0.6181388693815918)
    losses, _, _ = DPO_LOSSES.get("cdpo")(pc, pr, rc, rr, beta=0.1)  # default eps 0.1
    assert losses.item() == pytest.approx(0.6181388693815918, abs=1e-9)
    l2, _, _ = DPO_LOSSES.get("dpo")(pc, pr, rc, rr, beta=0.1, label_smoothing=0.1)
    assert l2.item() == pytest.approx(0.6181388693815918, abs=1e-9)
    with pytest.raises(ValueError):
        DPO_LOSSES.get("cdpo")(pc, pr, rc, rr, beta=0.1, label_smoothing=0.0)


def test_dpo_small_beta_taylor_expansion():
    # -log sigma(x) = log 2 - x/2 + x^2/8 + O(x^4); with x = beta*h, beta = 1e-3, |h| <= 3:
    # |loss - (log 2 - beta h / 2)| <= x^2/8 <= 1.2e-6
    beta = 1e-3
    h = torch.linspace(-3, 3, 13, dtype=torch.float64)
    pc = torch.zeros_like(h) + h  # rc = pr = rr = 0
    zeros = torch.zeros_like(h)
    losses, _, _ = DPO_LOSSES.get("dpo")(pc, zeros, zeros, zeros, beta=beta)
    first_order = math.log(2.0) - beta * h / 2
    err = (losses - first_order).abs()
    assert err.max().item() < 1.2e-6
    # and the residual is the 2nd-order term x^2/8
    torch.testing.assert_close(losses - first_order, (beta * h) ** 2 / 8, atol=1e-11, rtol=0)


def test_ipo_hand_value_and_grad():
    pc, pr, rc, rr = _t(PC, PR, RC, RR, grad=True)
    # tau = 0.1 -> target 1/(2 tau) = 5 ; (h - 5)^2 = (2 - 5)^2 = 9 ; dL/dpc = 2 (h - 5) = -6
    losses, cr, rj = DPO_LOSSES.get("ipo")(pc, pr, rc, rr, beta=0.5, tau=0.1)
    assert losses.item() == pytest.approx(9.0)
    losses.sum().backward()
    assert pc.grad.item() == pytest.approx(-6.0)
    assert pr.grad.item() == pytest.approx(6.0)
    # rewards scaled by beta (0.5), not tau
    assert cr.item() == pytest.approx(0.5) and rj.item() == pytest.approx(-0.5)
    # tau = 0.5 -> target 1 ; (2 - 1)^2 = 1
    l2, _, _ = DPO_LOSSES.get("ipo")(pc, pr, rc, rr, tau=0.5)
    assert l2.item() == pytest.approx(1.0)


def test_simpo_reference_free():
    # avg logps: chosen -1.0, rejected -1.5 ; beta 2, gamma 0.5
    # -log sigma(2 * 0.5 - 0.5) = -log sigma(0.5) = 0.474077
    pc, pr = _t(-1.0, -1.5, grad=True)
    losses, cr, rj = DPO_LOSSES.get("simpo")(pc, pr, None, None, beta=2.0, gamma=0.5)
    assert losses.item() == pytest.approx(0.47407698418010663, abs=1e-9)
    assert cr.item() == pytest.approx(-2.0) and rj.item() == pytest.approx(-3.0)
    losses.sum().backward()
    # dL/dpc = -beta (1 - sigma(0.5)) = -2 * 0.377541 = -0.755082
    assert pc.grad.item() == pytest.approx(-0.7550813375962911, abs=1e-9)
    assert torch.isfinite(pr.grad).all()


def test_batched_shapes():
    torch.manual_seed(0)
    B = 5
    args = [torch.randn(B) for _ in range(4)]
    for name in DPO_LOSSES.names():
        if loss_spec(name)["data"] != "pairs":  # unpaired (KTO) has its own signature, tested below
            continue
        kw = {"beta": 0.1}
        out = DPO_LOSSES.get(name)(*args, **kw)
        assert len(out) == 3 and all(o.shape == (B,) for o in out), name


def test_kto_hand_values():
    # beta 0.1, z0 = 1
    # desirable   r = 3 - 0 = 3 : v = sigma(0.1 * (3 - 1)) = sigma(0.2) = 0.549834 ; L = 1 - v = 0.450166
    # undesirable r = -1 - 0    : v = sigma(0.1 * (1 - (-1))) = sigma(0.2)         ; L = 0.450166
    policy = torch.tensor([3.0, -1.0], dtype=torch.float64, requires_grad=True)
    ref = torch.zeros(2, dtype=torch.float64)
    desirable = torch.tensor([True, False])
    losses, rewards = kto_loss(policy, ref, desirable, torch.tensor(1.0), beta=0.1)
    torch.testing.assert_close(losses, torch.tensor([0.45016600268752205] * 2, dtype=torch.float64))
    torch.testing.assert_close(rewards, torch.tensor([0.3, -0.1], dtype=torch.float64))
    losses.sum().backward()
    # dL/dr = -beta s(1-s) for desirable, +beta s(1-s) for undesirable, s = sigma(0.2)
    g = 0.1 * 0.549834 * 0.450166
    torch.testing.assert_close(policy.grad, torch.tensor([-g, g], dtype=torch.float64), atol=1e-7, rtol=0)

    # weights lambda_D = 2, lambda_U = 0.5 : 2 - 2 * 0.549834 = 0.900332 ; 0.5 - 0.5 * 0.549834 = 0.225083
    losses, _ = kto_loss(policy.detach(), ref, desirable, 1.0, beta=0.1,
                         desirable_weight=2.0, undesirable_weight=0.5)
    torch.testing.assert_close(losses, torch.tensor([0.9003320053750441, 0.22508300134376102], dtype=torch.float64))


def test_kto_reference_point_is_detached_and_clamped():
    policy_kl = torch.tensor([-1.0, -2.0], requires_grad=True)
    ref_kl = torch.tensor([-1.5, -1.0])
    # diffs (0.5, -1.0) -> mean -0.25 -> clamp 0
    z0 = kto_kl_reference_point(policy_kl, ref_kl)
    assert z0.item() == 0.0 and z0.dim() == 0 and not z0.requires_grad
    assert kto_kl_reference_point(policy_kl, ref_kl, clamp=False).item() == pytest.approx(-0.25)
    # diffs (0.5, 1.5) -> 1.0
    assert kto_kl_reference_point(torch.tensor([0.0, 0.5]), torch.tensor([-0.5, -1.0])).item() == pytest.approx(1.0)
    # z0 passed as a tensor with grad must not receive gradient through kto_loss
    z = torch.tensor(0.5, requires_grad=True)
    losses, _ = kto_loss(torch.tensor([1.0], requires_grad=True), torch.tensor([0.0]),
                         torch.tensor([True]), z, beta=0.1)
    losses.sum().backward()
    assert z.grad is None


# ---- soft labels (RLAIF's judge_prob; issue 23, item 5) -------------------------------------------------

def test_soft_labels_are_label_smoothed_dpo_per_pair_hand_values():
    from rlhf_cli.algos.preference import soft_label_losses

    pc, pr = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.5])
    rc, rr = torch.tensor([-1.5, -2.0]), torch.tensor([-2.5, -2.0])
    prob = torch.tensor([0.8, 0.6])
    losses, cr, rr_ = soft_label_losses(dpo_loss, prob, pc, pr, rc, rr, beta=0.5)
    # h = (pc - rc) - (pr - rr) = (0.5 + 0.5, 0 - 0.5) = (1, -0.5); L = -p ls(beta h) - (1 - p) ls(-beta h)
    h = torch.tensor([1.0, -0.5])
    ls = torch.nn.functional.logsigmoid
    torch.testing.assert_close(losses, -prob * ls(0.5 * h) - (1 - prob) * ls(-0.5 * h))
    for i, p in enumerate(prob.tolist()):  # = cDPO with eps = 1 - p (0.2, 0.4), pair by pair
        one = slice(i, i + 1)
        cdpo, _, _ = dpo_loss(pc[one], pr[one], rc[one], rr[one], beta=0.5, label_smoothing=1 - p)
        torch.testing.assert_close(losses[one], cdpo)
    torch.testing.assert_close(cr, 0.5 * (pc - rc))
    hard, _, _ = soft_label_losses(dpo_loss, torch.ones(2), pc, pr, rc, rr, beta=0.5)
    torch.testing.assert_close(hard, dpo_loss(pc, pr, rc, rr, beta=0.5)[0])


def test_a_coin_flip_label_gives_zero_gradient_where_policy_equals_reference():
    """p = 0.5 asks for h = 0: at the start of DPO (policy = reference) its gradient is exactly 0, where the
    hard label's is beta * (sigma(0) - 1) = -beta / 2 per log-ratio."""
    from rlhf_cli.algos.preference import soft_label_losses

    ref_c, ref_r = torch.tensor([-4.0, -7.0]), torch.tensor([-5.0, -6.5])
    for prob, expected in ((torch.full((2,), 0.5), 0.0), (torch.ones(2), -0.05)):
        pc, pr = ref_c.clone().requires_grad_(True), ref_r.clone().requires_grad_(True)
        losses, _, _ = soft_label_losses(dpo_loss, prob, pc, pr, ref_c, ref_r, beta=0.1)
        losses.sum().backward()
        torch.testing.assert_close(pc.grad, torch.full((2,), expected))
        torch.testing.assert_close(pr.grad, torch.full((2,), -expected))
    # IPO under soft labels: the target gap is (2p - 1) / (2 tau): 0 at p = 0.5
    pc = ref_c.clone().requires_grad_(True)
    losses, _, _ = soft_label_losses(ipo_loss, torch.full((2,), 0.5), pc, ref_r, ref_c, ref_r, beta=0.1, tau=0.1)
    losses.sum().backward()
    torch.testing.assert_close(pc.grad, torch.zeros(2))
