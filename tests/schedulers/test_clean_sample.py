"""`hsr_diffusers.schedulers`: the clean sample each supported diffusers scheduler infers, against the scheduler's own,
its inverse, per-sample timesteps as in training, and the private scheduler state it reads."""

import copy

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

from hsr_diffusers.schedulers import (
    SIGMA_SCHEDULERS,
    VARIANCE_PRESERVING_SIGMA_SCHEDULERS,
    check_scheduler,
    model_output_for_clean_sample,
    predict_clean_sample,
)


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


def make_scheduler(name: str, prediction_type: str):
    """A scheduler swapped in from the DDPM config a model was trained with, as a user would."""
    scheduler_class, options, _ = SCHEDULERS[name]
    trained = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=False)
    return scheduler_class.from_config(trained.config, **options)


def schedulers_own_clean_sample(scheduler, model_output, timestep, sample):
    """What the scheduler itself infers as the clean sample, without changing its state."""
    if isinstance(scheduler, (DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler, UniPCMultistepScheduler)):
        return scheduler.convert_model_output(model_output, sample=sample)  # data prediction (DPM-Solver++, UniPC)
    return copy.deepcopy(scheduler).step(model_output, timestep, sample).pred_original_sample


# PNDM and DEIS return no clean sample of their own; they share the algebra of DDIM and DPM-Solver respectively.
OWN_CLEAN_CASES = [case for case in CASES if case[0] not in ("pndm", "deis")]


@pytest.mark.parametrize("name, prediction_type", OWN_CLEAN_CASES)
def test_clean_sample_matches_the_schedulers_own(name, prediction_type):
    scheduler = make_scheduler(name, prediction_type)
    scheduler.set_timesteps(3)
    generator = torch.Generator().manual_seed(0)
    for t in scheduler.timesteps:  # Heun visits its inner timesteps twice, once in each stage
        sample = torch.randn(2, 31, 4, 4, generator=generator) * scheduler.init_noise_sigma
        scheduler.scale_model_input(sample, t)
        model_output = torch.randn(2, 31, 4, 4, generator=generator)
        clean = predict_clean_sample(scheduler, model_output, sample, t)
        own = schedulers_own_clean_sample(scheduler, model_output, t, sample)
        torch.testing.assert_close(clean, own, rtol=1e-4, atol=1e-4)
        # The model output the projection step hands to the scheduler makes it infer the clean sample it was given.
        target = torch.randn(2, 31, 4, 4, generator=generator)
        replaced = model_output_for_clean_sample(scheduler, target, sample, t)
        torch.testing.assert_close(
            schedulers_own_clean_sample(scheduler, replaced, t, sample), target, rtol=1e-4, atol=1e-3
        )
        scheduler.step(model_output, t, sample)


@pytest.mark.parametrize("name, prediction_type", CASES)
def test_model_output_for_clean_sample_inverts_predict_clean_sample(name, prediction_type):
    # Also for PNDM and DEIS, which return no clean sample of their own to compare with.
    scheduler = make_scheduler(name, prediction_type)
    scheduler.set_timesteps(3)
    generator = torch.Generator().manual_seed(1)
    t = scheduler.timesteps[1]
    sample = torch.randn(2, 31, 4, 4, generator=generator) * scheduler.init_noise_sigma
    scheduler.scale_model_input(sample, t)
    clean = torch.randn(2, 31, 4, 4, generator=generator)
    model_output = model_output_for_clean_sample(scheduler, clean, sample, t)
    torch.testing.assert_close(predict_clean_sample(scheduler, model_output, sample, t), clean, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction_type", ALL_PREDICTION_TYPES)
def test_per_sample_timesteps_invert_add_noise(prediction_type):
    # Training: a batch of noisy samples at different timesteps, made with the scheduler's own `add_noise`.
    scheduler = make_scheduler("ddpm", prediction_type)
    generator = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(2, 3, 31, 4, 4, generator=generator)
    timesteps = torch.tensor([3, 500, 990])
    noisy = scheduler.add_noise(clean, noise, timesteps)
    target = {"epsilon": noise, "sample": clean, "v_prediction": scheduler.get_velocity(clean, noise, timesteps)}
    predicted = predict_clean_sample(scheduler, target[prediction_type], noisy, timesteps[:, None, None, None])
    torch.testing.assert_close(predicted, clean, rtol=1e-4, atol=1e-4)


# KDPM2's `set_timesteps` warns once per sigma under NumPy 2 (a diffusers issue, not this package's).
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_unsupported_schedulers_are_refused_by_name():
    config = DDPMScheduler().config
    # KDPM2 evaluates the model at interpolated sigmas: it samples, but its clean sample is not known.
    check_scheduler(KDPM2DiscreteScheduler.from_config(config), needs_clean_sample=False)
    with pytest.raises(ValueError, match="KDPM2DiscreteScheduler"):
        check_scheduler(KDPM2DiscreteScheduler.from_config(config), needs_clean_sample=True)
    with pytest.raises(ValueError, match="KDPM2DiscreteScheduler"):
        predict_clean_sample(KDPM2DiscreteScheduler.from_config(config), *torch.zeros(2, 1, 31, 4, 4), 10)
    # EDM noise levels are not the DDPM timesteps the UNet was trained with.
    with pytest.raises(ValueError, match="EDMEulerScheduler"):
        check_scheduler(EDMEulerScheduler(), needs_clean_sample=False)
    with pytest.raises(ValueError, match="prediction_type"):
        check_scheduler(DDPMScheduler(prediction_type="flow"), needs_clean_sample=True)
    # Sigma schedulers know the noise level of their current step only.
    scheduler = EulerDiscreteScheduler.from_config(config)
    scheduler.set_timesteps(2)
    with pytest.raises(ValueError, match="Per-sample timesteps"):
        predict_clean_sample(scheduler, torch.zeros(2, 31, 4, 4), torch.zeros(2, 31, 4, 4), torch.tensor([10, 20]))


@pytest.mark.parametrize(
    "scheduler_class",
    VARIANCE_PRESERVING_SIGMA_SCHEDULERS + SIGMA_SCHEDULERS,
    ids=lambda scheduler_class: scheduler_class.__name__,
)
def test_sigma_schedulers_keep_the_private_methods_the_clean_sample_uses(scheduler_class):
    # `predict_clean_sample` calls private scheduler methods that diffusers may change in any release (hence the
    # `diffusers<0.43` pin): a diffusers upgrade that drops or changes them fails here first.
    variance_preserving = scheduler_class in VARIANCE_PRESERVING_SIGMA_SCHEDULERS
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
