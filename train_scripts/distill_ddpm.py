"""Distil a released conditional DDPM (`HSRDiffusionPipeline`) into a one-step model with 🤗 accelerate.

    accelerate launch train_scripts/distill_ddpm.py --train_data_dir data/cave --distill_from ddpm-cave --output_dir 1step

Direct distillation (Luhman & Luhman 2021): the student starts as a copy of its teacher (UNet, estimator, residual
scale, noise schedule), or as an earlier student given by --pretrained_model_name_or_path. At the noisiest timestep it
sees the pure noise that the one-step sampler starts from, and learns to return the teacher's sample for that same
noise. Every loss term compares the student's RGB-consistent projection, as the pipeline returns it, with the teacher's
sample. The loop, checkpoints, EMA, validation and release are those of `train_ddpm.py`.
"""

import argparse
import functools

import script_args
import script_data
import script_ddpm
import script_training
import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from diffusers import DDPMScheduler, UNet2DModel
from script_losses import spectral_loss

from hsr_diffusers import HSRDiffusionPipeline


logger = get_logger(__name__, log_level="INFO")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=script_args.HelpFormatter)
    script_args.add_training_args(
        parser,
        pretrained_help="Start the student from this released pipeline's UNet (an earlier student, a folder or a "
        "bundled name) instead of the teacher's.",
    )
    # The student's size and schedule come from the teacher; these defaults suit the CAVE `small` teacher, and a
    # small learning rate keeps Adam's first steps from throwing the student off its teacher.
    parser.set_defaults(learning_rate=1e-4, resolution=64, train_batch_size=16)
    distill = parser.add_argument_group("distillation")
    distill.add_argument(
        "--distill_from",
        type=str,
        required=True,
        help="The teacher: a released HSRDiffusionPipeline folder or a bundled name (hsr-diffusers/ddpm-cave). The "
        "student takes its estimator, residual scale, noise schedule and prediction type ('sample' or "
        "'v_prediction'; 'epsilon' teachers are refused).",
    )
    distill.add_argument(
        "--teacher_steps", type=int, default=None, help="Teacher sampling steps; None: the teacher's own default."
    )
    distill.add_argument("--loss", type=str, default="mse", choices=["mse", "l1"])
    script_ddpm.add_inference_args(
        distill,
        validation_inference_steps=1,
        help="Scheduler saved with the student (and used for validation), built from the teacher's training config.",
    )
    return script_args.parse_training_args(parser, "distill_ddpm.py", argv)


def load_teacher(args: argparse.Namespace, accelerator, wavelengths: list) -> HSRDiffusionPipeline:
    """The released pipeline to distil from, frozen; the student's residual settings are set to its own."""
    args.distill_from = script_data.resolve_model(args.distill_from)
    teacher = HSRDiffusionPipeline.from_pretrained(args.distill_from).to(accelerator.device)
    if list(teacher.config.wavelengths) != list(wavelengths):
        raise ValueError(
            f"The teacher's wavelengths {teacher.config.wavelengths} differ from the data's {wavelengths}."
        )
    teacher.unet.requires_grad_(False).eval()
    teacher.set_progress_bar_config(disable=True)
    args.residual = "root_poly" if teacher.estimator is not None else "none"
    args.residual_scale = teacher.config.residual_scale
    args.prediction_type = teacher.scheduler.config.prediction_type
    if args.prediction_type == "epsilon":
        # x0 = (x_T - sqrt(1 - a_T) eps) / sqrt(a_T) divides by about 0.006 at the noisiest step.
        raise ValueError("--distill_from needs a teacher that predicts 'sample' or 'v_prediction', not 'epsilon'.")
    if args.teacher_steps is None:
        args.teacher_steps = teacher.config.default_num_inference_steps
    # The released student samples in one step by default, on the teacher's tiles.
    args.release_defaults = {
        "default_num_inference_steps": 1,
        "default_tile_size": teacher.config.default_tile_size,
        "default_tile_overlap": teacher.config.default_tile_overlap,
    }
    return teacher


def main(args: argparse.Namespace) -> None:
    checkpoint, global_step, timer = script_training.resolve_resume(args)
    accelerator = script_training.make_accelerator(args)

    # 1. Data
    train_split, validation_split, response, wavelengths = script_data.load_splits(args, accelerator)
    train_dataset = script_data.make_train_dataset(args, train_split, response)

    # 2. Models: the frozen teacher; the student starts as the teacher (or an earlier student) with its estimator
    teacher = load_teacher(args, accelerator, wavelengths)
    start = script_data.resolve_model(args.pretrained_model_name_or_path or args.distill_from)
    unet = UNet2DModel.from_pretrained(start, subfolder="unet")
    noise_scheduler = DDPMScheduler.from_config(teacher.scheduler.config)
    pipeline = HSRDiffusionPipeline(
        unet=unet,
        scheduler=noise_scheduler,
        estimator=teacher.estimator,
        wavelengths=wavelengths,
        response=response,
        residual_scale=args.residual_scale,
    )
    processor = pipeline.image_processor

    # Copied from train_ddpm.main with train_ddpm->distill_ddpm
    ema_unet = script_training.make_ema(args, unet, accelerator)
    script_training.register_checkpoint_hooks(accelerator, UNet2DModel, ema_unet)

    # 3. Optimiser, data loader, LR schedule, and the generator of the noise (saved in each checkpoint)
    optimizer = torch.optim.Adam(unet.parameters(), lr=args.learning_rate)
    train_dataloader = script_data.make_train_dataloader(args, train_dataset, accelerator)
    progress = script_training.TrainingProgress(
        args, accelerator, train_dataloader, timer, checkpoint_meta={"residual_scale": args.residual_scale}
    )
    lr_scheduler = progress.lr_scheduler(optimizer)
    unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        unet, optimizer, train_dataloader, lr_scheduler
    )
    noise_generator = script_training.CheckpointedGenerator(args.seed + accelerator.process_index, accelerator.device)
    accelerator.register_for_checkpointing(noise_generator)
    validate = functools.partial(
        script_ddpm.validate_ddpm, args, accelerator, unet, ema_unet, noise_scheduler, pipeline, validation_split
    )

    # 4. Train, resuming from a checkpoint: weights, optimiser, LR schedule and RNG states, then the data position
    logger.info(f"{len(train_split)} scenes, {len(train_dataset)} patches per epoch, {progress.budget}")
    progress.start("distill_ddpm", checkpoint, global_step)
    scale = args.residual_scale
    # End of the copy from train_ddpm.main
    # The one timestep the released one-step sampler visits (the noisiest, with trailing spacing).
    sampler = script_ddpm.inference_scheduler(args.inference_scheduler, noise_scheduler.config)
    sampler.set_timesteps(1)
    student_timestep = int(sampler.timesteps[0])
    for epoch in progress.epochs():
        unet.train()
        for batch in progress.epoch_batches(epoch, train_dataset, train_dataloader):
            condition, base, _ = script_ddpm.ddpm_condition(pipeline, batch)
            # From the pure noise the sampler starts with, the teacher's sample for it is the target.
            noise = torch.randn(base.shape, generator=noise_generator.generator, device=base.device)
            timesteps = torch.full((base.shape[0],), student_timestep, device=base.device)
            noisy = noise * teacher.scheduler.init_noise_sigma
            rgb = processor.denormalize(batch["rgb"]).clamp(0.0, 1.0)
            with torch.no_grad():
                sampled = teacher(
                    rgb,
                    num_inference_steps=args.teacher_steps,
                    latents=noise,
                    tile_size=args.resolution,  # a patch is one tile
                    tile_overlap=0,
                    output_type="pt",
                ).cubes
            target = (processor.normalize(sampled.to(base.device)) - base) * scale  # [B, bands, P, P]

            with accelerator.accumulate(unet):
                # Condition first, then the noisy residual: [B, 3 (+bands) + bands, P, P].
                model_output = unet(torch.cat([condition, noisy], dim=1), timesteps).sample
                # Compare what the pipeline returns: the RGB-consistent projection of the predicted cube. The
                # projection restores what the camera sees, so the student spends no capacity on it.
                predicted = pipeline.predict_clean_sample(model_output.float(), noisy, timesteps[:, None, None, None])
                predicted = processor.project(processor.denormalize(base + predicted / scale), rgb)
                output = (processor.normalize(predicted) - base) * scale
                error = F.mse_loss if args.loss == "mse" else F.l1_loss
                loss = error(output.float(), target.float(), reduction="none").mean(dim=(1, 2, 3)).mean()
                if args.sam_weight or args.mrae_weight:  # the student's projected cube against the teacher's sample
                    loss = loss + spectral_loss(predicted.clamp(0, 1), sampled, args.sam_weight, args.mrae_weight)
                # Copied from train_ddpm.main
                script_training.optimizer_step(accelerator, loss, unet, optimizer, lr_scheduler, args.max_grad_norm)

            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0]}
            if accelerator.sync_gradients and progress.end_of_step(logs, unet, ema_unet, validate):
                break

    # 5. Validate and save the released pipeline (EMA weights when enabled) with a model card of this run's settings
    facts = progress.final_validation(validate, train_split, validation_split, response)
    if accelerator.is_main_process:
        final = script_ddpm.build_ddpm_pipeline(accelerator, unet, ema_unet, noise_scheduler, pipeline, args)
        facts.update(script_ddpm.ddpm_card_facts(args, noise_scheduler))
        # End of the copy from train_ddpm.main
        facts["loss"] = f"{args.loss.upper()} against the teacher's samples"
        size = f"{sum(p.numel() for p in final.unet.parameters()):,} parameters"
        student = args.pretrained_model_name_or_path or "the teacher"
        facts["model"] = f"`UNet2DModel` of {student}, {size}"
        facts["start"] = (
            f"distilled into one step from the teacher `{args.distill_from}` ({args.teacher_steps}-step samples, "
            f"Luhman & Luhman 2021), starting from the UNet of {student}"
        )
        script_training.save_release(args, final, facts)
    # Drop the prepared objects (with any DDP wrapper) before script_training.end_training ends the process group.
    del unet, optimizer, train_dataloader, lr_scheduler, validate
    script_training.end_training(accelerator)


if __name__ == "__main__":
    main(parse_args())
