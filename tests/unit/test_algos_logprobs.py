import math

import pytest
import torch

from rlhf_cli.algos.logprobs import masked_mean, masked_sum, token_entropy, token_logprobs


def naive_logprobs(logits, labels, ignore_index=-100):
    lp = torch.log_softmax(logits.float(), dim=-1)
    safe = labels.clamp(min=0)
    out = lp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return out.masked_fill(labels == ignore_index, 0.0)


def test_hand_values():
    # logits [0, ln 3] -> softmax (1/4, 3/4): log p(1) = ln .75 = -0.287682, log p(0) = ln .25 = -1.386294
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)], [5.0, 1.0]]])
    labels = torch.tensor([[1, 0, -100]])
    out = token_logprobs(logits, labels, chunk_size=2)
    assert out.dtype == torch.float32 and out.shape == (1, 3)
    torch.testing.assert_close(out, torch.tensor([[-0.287682, -1.386294, 0.0]]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4, 7, 1024])
def test_matches_naive_values_and_grads(chunk_size):
    torch.manual_seed(0)
    B, T, V = 2, 7, 11
    base = torch.randn(B, T, V, dtype=torch.float64)
    labels = torch.randint(0, V, (B, T))
    labels[0, 2] = -100
    labels[1, 6] = -100
    weights = torch.randn(B, T, dtype=torch.float64)

    a = base.clone().requires_grad_(True)
    out = token_logprobs(a, labels, chunk_size=chunk_size)
    (out.double() * weights).sum().backward()

    b = base.clone().requires_grad_(True)
    ref = naive_logprobs(b, labels)
    (ref.double() * weights).sum().backward()

    torch.testing.assert_close(out, ref.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)
    assert out[0, 2] == 0 and out[1, 6] == 0
    assert torch.all(a.grad[0, 2] == 0)  # ignored position gets no gradient


def test_bf16_input_fp32_output_and_grad():
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 9).to(torch.bfloat16).requires_grad_(True)
    labels = torch.randint(0, 9, (2, 5))
    out = token_logprobs(logits, labels, chunk_size=2)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()
    torch.testing.assert_close(out, naive_logprobs(logits.detach().float(), labels), atol=1e-5, rtol=1e-5)


def test_no_full_fp32_copy_saved_for_backward():
    # Record every tensor autograd saves outside the checkpointed chunks; the
    # naive implementation saves a full fp32 B*T*V log_softmax, ours must not.
    B, T, V, chunk = 2, 16, 64, 4
    logits = torch.randn(B, T, V).to(torch.bfloat16).requires_grad_(True)
    labels = torch.randint(0, V, (B, T))
    saved = []

    def pack(t):
        saved.append((t.dtype, t.numel()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        token_logprobs(logits, labels, chunk_size=chunk)
    fp32_saved = sum(n for dt, n in saved if dt == torch.float32)
    assert fp32_saved < B * chunk * V  # not even one fp32 chunk is kept (checkpointed)

    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        naive_logprobs(logits, labels)
    assert any(dt == torch.float32 and n >= B * T * V for dt, n in saved)  # sanity: the probe works


def test_no_grad_path():
    logits = torch.randn(1, 5, 4, requires_grad=True)
    labels = torch.randint(0, 4, (1, 5))
    with torch.no_grad():
        out = token_logprobs(logits, labels, chunk_size=2)
    assert not out.requires_grad
    torch.testing.assert_close(out, naive_logprobs(logits.detach(), labels))


def test_token_entropy():
    # uniform over 4 -> ln 4 = 1.386294
    # p = (1/4, 3/4) -> H = .25 ln 4 + .75 ln(4/3) = 0.346574 + 0.215762 = 0.562335
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -1e9, -1e9], [7.0, 7.0, 7.0, 7.0]]])
    h = token_entropy(logits, chunk_size=2)
    torch.testing.assert_close(h, torch.tensor([[1.386294, 0.562335, 1.386294]]), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6)
    p = torch.softmax(x, -1)
    torch.testing.assert_close(token_entropy(x, chunk_size=3), -(p * p.log()).sum(-1), atol=1e-5, rtol=1e-5)


def test_masked_reductions():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, float("nan"), 6.0]])
    m = torch.tensor([[True, True, False], [True, False, False]])
    # sum = 1 + 2 + 4 = 7 ; mean = 7/3 ; NaN at a masked position must not leak
    assert masked_sum(x, m).item() == pytest.approx(7.0)
    assert masked_mean(x, m).item() == pytest.approx(7.0 / 3.0)
    torch.testing.assert_close(masked_sum(x, m, dim=1), torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(masked_mean(x, m, dim=1), torch.tensor([1.5, 4.0]))
    # float weights
    w = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert masked_sum(x, w).item() == pytest.approx(0.5 + 1.0 + 6.0)
    # all-masked row -> 0, not NaN
    assert masked_mean(x, torch.zeros_like(m), dim=1).tolist() == [0.0, 0.0]


def test_masked_mean_grad_finite_with_nan_padding():
    x = torch.tensor([1.0, float("nan"), 3.0], requires_grad=True)
    m = torch.tensor([True, False, True])
    masked_mean(x, m).backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad, torch.tensor([0.5, 0.0, 0.5]))
