from hsr_diffusers.schedulers.clean_sample import (
    SIGMA_SCHEDULERS,
    SUPPORTED_SCHEDULERS,
    TIMESTEP_SCHEDULERS,
    VARIANCE_PRESERVING_SIGMA_SCHEDULERS,
    check_scheduler,
    model_output_for_clean_sample,
    noise_level,
    predict_clean_sample,
)


__all__ = [
    "SIGMA_SCHEDULERS",
    "SUPPORTED_SCHEDULERS",
    "TIMESTEP_SCHEDULERS",
    "VARIANCE_PRESERVING_SIGMA_SCHEDULERS",
    "check_scheduler",
    "model_output_for_clean_sample",
    "noise_level",
    "predict_clean_sample",
]
