"""`PixelMLP`: per pixel, exposure invariant, runs through the feed-forward pipeline and `HSRPipeline`."""

import numpy as np
import torch

from hsr_diffusers import HSRFeedForwardPipeline, HSRPipeline, PixelMLP
from tests.testing_utils import floats_tensor


def tiny_mlp(**config) -> PixelMLP:
    torch.manual_seed(0)
    return PixelMLP(hidden_channels=(16, 16), **config).eval()


def test_each_pixel_depends_on_its_own_rgb_only():
    model = tiny_mlp()
    rgb = floats_tensor((1, 3, 6, 5)) * 2 - 1
    changed = rgb.clone()
    changed[:, :, 2, 3] = 0.5
    before, after = model(rgb).sample, model(changed).sample
    differs = (before - after).abs().amax(dim=1)[0] > 0
    assert differs[2, 3] and differs.sum() == 1


def test_exposure_invariance_doubling_rgb_doubles_the_spectrum():
    model = tiny_mlp()
    rgb = floats_tensor((2, 3, 4, 4)) * 0.4 + 0.05  # linear RGB, kept away from black (eps)
    single = (model(rgb * 2 - 1).sample + 1) / 2
    double = (model(rgb * 4 - 1).sample + 1) / 2
    assert torch.allclose(double, 2 * single, rtol=1e-3, atol=1e-5)
    with_brightness = tiny_mlp(use_log_brightness=True)
    single = (with_brightness(rgb * 2 - 1).sample + 1) / 2
    assert not torch.allclose((with_brightness(rgb * 4 - 1).sample + 1) / 2, 2 * single, rtol=1e-3)


def test_saved_pipeline_loads_with_hsr_pipeline(tmp_path):
    model = tiny_mlp()
    with torch.no_grad():
        model.net[-1].bias.fill_(0.3)  # a non-zero spectrum per unit brightness
    pipe = HSRFeedForwardPipeline(unet=model)
    pipe.set_progress_bar_config(disable=True)
    rgb = np.random.default_rng(0).uniform(0.1, 0.8, size=(6, 7, 3)).astype(np.float32)
    expected = pipe(rgb).cubes
    pipe.save_pretrained(tmp_path)
    loaded = HSRPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.unet, PixelMLP) and not loaded.unet.training
    cubes = loaded(rgb).cubes
    assert cubes.shape == (1, 6, 7, 31) and np.allclose(cubes, expected, atol=1e-6)
