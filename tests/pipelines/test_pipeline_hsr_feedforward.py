import importlib
import inspect
import json

import numpy as np
import pytest
import torch

from hsr_diffusers import (
    AWAN,
    HSRDiffusionPipeline,
    HSRFeedForwardPipeline,
    HSRPipeline,
    HSRPixelGANGenerator,
    MSTPlusPlus,
    RootPolynomialRegression,
)
from hsr_diffusers.spectral import render_rgb

from ..testing_utils import smooth_cube
from .pipeline_tester_mixin import HSRPipelineTesterMixin


def tiny_generator(in_channels: int = 3) -> HSRPixelGANGenerator:
    torch.manual_seed(0)
    return HSRPixelGANGenerator(in_channels=in_channels, out_channels=31, num_downs=3, ngf=4)


class TestHSRFeedForwardPipeline(HSRPipelineTesterMixin):
    pipeline_class = HSRFeedForwardPipeline

    def get_dummy_components(self):
        return {"unet": tiny_generator()}

    def get_dummy_inputs(self, seed=0):
        return {"image": self.rgb8()}

    def test_expected_slice(self):
        cubes = self.get_pipeline()(**self.get_dummy_inputs(), rgb_consistency=False).cubes
        expected = np.array([0.51874, 0.50286, 0.50752, 0.48721, 0.52987, 0.46853, 0.49866, 0.54672, 0.53381])
        np.testing.assert_allclose(cubes[0, :3, :3, 10].ravel(), expected, atol=1e-3)

    def test_default_tiling_from_config_is_used(self, tmp_path):
        pipe = self.pipeline_class(unet=tiny_generator(), default_tile_size=16, default_tile_overlap=4)
        pipe.set_progress_bar_config(disable=True)
        rgb8 = self.rgb8(40, 40, seed=3)
        np.testing.assert_array_equal(pipe(rgb8).cubes, pipe(rgb8, tile_size=16, tile_overlap=4).cubes)
        assert np.abs(pipe(rgb8).cubes - pipe(rgb8, tile_size=40).cubes).max() > 0
        pipe.save_pretrained(tmp_path)
        config = self.pipeline_class.from_pretrained(tmp_path).config
        assert (config.default_tile_size, config.default_tile_overlap) == (16, 4)

    def test_diffusion_call_runs_unchanged_with_a_warning_once(self, caplog):
        # One `HSRPipeline.from_pretrained(...)(rgb, ...)` call for both kinds: the sampling arguments of the diffusion
        # pipeline are accepted and ignored, with one warning per argument.
        from diffusers.utils import logging

        pipe = self.get_pipeline()
        rgb8 = self.rgb8()
        plain = pipe(rgb8).cubes
        logging.enable_propagation()
        try:
            with caplog.at_level("WARNING"):
                kwargs = {"num_inference_steps": 5, "num_samples": 3, "generator": torch.Generator().manual_seed(0)}
                output = pipe(rgb8, **kwargs)
                first = caplog.text
                pipe(rgb8, **kwargs)
        finally:
            logging.disable_propagation()
        np.testing.assert_array_equal(output.cubes, plain)
        assert output.uncertainty is None
        assert all(name in first for name in kwargs) and caplog.text.count("ignored") == 1
        with pytest.raises(ValueError, match="num_samples"):
            pipe(rgb8, num_samples=0)

    @pytest.mark.parametrize(
        "make_model",
        [
            lambda: MSTPlusPlus(in_channels=3, out_channels=31, num_stages=1),
            lambda: AWAN(in_channels=3, out_channels=31, num_channels=8, num_blocks=1),
            lambda: RootPolynomialRegression(degree=2),
        ],
        ids=["mst_plus_plus", "awan", "root_polynomial"],
    )
    def test_other_feed_forward_models(self, make_model, tmp_path):
        torch.manual_seed(0)
        pipe = self.pipeline_class(unet=make_model())
        pipe.set_progress_bar_config(disable=True)
        rgb8 = self.rgb8(12, 12)
        cubes = pipe(rgb8, tile_size=16, tile_overlap=4).cubes
        assert cubes.shape == (1, 12, 12, 31)
        assert np.abs(render_rgb(cubes[0], mode="linear") - rgb8 / 255).max() <= 1 / 255
        pipe.save_pretrained(tmp_path)
        loaded = HSRPipeline.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        np.testing.assert_allclose(loaded(rgb8, tile_size=16, tile_overlap=4).cubes, cubes, atol=1e-5)

    def test_residual_over_estimator(self):
        cube = smooth_cube(16, 16, seed=7)
        estimator = RootPolynomialRegression(degree=2).fit(render_rgb(cube, mode="linear"), cube)
        pipe = self.pipeline_class(unet=tiny_generator(in_channels=34), estimator=estimator)
        pipe.set_progress_bar_config(disable=True)
        for module in pipe.unet.modules():
            if isinstance(module, torch.nn.ConvTranspose2d) and module.out_channels == 31:
                torch.nn.init.zeros_(module.weight)
                torch.nn.init.zeros_(module.bias)
        rgb8 = self.rgb8(8, 8)
        cubes = pipe(rgb8, rgb_consistency=False).cubes
        estimate = pipe.prepare_estimate(torch.from_numpy(rgb8 / 255.0).float().permute(2, 0, 1)[None])
        np.testing.assert_allclose(cubes[0], estimate[0].detach().permute(1, 2, 0).numpy(), atol=1e-5)


def test_copied_code_is_in_sync():
    for name in ("check_inputs", "prepare_estimate"):
        source = inspect.getsource(getattr(HSRDiffusionPipeline, name))
        copy = inspect.getsource(getattr(HSRFeedForwardPipeline, name))
        assert source == copy, f"{name} in HSRFeedForwardPipeline drifted from HSRDiffusionPipeline"


def test_unknown_pipeline_class_lists_known_ones(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(ValueError, match="HSRDiffusionPipeline, HSRFeedForwardPipeline"):
        HSRPipeline.from_pretrained(tmp_path)


def test_is_not_a_sampler():
    assert HSRFeedForwardPipeline(unet=tiny_generator()).is_sampler is False


@pytest.mark.parametrize(
    "module",
    ["hsr_diffusers", "hsr_diffusers.pipelines", "hsr_diffusers.pipelines.hsr_pixelgan.pipeline_hsr_pixelgan"],
)
def test_old_name_and_module_path_still_import_with_a_warning(module):
    with pytest.warns(FutureWarning, match="HSRFeedForwardPipeline"):
        old = getattr(importlib.import_module(module), "HSRPixelGANPipeline")
    assert old is HSRFeedForwardPipeline


def test_checkpoint_saved_under_the_old_name_loads(tmp_path):
    # Checkpoints written before the rename (the bundled pixelgan-cave among them) name the old class.
    pipe = HSRFeedForwardPipeline(unet=tiny_generator())
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "HSRFeedForwardPipeline"
    (tmp_path / "model_index.json").write_text(json.dumps({**index, "_class_name": "HSRPixelGANPipeline"}))
    rgb8 = HSRPipelineTesterMixin.rgb8()
    for loaded in (HSRPipeline.from_pretrained(tmp_path), HSRFeedForwardPipeline.from_pretrained(tmp_path)):
        assert type(loaded) is HSRFeedForwardPipeline
        loaded.set_progress_bar_config(disable=True)
        np.testing.assert_array_equal(loaded(rgb8).cubes, pipe(rgb8).cubes)
