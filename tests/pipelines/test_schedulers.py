"""`HSRDiffusionPipeline` with the schedulers its type hint admits: the clean-sample prediction against each scheduler's
own, and two-step sampling with every prediction type each scheduler supports."""

import copy

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EDMEulerScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from hsr_diffusers import HSRDiffusionPipeline
from hsr_diffusers.pipelines.hsr_diffusion import pipeline_hsr_diffusion
from hsr_diffusers.spectral import render_rgb

from ..testing_utils import tiny_ddpm_unet
from .pipeline_tester_mixin import HSRPipelineTesterMixin


ALL_PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
# Scheduler (with the options that matter) -> the prediction types it implements.
SCHEDULERS = {
    "ddpm": (DDPMScheduler, {}, ALL_PREDICTION_TYPES),
    "ddim": (DDIMScheduler, {}, ALL_PREDICTION_TYPES),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}, ("epsilon", "v_prediction")),
    "euler": (EulerDiscreteScheduler, {}, ALL_PREDICTION_TYPES),
    "euler_karras": (EulerDiscreteScheduler, {"use_karras_sigmas": True}, ALL_PREDICTION_TYPES),
    "euler_ancestral": (EulerAncestralDiscreteScheduler, {}, ("epsilon", "v_prediction")),
    "heun": (HeunDiscreteScheduler, {}, ALL_PREDICTION_TYPES),
    "lms": (LMSDiscreteScheduler, {}, ALL_PREDICTION_TYPES),
    "dpm_multistep_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}, ALL_PREDICTION_TYPES),
    "dpm_singlestep": (DPMSolverSinglestepScheduler, {}, ALL_PREDICTION_TYPES),
    "deis": (DEISMultistepScheduler, {}, ALL_PREDICTION_TYPES),
    "unipc_karras": (UniPCMultistepScheduler, {"use_karras_sigmas": True}, ALL_PREDICTION_TYPES),
}
CASES = [(name, prediction_type) for name, (_, _, types) in SCHEDULERS.items() for prediction_type in types]


def make_pipeline(name: str, prediction_type: str) -> HSRDiffusionPipeline:
    """A tiny pipeline whose scheduler is swapped in from a DDPM config, as a user would."""
    scheduler_class, options, _ = SCHEDULERS[name]
    trained = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=False)
    pipe = HSRDiffusionPipeline(
        unet=tiny_ddpm_unet(), scheduler=scheduler_class.from_config(trained.config, **options)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def schedulers_own_clean_sample(scheduler, model_output, timestep, sample):
    """What the scheduler itself infers as the clean sample, without changing its state."""
    if isinstance(scheduler, (DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler, UniPCMultistepScheduler)):
        return scheduler.convert_model_output(model_output, sample=sample)  # data prediction (DPM-Solver++, UniPC)
    return copy.deepcopy(scheduler).step(model_output, timestep, sample).pred_original_sample


# PNDM and DEIS return no clean sample of their own; they share the algebra of DDIM and DPM-Solver respectively.
OWN_CLEAN_CASES = [case for case in CASES if case[0] not in ("pndm", "deis")]


@pytest.mark.parametrize("name, prediction_type", OWN_CLEAN_CASES)
def test_clean_sample_matches_the_schedulers_own(name, prediction_type):
    pipe = make_pipeline(name, prediction_type)
    scheduler = pipe.scheduler
    scheduler.set_timesteps(3)
    generator = torch.Generator().manual_seed(0)
    for t in scheduler.timesteps:  # Heun visits its inner timesteps twice, once in each stage
        sample = torch.randn(2, 31, 4, 4, generator=generator) * scheduler.init_noise_sigma
        scheduler.scale_model_input(sample, t)
        model_output = torch.randn(2, 31, 4, 4, generator=generator)
        clean = pipe.predict_clean_sample(model_output, sample, t)
        own = schedulers_own_clean_sample(scheduler, model_output, t, sample)
        torch.testing.assert_close(clean, own, rtol=1e-4, atol=1e-4)
        # The model output the projection step hands to the scheduler makes it infer the clean sample it was given.
        target = torch.randn(2, 31, 4, 4, generator=generator)
        replaced = pipe._model_output_for_clean(target, sample, t)
        torch.testing.assert_close(
            schedulers_own_clean_sample(scheduler, replaced, t, sample), target, rtol=1e-4, atol=1e-3
        )
        scheduler.step(model_output, t, sample)


@pytest.mark.parametrize("prediction_type", ALL_PREDICTION_TYPES)
def test_per_sample_timesteps_invert_add_noise(prediction_type):
    # Training: a batch of noisy samples at different timesteps, made with the scheduler's own `add_noise`.
    pipe = make_pipeline("ddpm", prediction_type)
    generator = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(2, 3, 31, 4, 4, generator=generator)
    timesteps = torch.tensor([3, 500, 990])
    noisy = pipe.scheduler.add_noise(clean, noise, timesteps)
    target = {"epsilon": noise, "sample": clean, "v_prediction": pipe.scheduler.get_velocity(clean, noise, timesteps)}
    predicted = pipe.predict_clean_sample(target[prediction_type], noisy, timesteps[:, None, None, None])
    torch.testing.assert_close(predicted, clean, rtol=1e-4, atol=1e-4)


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
    # Sigma schedulers know the noise level of their current step only.
    pipe.scheduler = EulerDiscreteScheduler.from_config(DDPMScheduler().config)
    pipe.scheduler.set_timesteps(2)
    with pytest.raises(ValueError, match="Per-sample timesteps"):
        pipe.predict_clean_sample(torch.zeros(2, 31, 4, 4), torch.zeros(2, 31, 4, 4), torch.tensor([10, 20]))


@pytest.mark.parametrize(
    "scheduler_class",
    pipeline_hsr_diffusion._VARIANCE_PRESERVING_SIGMA_SCHEDULERS + pipeline_hsr_diffusion._SIGMA_SCHEDULERS,
    ids=lambda scheduler_class: scheduler_class.__name__,
)
def test_sigma_schedulers_keep_the_private_methods_the_clean_sample_uses(scheduler_class):
    # `predict_clean_sample` calls private scheduler methods that diffusers may change in any release (hence the
    # `diffusers<0.43` pin): a diffusers upgrade that drops or changes them fails here first.
    variance_preserving = scheduler_class in pipeline_hsr_diffusion._VARIANCE_PRESERVING_SIGMA_SCHEDULERS
    scheduler = scheduler_class.from_config(DDPMScheduler(num_train_timesteps=1000).config)
    needed = ["_init_step_index", "step_index", "sigmas"] + ["_sigma_to_alpha_sigma_t"] * variance_preserving
    missing = [name for name in needed if not hasattr(scheduler, name)]
    assert not missing, f"{scheduler_class.__name__} no longer has {missing}, which predict_clean_sample uses"
    scheduler.set_timesteps(4)
    assert scheduler.step_index is None
    scheduler._init_step_index(scheduler.timesteps[0])
    assert scheduler.step_index == 0
    if variance_preserving:
        sigma = scheduler.sigmas[0]
        alpha_t, sigma_t = scheduler._sigma_to_alpha_sigma_t(sigma)
        torch.testing.assert_close(alpha_t, (sigma**2 + 1) ** -0.5)
        torch.testing.assert_close(sigma_t, sigma * alpha_t)
