import pytest
import torch

from rlhf_cli.algos.sft import sft_loss


def test_sft_loss_local_and_global_normalizer():
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # -(-1 - 2 - 4) / 3 = 7/3
    loss, n = sft_loss(logps, mask)
    assert loss.item() == pytest.approx(7.0 / 3.0)
    assert n.item() == 3
    loss.backward()
    torch.testing.assert_close(logps.grad, -mask.float() / 3.0)

    # global token count 14 (e.g. over 2 ranks) -> 7/14 = 0.5
    loss2, n2 = sft_loss(logps.detach(), mask.bool(), normalizer=14)
    assert loss2.item() == pytest.approx(0.5)
    assert n2.item() == 3
    loss3, _ = sft_loss(logps.detach(), mask, normalizer=torch.tensor(14.0))
    assert loss3.item() == pytest.approx(0.5)


def test_sft_empty_mask_is_zero_not_nan():
    loss, n = sft_loss(torch.randn(2, 3), torch.zeros(2, 3))
    assert loss.item() == 0.0 and n.item() == 0
