"""
The clean sample that a diffusers scheduler infers from a model output, and back: the scheduler algebra that the
RGB-consistency projection of `HSRDiffusionPipeline` (and the training scripts' clean-sample losses) need, for the
stock diffusers schedulers, without a scheduler class of its own.

Every supported scheduler makes the sample the model sees from the clean sample and unit noise as
`input_scale * sample = alpha_t * clean + sigma_t * noise` ([`noise_level`]); the prediction type then says whether the
model output is the noise, the clean sample or the velocity. For the sigma schedulers this reads private diffusers
scheduler state (`_init_step_index`, `step_index`, `sigmas`, `_sigma_to_alpha_sigma_t`), which is why `diffusers` is
pinned below 0.43; `tests/schedulers/test_clean_sample.py` fails first when a release changes them.
"""

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
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin


# The schedulers whose clean-sample prediction is known, by how their sample is made from the clean sample and unit
# noise: sqrt(alphas_cumprod[t]) * clean + sqrt(1 - alphas_cumprod[t]) * noise ...
TIMESTEP_SCHEDULERS = (DDPMScheduler, DDIMScheduler, PNDMScheduler)
# ... alpha_t * clean + sigma_t * noise, from the sigma of the current step ...
VARIANCE_PRESERVING_SIGMA_SCHEDULERS = (
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    DEISMultistepScheduler,
    UniPCMultistepScheduler,
)
# ... or clean + sigma * noise, likewise. The KDPM2 and DPM-Solver-SDE schedulers evaluate the model at interpolated
# sigmas in their second stage, which differ between them: they are not supported.
SIGMA_SCHEDULERS = (
    EulerDiscreteScheduler,
    EulerAncestralDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
)
SUPPORTED_SCHEDULERS = TIMESTEP_SCHEDULERS + VARIANCE_PRESERVING_SIGMA_SCHEDULERS + SIGMA_SCHEDULERS
PREDICTION_TYPES = ("epsilon", "sample", "original_sample", "v_prediction")


def _names(classes: tuple) -> str:
    return ", ".join(cls.__name__ for cls in classes)


def check_scheduler(scheduler: SchedulerMixin, needs_clean_sample: bool) -> None:
    r"""
    Raises a `ValueError` for a scheduler that a UNet trained with DDPM timesteps cannot sample with, or, when
    `needs_clean_sample`, whose clean-sample prediction is not known (see [`predict_clean_sample`]).

    Args:
        scheduler ([`SchedulerMixin`]): the scheduler to check.
        needs_clean_sample (`bool`): whether [`predict_clean_sample`] will be asked at every step.
    """
    if isinstance(scheduler, EDMEulerScheduler):
        raise ValueError(
            "EDMEulerScheduler conditions the UNet on EDM noise levels and input scaling, not on the DDPM timesteps "
            "it was trained with; use EulerDiscreteScheduler.from_config(pipe.scheduler.config) instead."
        )
    if not needs_clean_sample:
        return
    if not isinstance(scheduler, SUPPORTED_SCHEDULERS):
        raise ValueError(
            f"rgb_consistency=True needs the clean sample at every step, which is not known for "
            f"{type(scheduler).__name__}; use one of {_names(SUPPORTED_SCHEDULERS)}, or rgb_consistency=False."
        )
    prediction_type = scheduler.config.get("prediction_type")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"rgb_consistency=True needs prediction_type 'epsilon', 'sample' or 'v_prediction', got "
            f"{prediction_type!r}."
        )


def noise_level(
    scheduler: SchedulerMixin, sample: torch.Tensor, timestep: int | float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
    r"""
    `(alpha_t, sigma_t, input_scale)` of `scheduler` at `timestep`, such that the scaled sample the model sees is
    `input_scale * sample = alpha_t * clean + sigma_t * noise`.

    The sigma schedulers keep the noise level of their current step only, so for them call it between `set_timesteps`
    and the `step` for `timestep`, with one timestep; it sets the step index that the next `step` would set.

    Raises:
        `ValueError`: a scheduler outside `SUPPORTED_SCHEDULERS`, or per-sample timesteps for a sigma scheduler.
    """
    if isinstance(scheduler, TIMESTEP_SCHEDULERS):
        alpha_prod = scheduler.alphas_cumprod.to(sample.device)[timestep].float()
        return alpha_prod.sqrt(), (1 - alpha_prod).sqrt(), 1.0
    if not isinstance(scheduler, SUPPORTED_SCHEDULERS):
        raise ValueError(
            f"{type(scheduler).__name__} is not supported for predicting the clean sample; use one of "
            f"{_names(SUPPORTED_SCHEDULERS)}, or `rgb_consistency=False`."
        )
    if torch.is_tensor(timestep) and timestep.numel() > 1:
        raise ValueError(
            f"Per-sample timesteps need a scheduler that looks its noise level up by timestep "
            f"({_names(TIMESTEP_SCHEDULERS)}), got {type(scheduler).__name__}."
        )
    # Sigma schedulers keep the noise level of the current step in `sigmas[step_index]` (with Karras sigmas it is not
    # the one of the rounded timestep). DPM-Solver-type schedulers set `step_index` in their first `step`, not in
    # `scale_model_input`: set it the same way here.
    if scheduler.step_index is None:
        scheduler._init_step_index(timestep)
    sigma = scheduler.sigmas[scheduler.step_index].to(sample.device).float()
    if isinstance(scheduler, VARIANCE_PRESERVING_SIGMA_SCHEDULERS):
        alpha_t, sigma_t = scheduler._sigma_to_alpha_sigma_t(sigma)
        return alpha_t, sigma_t, 1.0
    # The sample is `clean + sigma * noise`; `scale_model_input` divides it by sqrt(sigma**2 + 1) for the model.
    alpha_t = (sigma**2 + 1) ** -0.5
    return alpha_t, sigma * alpha_t, alpha_t


def predict_clean_sample(
    scheduler: SchedulerMixin,
    model_output: torch.Tensor,
    sample: torch.Tensor,
    timestep: int | float | torch.Tensor,
) -> torch.Tensor:
    r"""
    The clean sample (the `pred_original_sample` of diffusers schedulers) that `scheduler` infers from the model's
    `model_output` for the noisy `sample` at `timestep`, for its `prediction_type` (`"epsilon"`, `"sample"` or
    `"v_prediction"`). Unlike `scheduler.step`, it does not advance the scheduler, so it can be used before a step (the
    sampler's RGB-consistency projection) and with gradients in training.

    Supported schedulers:
        - [`DDPMScheduler`], [`DDIMScheduler`], [`PNDMScheduler`]: the noise level is `alphas_cumprod[timestep]`;
          `timestep` may be a tensor of per-sample timesteps broadcastable to `sample` (`[B, 1, 1, 1]`), as in
          training.
        - [`DPMSolverMultistepScheduler`], [`DPMSolverSinglestepScheduler`], [`DEISMultistepScheduler`],
          [`UniPCMultistepScheduler`]: `sample = alpha_t * clean + sigma_t * noise` at the sigma of the current step
          (Karras sigmas included).
        - [`EulerDiscreteScheduler`], [`EulerAncestralDiscreteScheduler`], [`HeunDiscreteScheduler`],
          [`LMSDiscreteScheduler`]: `sample = clean + sigma * noise` at the sigma of the current step, which the model
          sees divided by `sqrt(sigma**2 + 1)` (`scale_model_input`).

    Args:
        scheduler ([`SchedulerMixin`]):
            One of the schedulers above, with `set_timesteps` called for the sigma schedulers.
        model_output (`torch.Tensor`):
            The model's output for `sample` (given to it through `scheduler.scale_model_input`).
        sample (`torch.Tensor`):
            The noisy sample the scheduler steps, `[B, C, H, W]`.
        timestep (`int`, `float` or `torch.Tensor`):
            The scheduler timestep of `sample`, or per-sample timesteps (see above).

    Returns:
        `torch.Tensor`: the predicted clean sample, shaped like `sample`.
    """
    prediction_type = scheduler.config.prediction_type
    if prediction_type in ("sample", "original_sample"):
        return model_output
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon', 'sample' or 'v_prediction', got {prediction_type!r}.")
    alpha_t, sigma_t, input_scale = noise_level(scheduler, sample, timestep)
    if prediction_type == "epsilon":
        return (input_scale * sample - sigma_t * model_output) / alpha_t
    return alpha_t * input_scale * sample - sigma_t * model_output  # v_prediction


def model_output_for_clean_sample(
    scheduler: SchedulerMixin, clean: torch.Tensor, sample: torch.Tensor, timestep: int | float | torch.Tensor
) -> torch.Tensor:
    r"""
    The inverse of [`predict_clean_sample`]: the model output from which `scheduler` infers `clean` for the noisy
    `sample` at `timestep`. Handing it to `scheduler.step` makes the step continue from `clean`.

    Returns:
        `torch.Tensor`: shaped like `sample`.
    """
    prediction_type = scheduler.config.prediction_type
    if prediction_type in ("sample", "original_sample"):
        return clean
    alpha_t, sigma_t, input_scale = noise_level(scheduler, sample, timestep)
    epsilon = (input_scale * sample - alpha_t * clean) / sigma_t
    if prediction_type == "epsilon":
        return epsilon
    return alpha_t * epsilon - sigma_t * clean  # v_prediction
