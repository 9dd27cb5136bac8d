import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from hsr_diffusers import metrics
from hsr_diffusers.spectral import render_rgb


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    target = rng.uniform(0.1, 1.0, size=(2, 12, 14, 5))
    pred = target + rng.normal(scale=0.05, size=target.shape)
    return pred, target


def test_rmse_known_value():
    target = np.zeros((4, 4, 2))
    pred = np.full((4, 4, 2), 0.5)
    assert metrics.rmse(pred, target) == pytest.approx(0.5)


def test_rmse_is_mean_of_per_image_values(pair):
    pred, target = pair
    expected = np.mean([math.sqrt(((p - t) ** 2).mean()) for p, t in zip(pred, target)])
    assert metrics.rmse(pred, target) == pytest.approx(expected, rel=1e-12)


def test_mrae_matches_direct_loop(pair):
    pred, target = pair
    total = 0.0
    for p, t in zip(pred, target):
        total += sum(abs(a - b) / b for a, b in zip(p.ravel(), t.ravel())) / p.size
    assert metrics.mrae(pred, target) == pytest.approx(total / 2, rel=1e-10)


def test_mrae_zero_target_raises_and_eps_option():
    target = np.array([[[0.0, 0.5]]])
    pred = np.array([[[0.1, 0.5]]])
    with pytest.raises(ValueError, match="1 zero values"):
        metrics.mrae(pred, target)
    assert metrics.mrae(pred, target, eps=0.1) == pytest.approx((0.1 / 0.1 + 0.0) / 2)


def test_psnr_known_value():
    target = np.zeros((8, 8, 3))
    pred = np.full((8, 8, 3), 0.1)  # mse 0.01 -> 20 dB
    assert metrics.psnr(pred, target) == pytest.approx(20.0)
    assert metrics.psnr(target, target) == math.inf


def test_sam_known_angles():
    target = np.array([[[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    pred = np.array([[[0.0, 2.0], [3.0, 3.0], [0.0, 0.0], [1.0, 0.0]]])
    # 90 degrees, 0 degrees (scale invariant), both zero -> 0, one zero -> 90 degrees.
    expected = (math.pi / 2 + 0 + 0 + math.pi / 2) / 4
    assert metrics.sam(pred, target) == pytest.approx(expected)
    assert metrics.sam_degrees(pred, target) == pytest.approx(math.degrees(expected))


def test_ssim_matches_scikit_image(pair):
    pred, target = pair
    expected = np.mean(
        [
            structural_similarity(p[..., b], t[..., b], data_range=1.0, gaussian_weights=True, sigma=1.5)
            for p, t in zip(pred, target)
            for b in range(p.shape[-1])
        ]
    )
    assert metrics.ssim(pred, target) == pytest.approx(expected, abs=1e-9)


def test_torch_channel_first_equals_numpy_channel_last(pair):
    pred, target = pair
    pred_t = torch.from_numpy(pred).permute(0, 3, 1, 2)
    target_t = torch.from_numpy(target).permute(0, 3, 1, 2)
    for name, fn in metrics.METRICS.items():
        assert fn(pred_t, target_t) == pytest.approx(fn(pred, target), rel=1e-9), name


def test_crop_removes_border():
    target = np.ones((1, 10, 10, 2))
    pred = target.copy()
    pred[:, 0] = 0.0  # error only in the first row
    assert metrics.rmse(pred, target, crop=1) == 0.0
    assert metrics.rmse(pred, target) > 0.0
    with pytest.raises(ValueError, match="crop"):
        metrics.rmse(pred, target, crop=5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_raise(bad):
    target = np.ones((4, 4, 3))
    pred = target.copy()
    pred[1, 1, 1] = bad
    for fn in metrics.METRICS.values():
        with pytest.raises(ValueError, match="NaN or Inf"):
            fn(pred, target)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        metrics.rmse(np.ones((4, 4, 3)), np.ones((4, 5, 3)))


def test_backprojection_mrae_zero_for_consistent_cube():
    rng = np.random.default_rng(1)
    cube = rng.uniform(0.1, 0.9, size=(6, 6, 31))
    rgb = render_rgb(cube, mode="linear")
    assert metrics.backprojection_mrae(cube, rgb) == pytest.approx(0.0, abs=1e-6)
    assert metrics.backprojection_mrae(cube * 1.1, rgb) == pytest.approx(0.1, rel=1e-5)
