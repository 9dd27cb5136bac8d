"""Distil a released conditional DDPM (`HSRDiffusionPipeline`) into a one-step model with 🤗 accelerate.

    accelerate launch train_scripts/distill_ddpm.py --train_data_dir data/cave --distill_from ddpm-cave --output_dir 1step

Direct distillation (Luhman & Luhman 2021): the student starts as a copy of its teacher (UNet, estimator, residual
scale, noise schedule), or as an earlier student given by --pretrained_model_name_or_path. At the noisiest timestep it
sees the pure noise that the one-step sampler starts from, and learns to return the teacher's sample for that same
noise. Every loss term compares the student's RGB-consistent projection, as the pipeline returns it, with the teacher's
sample. The loop, checkpoints, EMA, validation and release are those of `train_ddpm.py`.
"""

import argparse
import math

import script_utils
import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from hsr_diffusers import HSRDiffusionPipeline
from hsr_diffusers.training_utils import read_checkpoint_meta, save_checkpoint, spectral_loss, write_model_card


logger = get_logger(__name__, log_level="INFO")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=script_utils.HelpFormatter)
    parser.add_argument(
        "--distill_from",
        type=str,
        required=True,
        help="The teacher: a released HSRDiffusionPipeline folder or a bundled name (hsr-diffusers/ddpm-cave). The "
        "student takes its estimator, residual scale, noise schedule and prediction type ('sample' or "
        "'v_prediction'; 'epsilon' teachers are refused).",
    )
    parser.add_argument(
        "--teacher_steps", type=int, default=None, help="Teacher sampling steps; None: the teacher's own default."
    )
    script_utils.add_training_args(
        parser,
        pretrained_help="Start the student from this released pipeline's UNet (an earlier student, a folder or a "
        "bundled name) instead of the teacher's.",
    )
    # The student's size and schedule come from the teacher; these defaults suit the CAVE `small` teacher, and a
    # small learning rate keeps Adam's first steps from throwing the student off its teacher.
    parser.set_defaults(learning_rate=1e-4, resolution=64, train_batch_size=16)
    distill = parser.add_argument_group("distillation")
    distill.add_argument("--loss", type=str, default="mse", choices=["mse", "l1"])
    distill.add_argument("--use_ema", action="store_true")
    distill.add_argument("--ema_decay", type=float, default=0.999)
    distill.add_argument(
        "--inference_scheduler",
        type=str,
        default="ddim",
        choices=sorted(script_utils.INFERENCE_SCHEDULERS),
        help="Scheduler saved with the student (and used for validation), built from the teacher's training config.",
    )
    distill.add_argument("--validation_inference_steps", type=int, default=1)
    return script_utils.parse_training_args(parser, "distill_ddpm.py", argv)


def load_teacher(args: argparse.Namespace, accelerator, wavelengths: list) -> HSRDiffusionPipeline:
    """The released pipeline to distil from, frozen; the student's residual settings are set to its own."""
    args.distill_from = script_utils.resolve_model(args.distill_from)
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
    checkpoint, global_step = script_utils.resolve_resume(args)
    timer = script_utils.Timer(read_checkpoint_meta(checkpoint).get("wall_time_minutes", 0.0))
    accelerator = script_utils.make_accelerator(args)

    # 1. Data
    train_split, validation_split, response = script_utils.load_splits(args, accelerator)
    wavelengths = script_utils.dataset_wavelengths(train_split)
    train_dataset = script_utils.make_train_dataset(args, train_split, response)

    # 2. Models: the frozen teacher; the student starts as the teacher (or an earlier student) with its estimator
    teacher = load_teacher(args, accelerator, wavelengths)
    start = script_utils.resolve_model(args.pretrained_model_name_or_path or args.distill_from)
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

    ema_unet = None
    if args.use_ema:
        ema_unet = EMAModel(unet.parameters(), decay=args.ema_decay, model_cls=UNet2DModel, model_config=unet.config)
        ema_unet.to(accelerator.device)
    script_utils.register_unet_hooks(accelerator, ema_unet)

    # 3. Optimiser, data loader, LR schedule
    optimizer = torch.optim.Adam(unet.parameters(), lr=args.learning_rate)
    train_dataloader = script_utils.make_train_dataloader(args, train_dataset, accelerator)
    steps_per_epoch = math.ceil(len(train_dataloader) / accelerator.num_processes / args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_epochs * steps_per_epoch
    num_epochs = math.ceil(max_train_steps / steps_per_epoch)
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        unet, optimizer, train_dataloader, lr_scheduler
    )
    noise_generator = script_utils.CheckpointedGenerator(args.seed + accelerator.process_index, accelerator.device)
    accelerator.register_for_checkpointing(noise_generator)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers(
            "distill_ddpm", config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        )

    # 4. Resume: restores weights, optimiser, LR schedule and RNG states; the data position is skipped to below
    first_epoch, resume_batches = 0, 0
    if checkpoint is not None:
        accelerator.print(f"Resuming from {checkpoint}")
        accelerator.load_state(str(checkpoint))
        first_epoch = global_step // steps_per_epoch
        resume_batches = (global_step % steps_per_epoch) * args.gradient_accumulation_steps

    logger.info(f"{len(train_split)} scenes, {len(train_dataset)} patches per epoch, {max_train_steps} steps")
    if checkpoint is not None and script_utils.budget_spent(accelerator, timer, args.max_train_minutes):
        max_train_steps = global_step  # resumed after the time budget was spent: release this checkpoint as it is
    progress_bar = tqdm(
        range(max_train_steps), initial=global_step, disable=not accelerator.is_local_main_process, desc="Steps"
    )
    scale = args.residual_scale
    # The one timestep the released one-step sampler visits (the noisiest, with trailing spacing).
    sampler = script_utils.inference_scheduler(args.inference_scheduler, noise_scheduler.config)
    sampler.set_timesteps(1)
    student_timestep = int(sampler.timesteps[0])
    for epoch in range(first_epoch, num_epochs):
        if global_step >= max_train_steps:
            break  # resumed from the final checkpoint: nothing left to train
        unet.train()
        train_dataset.set_epoch(epoch)
        train_dataloader.set_epoch(epoch)
        batches = train_dataloader
        if epoch == first_epoch and resume_batches:
            batches = accelerator.skip_first_batches(train_dataloader, resume_batches)
        for batch in batches:
            condition, base, _ = script_utils.ddpm_condition(pipeline, batch)
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
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()

            if not accelerator.sync_gradients:
                continue
            if ema_unet is not None:
                ema_unet.step(unet.parameters())
            global_step += 1
            progress_bar.update(1)
            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0]}
            progress_bar.set_postfix(**logs)
            accelerator.log(logs, step=global_step)

            if global_step % args.checkpointing_steps == 0:
                meta = {"wall_time_minutes": timer.minutes(), "residual_scale": args.residual_scale}
                save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit, meta)
                if script_utils.budget_spent(accelerator, timer, args.max_train_minutes):
                    max_train_steps = global_step  # the time budget ends the run at this checkpoint
            if global_step % args.validation_steps == 0 and global_step < max_train_steps:
                values, grid = script_utils.validate_ddpm(
                    args, accelerator, unet, ema_unet, noise_scheduler, pipeline, validation_split
                )
                script_utils.log_validation(accelerator, values, grid, global_step)
            if global_step >= max_train_steps:
                break
        if global_step >= max_train_steps:
            break

    # 5. Validate and save the released student (EMA weights when enabled) with a model card of this run's settings
    accelerator.wait_for_everyone()
    values, grid = script_utils.validate_ddpm(
        args, accelerator, unet, ema_unet, noise_scheduler, pipeline, validation_split
    )
    script_utils.log_validation(accelerator, values, grid, global_step)
    if accelerator.is_main_process:
        final = script_utils.build_ddpm_pipeline(accelerator, unet, ema_unet, noise_scheduler, pipeline, args)
        final.save_pretrained(args.output_dir)
        facts = script_utils.run_facts(
            args, accelerator, timer, global_step, train_split, validation_split, values, response
        )
        facts.update(script_utils.ddpm_card_facts(args, noise_scheduler))
        facts["loss"] = f"{args.loss.upper()} against the teacher's samples"
        size = f"{sum(p.numel() for p in final.unet.parameters()):,} parameters"
        facts["model"] = f"`UNet2DModel` of the teacher, {size}"
        student = args.pretrained_model_name_or_path or "the teacher"
        facts["start"] = (
            f"distilled into one step from the teacher `{args.distill_from}` ({args.teacher_steps}-step samples, "
            f"Luhman & Luhman 2021), starting from the UNet of {student}"
        )
        write_model_card(args.output_dir, facts, script_utils.card_template(args.model_card))
        if args.push_to_hub:
            script_utils.push_folder(args, args.output_dir)
    accelerator.wait_for_everyone()
    # Release the DDP wrapper (and its gloo reducer) while the process group still exists: dropping it after
    # `end_training` destroyed the group can hang the process at exit.
    del unet, optimizer, train_dataloader, lr_scheduler
    accelerator.free_memory()
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
