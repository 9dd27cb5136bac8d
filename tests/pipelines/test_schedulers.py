"""`HSRDiffusionPipeline` with the schedulers its type hint admits: two-step sampling with every prediction type each
scheduler supports, and the refusal of the ones it cannot serve. The scheduler algebra itself is tested in
`tests/schedulers/test_clean_sample.py`."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, EDMEulerScheduler, KDPM2DiscreteScheduler

from hsr_diffusers import HSRDiffusionPipeline
from hsr_diffusers.spectral import render_rgb

from ..schedulers.test_clean_sample import CASES, make_scheduler
from ..testing_utils import tiny_ddpm_unet
from .pipeline_tester_mixin import HSRPipelineTesterMixin


def make_pipeline(name: str, prediction_type: str) -> HSRDiffusionPipeline:
    """A tiny pipeline whose scheduler is swapped in from a DDPM config, as a user would."""
    pipe = HSRDiffusionPipeline(unet=tiny_ddpm_unet(), scheduler=make_scheduler(name, prediction_type))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("name, prediction_type", CASES)
def test_sampling_is_finite_and_rgb_consistent(name, prediction_type):
    pipe = make_pipeline(name, prediction_type)
    rgb8 = HSRPipelineTesterMixin.rgb8(8, 8, seed=4)
    # PNDM with two steps starts from t=500 (its "leading" spacing), and its last step extrapolates the noise of the
    # two before: with a random UNet that lands far outside the cube range, which the final clip cannot keep consistent.
    steps = 3 if name == "pndm" else 2
    cubes = pipe(rgb8, num_inference_steps=steps, generator=torch.Generator().manual_seed(0)).cubes
    assert cubes.shape == (1, 8, 8, 31) and np.all(np.isfinite(cubes))
    assert cubes.min() >= 0.0 and cubes.max() <= 1.0
    assert np.abs(render_rgb(cubes[0], mode="linear") - rgb8 / 255).max() <= 1 / 255


# KDPM2's `set_timesteps` warns once per sigma under NumPy 2 (a diffusers issue, not this package's).
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_unsupported_schedulers_are_refused():
    pipe = make_pipeline("ddpm", "epsilon")
    rgb8 = HSRPipelineTesterMixin.rgb8(8, 8)
    # KDPM2 evaluates the model at interpolated sigmas: sampling works, the per-step projection is refused.
    pipe.scheduler = KDPM2DiscreteScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="KDPM2DiscreteScheduler"):
        pipe(rgb8, num_inference_steps=2)
    cubes = pipe(rgb8, num_inference_steps=2, rgb_consistency=False).cubes
    assert np.all(np.isfinite(cubes))
    # EDM noise levels are not the DDPM timesteps the UNet was trained with.
    pipe.scheduler = EDMEulerScheduler()
    with pytest.raises(ValueError, match="EDMEulerScheduler"):
        pipe(rgb8, num_inference_steps=2, rgb_consistency=False)


def test_pipeline_predict_clean_sample_is_its_schedulers():
    # The training scripts ask the pipeline; it must answer for the scheduler it holds, whichever that is.
    pipe = make_pipeline("ddpm", "v_prediction")
    sample, model_output = torch.randn(2, 2, 31, 4, 4, generator=torch.Generator().manual_seed(0))
    timesteps = torch.tensor([10, 700])[:, None, None, None]
    alpha_prod = pipe.scheduler.alphas_cumprod[timesteps]
    expected = alpha_prod.sqrt() * sample - (1 - alpha_prod).sqrt() * model_output
    torch.testing.assert_close(pipe.predict_clean_sample(model_output, sample, timesteps), expected)
    pipe.scheduler = DDPMScheduler(prediction_type="sample")
    torch.testing.assert_close(pipe.predict_clean_sample(model_output, sample, timesteps), model_output)
