import pytest
import torch
import torch.nn.functional as F

from hsr_diffusers.models import AWAN
from hsr_diffusers.models.awan import PSNL


def _count(model):
    return sum(p.numel() for p in model.parameters())


def _expected_parameter_count(in_channels, out_channels, channels, num_blocks):
    # Independent count from the paper's layout: bias-free convolutions, one scalar per PReLU.
    head = 9 * in_channels * channels + 1 + 9 * channels**2
    awca = channels + 2 * channels * (channels // 16) + 1  # spatial-weight conv, bottleneck MLP, its PReLU
    drab = (9 + 9 + 25 + 9) * channels**2 + 4 + awca  # 3x3, 3x3, 5x5, 3x3 convolutions and 4 PReLUs
    tail = 9 * channels**2 + 1 + 9 * channels * out_channels
    non_local = 3 * out_channels * (out_channels // 8)  # g, theta and W 1x1 convolutions
    return head + num_blocks * drab + tail + non_local


def test_full_size_parameter_counts():
    # Paper defaults (200 channels, 8 DRABs): 17,461,521. The "4.04 M" AWAN of the MST++ comparison uses 96 channels.
    paper = AWAN()
    assert _count(paper) == _expected_parameter_count(3, 31, 200, 8) == 17_461_521
    mst_benchmark = AWAN(num_channels=96)
    assert _count(mst_benchmark) == _expected_parameter_count(3, 31, 96, 8) == 4_039_425
    assert round(_count(mst_benchmark) / 1e6, 2) == 4.04


def test_non_local_starts_as_identity():
    torch.manual_seed(0)
    model = AWAN(num_channels=8, num_blocks=1)
    x = torch.randn(2, 31, 6, 7)
    assert torch.equal(model.tail_nonlocal(x), x)


def _reference_non_local(block, x):
    # Straight from the paper: pixel affinities are the covariance of the theta embedding (centred over channels).
    b, c, h, w = x.shape
    theta = block.theta(x).flatten(2)  # [B, C', HW]
    g = block.g(x).flatten(2)
    centred = theta - theta.mean(dim=1, keepdim=True)
    affinity = torch.einsum("bcn,bcm->bnm", centred, theta) / theta.shape[1]
    y = torch.einsum("bnm,bcm->bcn", F.softmax(affinity, dim=-1), g).reshape(b, -1, h, w)
    return x + block.W(y)


@pytest.mark.parametrize("height, width", [(6, 8), (7, 5), (1, 6), (5, 1)])
def test_psnl_is_non_local_per_quadrant(height, width):
    torch.manual_seed(0)
    psnl = PSNL(16)
    torch.nn.init.normal_(psnl.non_local.W.weight)  # away from the identity start
    x = torch.randn(2, 16, height, width)
    out = psnl(x)
    h1, w1 = height // 2, width // 2
    expected = torch.empty_like(x)
    for rows in (slice(0, h1), slice(h1, height)):
        for cols in (slice(0, w1), slice(w1, width)):
            if x[:, :, rows, cols].numel():
                expected[:, :, rows, cols] = _reference_non_local(psnl.non_local, x[:, :, rows, cols])
    torch.testing.assert_close(out, expected)
    # Quadrants are independent: changing the top-left quadrant leaves the bottom-right one unchanged.
    if h1 and w1:
        x2 = x.clone()
        x2[:, :, :h1, :w1] += 1
        torch.testing.assert_close(psnl(x2)[:, :, h1:, w1:], out[:, :, h1:, w1:])


def test_too_small_input_raises():
    model = AWAN(num_channels=4, num_blocks=1)
    model(torch.zeros(1, 3, 3, 3))
    with pytest.raises(ValueError, match="3x3"):
        model(torch.zeros(1, 3, 2, 8))
