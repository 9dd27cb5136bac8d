"""What train_ddpm.py and distill_ddpm.py share: both train a `UNet2DModel` released in an `HSRDiffusionPipeline`."""

import argparse

import script_training
import script_validation
import torch


# `--inference_scheduler` choices: the diffusers scheduler saved with a release.
INFERENCE_SCHEDULERS = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "dpmsolver": "DPMSolverMultistepScheduler"}


def add_inference_args(group: argparse._ArgumentGroup, validation_inference_steps: int, help: str) -> None:
    """The sampler a DDPM script saves with its release (`--inference_scheduler`) and validates with."""
    group.add_argument(
        "--inference_scheduler", type=str, default="ddim", choices=sorted(INFERENCE_SCHEDULERS), help=help
    )
    group.add_argument("--validation_inference_steps", type=int, default=validation_inference_steps)


def inference_scheduler(name: str, config):
    """The scheduler saved with the released pipeline, built from the training scheduler's config."""
    import diffusers

    # "trailing" spacing keeps the last (noisiest) training timestep in few-step schedules.
    return getattr(diffusers, INFERENCE_SCHEDULERS[name]).from_config(config, timestep_spacing="trailing")


def ddpm_condition(pipeline, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """UNet conditioning `[B, 3 (+bands), P, P]`, the estimate in [-1, 1] (or zeros) and the clean cube."""
    rgb, cube = batch["rgb"], batch["cube"]  # [B, 3, P, P], [B, bands, P, P] in [-1, 1]
    if pipeline.estimator is None:
        return rgb, torch.zeros_like(cube), cube
    processor = pipeline.image_processor
    with torch.no_grad():
        base = processor.normalize(pipeline.prepare_estimate(processor.denormalize(rgb)))
    return torch.cat([rgb, base], dim=1), base, cube


def build_ddpm_pipeline(accelerator, unet, ema_unet, noise_scheduler, pipeline, args):
    """The released pipeline: a copy of the (EMA) UNet, the inference scheduler, the estimator and the config."""
    from hsr_diffusers import HSRDiffusionPipeline

    return HSRDiffusionPipeline(
        unet=script_training.released_model(accelerator, unet, ema_unet),
        scheduler=inference_scheduler(args.inference_scheduler, noise_scheduler.config),
        estimator=pipeline.estimator,
        wavelengths=pipeline.config.wavelengths,
        response=pipeline.config.response,
        residual_scale=args.residual_scale,
        **args.release_defaults,
    )


def validate_ddpm(args, accelerator, unet, ema_unet, noise_scheduler, pipeline, validation_split):
    """Validation of the pipeline the run would release now, at `--validation_inference_steps`."""
    released = build_ddpm_pipeline(accelerator, unet, ema_unet, noise_scheduler, pipeline, args)
    call_kwargs = {
        "num_inference_steps": args.validation_inference_steps,
        "generator": torch.Generator().manual_seed(0),
    }
    return script_validation.validate_release(released, unet, validation_split, args, accelerator, call_kwargs)


def ddpm_card_facts(args, noise_scheduler) -> dict:
    """The DDPM-specific facts of a model card, from the run."""
    sampler = type(inference_scheduler(args.inference_scheduler, noise_scheduler.config)).__name__
    steps = args.validation_inference_steps
    return {
        "prediction_type": args.prediction_type,
        "residual": args.residual,
        "residual_scale": f"{args.residual_scale:.4g}",
        "loss": args.loss.upper(),
        "sampler": sampler,
        "validation_steps_used": steps,
        "validation_sampling": f"{steps} {sampler} step{'s' if steps != 1 else ''}",
        "default_num_inference_steps": args.release_defaults.get("default_num_inference_steps", "the pipeline's"),
    }
