"""Judge label maths against hand-made logits (numbers derived by hand in the comments)."""
import math

import pytest
import torch

from rlhf_cli.algos.ai_feedback import (
    choice_ids_tensor,
    choice_logprobs,
    clamp_band,
    confident,
    expected_score,
    label_probs,
    order_averaged,
    order_flips,
    position_bias_rate,
)

L = math.log


def test_label_probs_renormalise_over_choices_and_sum_token_variants():
    # vocab of 6; choice A = token 1, choice B = tokens 2 and 3 ("B" and " B")
    ids = choice_ids_tensor([[1], [2, 3]])
    assert ids.tolist() == [[1, -1], [2, 3]]
    logits = torch.tensor([[0.0, L(2), 0.0, 0.0, 0.0, 0.0],    # exp: 1 2 1 1 1 1, sum 7: A 2/7, B 2/7
                           [0.0, L(6), 0.0, 0.0, 0.0, 0.0]])   # exp: 1 6 1 1 1 1, sum 11: A 6/11, B 2/11
    probs, mass = label_probs(logits, ids)
    assert torch.allclose(probs, torch.tensor([[0.5, 0.5], [0.75, 0.25]]), atol=1e-6)
    assert torch.allclose(mass, torch.tensor([4 / 7, 8 / 11]), atol=1e-6)
    assert torch.allclose(choice_logprobs(logits, ids)[1], torch.tensor([L(6 / 11), L(2 / 11)]), atol=1e-6)


def test_label_probs_are_shift_invariant_and_fp32_for_bf16_logits():
    ids = choice_ids_tensor([[0], [1]])
    z = torch.tensor([[2.0, 0.0, 5.0]])
    p1, _ = label_probs(z, ids)
    p2, _ = label_probs((z + 100).to(torch.bfloat16), ids)
    assert p2.dtype == torch.float32
    assert torch.allclose(p1, torch.tensor([[1 / (1 + math.exp(-2)), 1 - 1 / (1 + math.exp(-2))]]), atol=1e-6)
    assert torch.allclose(p1, p2, atol=1e-2)


def test_order_swap_average_and_flips():
    # pair 0: order 1 says response 1 (A) 0.8; order 2 (response 1 shown as B) says B 0.7 -> (0.8+0.7)/2 = 0.75
    # pair 1: order 1 says response 1 0.8; order 2 says slot A (= response 2) 0.9 -> response 1 0.1 -> 0.45, flip
    p_first = torch.tensor([[0.8, 0.2], [0.8, 0.2]])
    p_second = torch.tensor([[0.3, 0.7], [0.9, 0.1]])
    assert torch.allclose(order_averaged(p_first, p_second), torch.tensor([0.75, 0.45]))
    assert order_flips(p_first, p_second).tolist() == [False, True]
    assert position_bias_rate(p_first, p_second) == pytest.approx(0.5)
    assert position_bias_rate(torch.zeros(0, 2), torch.zeros(0, 2)) == 0.0


def test_cot_clamp_band_and_bad_band():
    p = torch.tensor([0.1, 0.45, 0.9, 0.6])
    assert torch.allclose(clamp_band(p, 0.4, 0.6), torch.tensor([0.4, 0.45, 0.6, 0.6]))
    with pytest.raises(ValueError):
        clamp_band(p, 0.6, 0.7)


def test_confidence_filter():
    p = torch.tensor([0.5, 0.55, 0.35, 0.7, 0.4])
    assert confident(p, 0.6).tolist() == [False, False, True, True, True]
    assert confident(p, 0.5).all()


def test_expected_score_is_the_mean_rating_under_the_renormalised_labels():
    ids = choice_ids_tensor([[0], [1], [2]])
    z = torch.tensor([[0.0, 0.0, L(2), 5.0]])  # label exp 1 1 2 -> probs .25 .25 .5 (token 3 is ignored)
    assert expected_score(z, ids, torch.tensor([0.0, 1.0, 2.0])).item() == pytest.approx(1.25)
