import math

import pytest
import torch

from rlhf_cli.algos.reward_model import (
    RANKING_LOSSES,
    RM_LOSSES,
    aggregate_step_scores,
    bradley_terry,
    pairwise_from_ranking,
    plackett_luce,
    process_bce,
)

E = math.e
LSE_210 = math.log(E**2 + E + 1)  # log(7.389056 + 2.718282 + 1) = log(11.107338) = 2.407606
LSE_10 = math.log(E + 1)  # log(3.718282) = 1.313262


def nls(x):  # -log sigma(x)
    return math.log1p(math.exp(-x))


def test_registry():
    assert set(RM_LOSSES.names()) == {"bradley_terry", "plackett_luce", "pairwise_from_ranking"}
    assert RANKING_LOSSES <= set(RM_LOSSES.names())


def test_bradley_terry_hand_values():
    rc = torch.tensor([2.0, 0.0])
    rr = torch.tensor([1.0, 1.0])
    # diffs (1, -1): -log sigma(1) = 0.313262, -log sigma(-1) = 1.313262
    torch.testing.assert_close(bradley_terry(rc, rr), torch.tensor([0.313262, 1.313262]), atol=1e-6, rtol=0)
    # margin (0.5, 0): diffs (0.5, -1): 0.474077, 1.313262
    torch.testing.assert_close(bradley_terry(rc, rr, margin=torch.tensor([0.5, 0.0])),
                               torch.tensor([0.474077, 1.313262]), atol=1e-6, rtol=0)
    # centering 0.01: + 0.01 * (2 + 1)^2 = 0.09, + 0.01 * (0 + 1)^2 = 0.01
    torch.testing.assert_close(bradley_terry(rc, rr, centering_coef=0.01),
                               torch.tensor([0.403262, 1.323262]), atol=1e-6, rtol=0)


def test_bradley_terry_grad():
    rc = torch.tensor([2.0], requires_grad=True)
    rr = torch.tensor([1.0], requires_grad=True)
    bradley_terry(rc, rr).sum().backward()
    # dL/drc = -(1 - sigma(1)) = -0.268941
    assert rc.grad.item() == pytest.approx(-0.2689414213699951, abs=1e-6)
    assert rr.grad.item() == pytest.approx(0.2689414213699951, abs=1e-6)


def test_plackett_luce_strict_ranking():
    # scores (2, 1, 0), ranks (0, 1, 2):
    # terms: 2 - log(e^2 + e + 1) = -0.407606 ; 1 - log(e + 1) = -0.313262 ; last item: nothing
    # loss = 0.407606 + 0.313262 = 0.720868
    scores = torch.tensor([[2.0, 1.0, 0.0]])
    ranks = torch.tensor([[0, 1, 2]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    expected = (LSE_210 - 2) + (LSE_10 - 1)
    assert expected == pytest.approx(0.720868, abs=1e-6)
    assert plackett_luce(scores, ranks, valid).item() == pytest.approx(expected, abs=1e-6)
    # permuting the candidates (columns) changes nothing
    perm = torch.tensor([2, 0, 1])
    assert plackett_luce(scores[:, perm], ranks[:, perm], valid).item() == pytest.approx(expected, abs=1e-6)


def test_plackett_luce_ties_breslow():
    scores = torch.tensor([[2.0, 1.0, 0.0]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    # top tie, ranks (0, 0, 1): both tied items use denominator over all three (Breslow):
    # (LSE_210 - 2) + (LSE_210 - 1) = 2 * 2.407606 - 3 = 1.815212 ; worst item contributes nothing
    out = plackett_luce(scores, torch.tensor([[0, 0, 1]]), valid)
    assert out.item() == pytest.approx(2 * LSE_210 - 3, abs=1e-6)
    # bottom tie, ranks (0, 1, 1): only the first item: LSE_210 - 2 = 0.407606
    out = plackett_luce(scores, torch.tensor([[0, 1, 1]]), valid)
    assert out.item() == pytest.approx(LSE_210 - 2, abs=1e-6)
    # everything tied -> no information -> 0
    assert plackett_luce(scores, torch.tensor([[3, 3, 3]]), valid).item() == 0.0


def test_plackett_luce_padding_and_k2_equals_bt():
    # 2 valid candidates out of 4 (padding scores are NaN / huge; padding ranks arbitrary)
    # K=2 PL = -(2 - log(e^2 + 1)) = -log sigma(2) = 0.126928 = Bradley-Terry(2, 0)
    scores = torch.tensor([[2.0, float("nan"), 0.0, 1e30]], requires_grad=True)
    ranks = torch.tensor([[0, 5, 1, 0]])
    valid = torch.tensor([[True, False, True, False]])
    out = plackett_luce(scores, ranks, valid)
    assert out.item() == pytest.approx(nls(2.0), abs=1e-6)
    assert out.item() == pytest.approx(bradley_terry(torch.tensor([2.0]), torch.tensor([0.0])).item(), abs=1e-6)
    out.sum().backward()
    assert torch.isfinite(scores.grad).all()
    # d/ds0 = -(1 - sigma(2)) = -0.119203 ; padding gets 0
    torch.testing.assert_close(scores.grad, torch.tensor([[-0.119203, 0.0, 0.119203, 0.0]]), atol=1e-6, rtol=0)


def test_plackett_luce_batch_rows_independent():
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 5.0, 0.0]])
    ranks = torch.tensor([[0, 1, 2], [1, 0, 0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    # row 1: valid items (0.0 rank 1, 5.0 rank 0): -(5 - log(e^5 + 1)) = -log sigma(5) = 0.006715
    out = plackett_luce(scores, ranks, valid)
    torch.testing.assert_close(out, torch.tensor([LSE_210 - 2 + LSE_10 - 1, nls(5.0)]), atol=1e-6, rtol=0)


def test_pairwise_from_ranking():
    scores = torch.tensor([[2.0, 1.0, 0.0]], requires_grad=True)
    valid = torch.ones(1, 3, dtype=torch.bool)
    # strict: pairs (0,1) d=1, (0,2) d=2, (1,2) d=1 -> (0.313262 + 0.126928 + 0.313262) / 3 = 0.251151
    out = pairwise_from_ranking(scores, torch.tensor([[0, 1, 2]]), valid)
    assert out.item() == pytest.approx((2 * nls(1.0) + nls(2.0)) / 3, abs=1e-6)
    assert out.item() == pytest.approx(0.251151, abs=1e-6)
    out.sum().backward()
    assert torch.isfinite(scores.grad).all()
    # ties (0, 0, 1): tied pair skipped; (0,2) d=2, (1,2) d=1 -> (0.126928 + 0.313262) / 2 = 0.220095
    out = pairwise_from_ranking(scores, torch.tensor([[0, 0, 1]]), valid)
    assert out.item() == pytest.approx((nls(2.0) + nls(1.0)) / 2, abs=1e-6)
    # all tied -> no pairs -> 0
    assert pairwise_from_ranking(scores, torch.tensor([[1, 1, 1]]), valid).item() == 0.0
    # wrong order (worst item ranked best) gives a larger loss
    worse = pairwise_from_ranking(scores, torch.tensor([[2, 1, 0]]), valid)
    assert worse.item() == pytest.approx((2 * nls(-1.0) + nls(-2.0)) / 3, abs=1e-6)


def test_pairwise_from_ranking_padding():
    scores = torch.tensor([[2.0, float("nan"), 0.0]])
    out = pairwise_from_ranking(scores, torch.tensor([[0, 0, 1]]), torch.tensor([[True, False, True]]))
    assert out.item() == pytest.approx(nls(2.0), abs=1e-6)


def test_process_bce():
    # logits (0, 2), labels (1, 0): -log sigma(0) = 0.693147 ; -log(1 - sigma(2)) = 2.126928 ; mean 1.410038
    loss = process_bce(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx((math.log(2) + nls(-2.0)) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(1.410038, abs=1e-6)


def test_aggregate_step_scores():
    probs = torch.tensor([[0.9, 0.5, 0.8], [0.7, 0.1, 0.2], [0.3, 0.3, 0.3]])
    valid = torch.tensor([[True, True, True], [True, False, False], [False, False, False]])
    # min: (0.5, 0.7, empty -> 1) ; prod: (0.9*0.5*0.8 = 0.36, 0.7, 1)
    torch.testing.assert_close(aggregate_step_scores(probs, valid, "min"), torch.tensor([0.5, 0.7, 1.0]))
    torch.testing.assert_close(aggregate_step_scores(probs, valid, "prod"), torch.tensor([0.36, 0.7, 1.0]))
    with pytest.raises(ValueError):
        aggregate_step_scores(probs, valid, "max")


def test_soft_bradley_terry_hand_values_and_optimum():
    """Lee et al. 2023: cross-entropy on the judge's soft label; p = 1 is the hard loss, and the gradient
    w.r.t. the score gap d is sigma(d) - p, zero where sigma(d) = p (p = 0.5: equal scores)."""
    rc = torch.tensor([1.0, 0.0, 2.0], requires_grad=True)
    rr = torch.tensor([0.0, 0.0, -1.0])
    prob = torch.tensor([0.75, 0.5, 1.0])
    losses = bradley_terry(rc, rr, prob=prob)
    ls = torch.nn.functional.logsigmoid
    d = torch.tensor([1.0, 0.0, 3.0])
    torch.testing.assert_close(losses.detach(), -prob * ls(d) - (1 - prob) * ls(-d))
    torch.testing.assert_close(losses[2:].detach(), bradley_terry(rc[2:].detach(), rr[2:]))
    losses.sum().backward()
    torch.testing.assert_close(rc.grad, torch.sigmoid(d) - prob)
    assert rc.grad[1].item() == 0.0  # p = 0.5 at equal scores
    # the grid entry the rm stage calls passes it through
    grid = torch.stack([rc.detach(), rr], 1)
    ranks, valid = torch.tensor([[0, 1]] * 3), torch.ones(3, 2, dtype=torch.bool)
    torch.testing.assert_close(RM_LOSSES.get("bradley_terry")(grid, ranks, valid, prob=prob), losses.detach())
