import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from hsr_diffusers import HSRDiffusionPipeline, RootPolynomialRegression
from hsr_diffusers.spectral import render_rgb

from ..testing_utils import smooth_cube, tiny_ddpm_unet
from .pipeline_tester_mixin import HSRPipelineTesterMixin


def tiny_unet(in_channels: int = 34) -> UNet2DModel:
    return tiny_ddpm_unet(in_channels)


def fitted_estimator() -> RootPolynomialRegression:
    cube = smooth_cube(16, 16, seed=7)
    return RootPolynomialRegression(degree=2).fit(render_rgb(cube, mode="linear"), cube)


class TestHSRDiffusionPipeline(HSRPipelineTesterMixin):
    pipeline_class = HSRDiffusionPipeline
    required_optional_params = HSRPipelineTesterMixin.required_optional_params | {
        "num_inference_steps",
        "num_samples",
        "generator",
        "latents",
    }

    def get_dummy_components(self):
        return {"unet": tiny_unet(), "scheduler": DDPMScheduler(num_train_timesteps=1000)}

    def get_dummy_inputs(self, seed=0):
        return {
            "image": self.rgb8(),
            "num_inference_steps": 2,
            "generator": torch.Generator("cpu").manual_seed(seed),
        }

    def test_expected_slice(self):
        # The untrained UNet pushes much of the cube to the clip bounds; this slice lies well inside (0, 1), so that
        # any change in noise, scheduler algebra or projection moves it.
        cubes = self.get_pipeline()(**self.get_dummy_inputs()).cubes
        expected = np.array([0.77734, 0.86671, 0.89353, 0.26077, 0.25606, 0.78951, 0.71711, 0.53528, 0.82267])
        np.testing.assert_allclose(cubes[0, 5:8, 4:7, 24].ravel(), expected, atol=1e-4)

    def test_is_a_sampler(self):
        assert self.get_pipeline().is_sampler is True

    def test_generator_makes_it_deterministic(self):
        pipe = self.get_pipeline()
        first = pipe(**self.get_dummy_inputs(seed=1)).cubes
        second = pipe(**self.get_dummy_inputs(seed=1)).cubes
        other = pipe(**self.get_dummy_inputs(seed=2)).cubes
        np.testing.assert_array_equal(first, second)
        assert np.abs(first - other).max() > 1e-3

    def test_list_of_generators_gives_each_image_its_own_step_noise(self):
        # DDPM adds fresh noise at every step: with a list of generators, each image's noise comes from its own seed,
        # so an image gives the same cube alone or in a batch, whatever the other images' seeds.
        pipe = self.get_pipeline()
        images = [self.rgb8(seed=1), self.rgb8(seed=2)]

        def run(image, *seeds):
            generators = [torch.Generator().manual_seed(seed) for seed in seeds]
            return pipe(image, num_inference_steps=2, generator=generators, rgb_consistency=False).cubes

        batch = run(images, 3, 4)
        np.testing.assert_allclose(batch[1], run([images[1]], 4)[0], atol=1e-5)
        np.testing.assert_allclose(batch[0], run([images[0]], 3)[0], atol=1e-5)
        same_image = run([images[0], images[0]], 3, 4)
        assert np.abs(same_image[0] - same_image[1]).max() > 1e-2

    def test_num_samples_gives_mean_and_uncertainty(self):
        pipe = self.get_pipeline()
        # DDIM with eta=0 has no per-step noise, so a batched run must equal separate runs from the same latents.
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        output = pipe(**self.get_dummy_inputs(), num_samples=3)
        assert output.cubes.shape == output.uncertainty.shape == (1, 8, 8, 31)
        assert np.all(output.uncertainty >= 0) and output.uncertainty.max() > 0
        assert pipe(**self.get_dummy_inputs()).uncertainty is None
        # The mean and spread are those of the individual samples, which are drawn independently.
        latents = torch.randn(3, 31, 8, 8, generator=torch.Generator().manual_seed(0))
        batched = pipe(**self.get_dummy_inputs(), num_samples=3, latents=latents, output_type="pt")
        singles = torch.cat(
            [pipe(**self.get_dummy_inputs(), latents=latents[i : i + 1], output_type="pt").cubes for i in range(3)]
        )
        torch.testing.assert_close(batched.cubes[0], singles.mean(0), atol=1e-5, rtol=0)
        torch.testing.assert_close(batched.uncertainty[0], singles.std(0), atol=1e-5, rtol=0)

    def test_uncertainty_scale_multiplies_the_spread_and_round_trips(self, tmp_path):
        components = {**self.get_dummy_components(), "scheduler": DDIMScheduler()}

        def inputs():
            return {**self.get_dummy_inputs(), "num_samples": 3}

        raw = self.pipeline_class(**components)
        raw.set_progress_bar_config(disable=True)
        assert raw.config.uncertainty_scale is None
        expected = raw(**inputs()).uncertainty
        scale = [0.5 + 0.1 * band for band in range(31)]
        pipe = self.pipeline_class(**components, uncertainty_scale=scale)
        pipe.set_progress_bar_config(disable=True)
        output = pipe(**inputs())
        np.testing.assert_allclose(output.uncertainty, expected * np.float32(scale), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(output.cubes, raw(**inputs()).cubes, rtol=1e-4, atol=1e-5)  # the mean is untouched
        # The calibration script sets the key on a built pipeline and saves it; from_pretrained restores it.
        raw.register_to_config(uncertainty_scale=scale)
        raw.save_pretrained(tmp_path)
        loaded = self.pipeline_class.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        assert loaded.config.uncertainty_scale == scale
        np.testing.assert_allclose(loaded(**inputs()).uncertainty, output.uncertainty, rtol=1e-4, atol=1e-5)

    def test_uncertainty_scale_needs_one_factor_per_band(self):
        with pytest.raises(ValueError, match="uncertainty_scale"):
            self.pipeline_class(**self.get_dummy_components(), uncertainty_scale=[1.0, 2.0])
        pipe = self.get_pipeline()
        pipe.register_to_config(uncertainty_scale=[1.0] * 30)
        with pytest.raises(ValueError, match="one factor per band"):
            pipe(**self.get_dummy_inputs(), num_samples=2)

    def test_residual_diffusion_with_estimator(self, tmp_path):
        estimator = fitted_estimator()
        pipe = self.pipeline_class(
            unet=tiny_unet(in_channels=3 + 31 + 31),
            scheduler=DDPMScheduler(num_train_timesteps=1000, prediction_type="sample", clip_sample=False),
            estimator=estimator,
            residual_scale=4.0,
        )
        pipe.set_progress_bar_config(disable=True)
        # With a zero network the residual is pure (scaled) noise, so the mean over many samples is the estimate.
        torch.nn.init.zeros_(pipe.unet.conv_out.weight)
        torch.nn.init.zeros_(pipe.unet.conv_out.bias)
        rgb8 = self.rgb8(8, 8, seed=5)
        output = pipe(rgb8, num_inference_steps=1, rgb_consistency=False, generator=torch.Generator().manual_seed(0))
        estimate = pipe.prepare_estimate(torch.from_numpy(rgb8 / 255.0).float().permute(2, 0, 1)[None])
        # A one-step "sample" prediction returns the clean residual (zero) directly.
        np.testing.assert_allclose(output.cubes[0], estimate[0].detach().permute(1, 2, 0).numpy(), atol=1e-5)
        pipe.save_pretrained(tmp_path)
        loaded = self.pipeline_class.from_pretrained(tmp_path)
        assert isinstance(loaded.estimator, RootPolynomialRegression) and loaded.config.residual_scale == 4.0

    def test_wrong_in_channels_rejected(self):
        with pytest.raises(ValueError, match="in_channels"):
            self.pipeline_class(
                unet=tiny_unet(in_channels=34), scheduler=DDPMScheduler(), estimator=fitted_estimator()
            )

    def test_stock_unet_loads_from_subfolder(self, tmp_path):
        pipe = self.get_pipeline()
        pipe.save_pretrained(tmp_path)
        unet = UNet2DModel.from_pretrained(tmp_path, subfolder="unet")
        for name, tensor in pipe.unet.state_dict().items():
            torch.testing.assert_close(unet.state_dict()[name], tensor)

    def test_tile_size_must_fit_network(self):
        pipe = self.get_pipeline()
        with pytest.raises(ValueError, match="tile_size"):
            pipe(**self.get_dummy_inputs(), tile_size=13)
        with pytest.raises(ValueError, match="output_type"):
            pipe(**self.get_dummy_inputs(), output_type="pil")
        with pytest.raises(ValueError, match="num_samples"):
            pipe(**self.get_dummy_inputs(), num_samples=0)


def test_default_tile_size_from_config_is_used(tmp_path):
    pipe = HSRDiffusionPipeline(unet=tiny_unet(), scheduler=DDIMScheduler(), default_tile_size=16)
    pipe.set_progress_bar_config(disable=True)
    rgb8 = HSRPipelineTesterMixin.rgb8(40, 40, seed=3)

    def run(**kwargs):
        generator = torch.Generator().manual_seed(0)
        return pipe(rgb8, num_inference_steps=2, generator=generator, tile_overlap=4, **kwargs).cubes

    np.testing.assert_array_equal(run(), run(tile_size=16))
    assert np.abs(run() - run(tile_size=40)).max() > 0  # a tile as large as the image: one piece
    pipe.save_pretrained(tmp_path)
    assert HSRDiffusionPipeline.from_pretrained(tmp_path).config.default_tile_size == 16


def test_default_steps_and_overlap_from_config_are_used(tmp_path):
    pipe = HSRDiffusionPipeline(
        unet=tiny_unet(), scheduler=DDIMScheduler(), default_num_inference_steps=3, default_tile_overlap=4
    )
    pipe.set_progress_bar_config(disable=True)
    rgb8 = HSRPipelineTesterMixin.rgb8(40, 40, seed=3)

    def run(**kwargs):
        return pipe(rgb8, generator=torch.Generator().manual_seed(0), tile_size=16, **kwargs).cubes

    default = run()
    assert len(pipe.scheduler.timesteps) == 3
    np.testing.assert_array_equal(default, run(num_inference_steps=3, tile_overlap=4))
    assert np.abs(default - run(num_inference_steps=2)).max() > 0
    assert np.abs(default - run(tile_overlap=2)).max() > 0
    pipe.save_pretrained(tmp_path)
    config = HSRDiffusionPipeline.from_pretrained(tmp_path).config
    assert (config.default_num_inference_steps, config.default_tile_overlap) == (3, 4)


@pytest.mark.parametrize("use_latents", [False, True])
def test_stacked_tiles_give_the_tile_by_tile_result(use_latents):
    pipe = HSRDiffusionPipeline(unet=tiny_unet(), scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    rgb8 = [HSRPipelineTesterMixin.rgb8(40, 36, seed=seed) for seed in (3, 4)]  # two images, 3x3 tiles each
    latents = torch.randn(4, 31, 40, 36, generator=torch.Generator().manual_seed(1)) if use_latents else None

    def run():
        generator = torch.Generator().manual_seed(0)
        kwargs = {"tile_size": 16, "tile_overlap": 4, "num_samples": 2, "num_inference_steps": 2}
        return pipe(rgb8, generator=generator, latents=latents, **kwargs)

    stacked = run()  # every tile of both images and both samples in one UNet call
    pipe.TILE_BATCH_PIXELS = 1  # one tile (of both images and samples) per call
    one_by_one = run()
    np.testing.assert_allclose(stacked.cubes, one_by_one.cubes, atol=1e-5)
    np.testing.assert_allclose(stacked.uncertainty, one_by_one.uncertainty, atol=1e-5)
