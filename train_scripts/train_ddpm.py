"""Train the conditional DDPM of hsr-diffusers (`HSRDiffusionPipeline`) with 🤗 accelerate.

    accelerate launch train_scripts/train_ddpm.py --train_data_dir data/cave --model_config small --output_dir ddpm-cave

Skeleton of diffusers' `examples/unconditional_image_generation/train_unconditional.py`: parse_args() -> main(args),
accelerate save/load hooks writing diffusers-format folders, EMA, checkpoint-N with a total limit, resume from
'latest', validation through the released pipeline class, and `save_pretrained` at the end.
"""

import argparse
import math
import os
import sys

import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr
from tqdm.auto import tqdm


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_utils  # noqa: E402

from hsr_diffusers import HSRDiffusionPipeline  # noqa: E402


logger = get_logger(__name__, log_level="INFO")

INFERENCE_SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpmsolver": DPMSolverMultistepScheduler}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a conditional DDPM for RGB -> hyperspectral reconstruction.")
    parser.add_argument(
        "--model_config",
        type=str,
        default="small",
        help="Preset name (tiny, small, base: train_scripts/configs/ddpm_<name>.json) or a JSON path with 'unet' "
        "(UNet2DModel kwargs without in/out channels) and optional 'training' (flag defaults) sections.",
    )
    train_utils.add_common_args(parser)
    ddpm = parser.add_argument_group("diffusion")
    ddpm.add_argument(
        "--prediction_type",
        type=str,
        default="sample",
        choices=["epsilon", "sample", "v_prediction"],
        help="What the UNet predicts. The method used epsilon; 'sample' converged far faster in our CPU runs.",
    )
    ddpm.add_argument("--num_train_timesteps", type=int, default=1000)
    ddpm.add_argument("--beta_schedule", type=str, default="linear")
    ddpm.add_argument("--rescale_betas_zero_snr", action="store_true", help="Zero terminal SNR (Lin et al. 2024).")
    ddpm.add_argument("--loss", type=str, default="mse", choices=["mse", "l1"], help="MSE in the method.")
    ddpm.add_argument("--snr_gamma", type=float, default=None, help="Min-SNR weighting gamma (Hang et al. 2023).")
    ddpm.add_argument(
        "--residual_scale",
        type=float,
        default=None,
        help="Scale of the residual before diffusion; default: 0.5 / std of the training residual (plain mode: 1).",
    )
    ddpm.add_argument("--use_ema", action="store_true")
    ddpm.add_argument("--ema_decay", type=float, default=0.999)
    ddpm.add_argument(
        "--inference_scheduler",
        type=str,
        default="ddim",
        choices=sorted(INFERENCE_SCHEDULERS),
        help="Scheduler saved with the pipeline (and used for validation), built from the training scheduler config.",
    )
    ddpm.add_argument("--validation_inference_steps", type=int, default=10)
    ddpm.add_argument(
        "--distill_from",
        type=str,
        default=None,
        help="A released HSRDiffusionPipeline folder to distil into a one-step model: the student starts from its "
        "UNet, estimator, residual scale and noise schedule, and learns to map the initial noise to the teacher's "
        "sample for the same noise in one UNet evaluation (Luhman & Luhman 2021). --model_config, --residual, "
        "--prediction_type and --residual_scale are then taken from the teacher.",
    )
    ddpm.add_argument(
        "--teacher_steps", type=int, default=None, help="Teacher sampling steps (default: its own default)."
    )
    args = train_utils.parse_with_preset(parser, "ddpm", argv)
    if args.residual == "none" and args.residual_scale is None:
        args.residual_scale = 1.0
    # Sampling defaults of the released pipeline. Attention at the lowest UNet level costs the square of its token
    # count: tiles of a few patch sizes are fast. A distilled student overrides these (see `load_teacher`).
    args.release_defaults = {"default_tile_size": 4 * args.resolution}
    return args


def load_teacher(args: argparse.Namespace, accelerator, wavelengths: list) -> HSRDiffusionPipeline:
    """The released pipeline to distil from, frozen; the student's residual settings are set to its own."""
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
    args.release_defaults = {
        "default_num_inference_steps": 1,
        "default_tile_size": teacher.config.default_tile_size,
        "default_tile_overlap": teacher.config.default_tile_overlap,
    }
    return teacher


def inference_scheduler(name: str, config) -> DDPMScheduler:
    # "trailing" spacing keeps the last (noisiest) training timestep in few-step schedules.
    return INFERENCE_SCHEDULERS[name].from_config(config, timestep_spacing="trailing")


def main(args: argparse.Namespace) -> None:
    checkpoint, global_step = train_utils.resolve_resume(args)
    meta = train_utils.read_meta(checkpoint)
    timer = train_utils.Timer(meta.get("wall_time_minutes", 0.0))
    if args.residual_scale is None and "residual_scale" in meta:
        args.residual_scale = meta["residual_scale"]
    accelerator = train_utils.make_accelerator(args)

    # 1. Data: stream patches; check the band count against the model before anything trains
    train_split, validation_split, response = train_utils.load_splits(args, accelerator)
    wavelengths = train_utils.dataset_wavelengths(train_split)
    num_bands = len(wavelengths)
    unet_config = dict(args.preset["unet"])
    if unet_config.get("out_channels", num_bands) != num_bands:
        raise ValueError(
            f"The model config has out_channels={unet_config['out_channels']} but the data has {num_bands} bands."
        )
    train_dataset = train_utils.make_train_dataset(args, train_split, response)

    # 2. Models: closed-form estimator (fitted once, saved beside the checkpoints), UNet, noise scheduler; a
    #    distilled student starts as a copy of its teacher instead
    teacher = load_teacher(args, accelerator, wavelengths) if args.distill_from else None
    if teacher is not None:
        estimator = teacher.estimator
        unet = UNet2DModel.from_pretrained(args.distill_from, subfolder="unet")
        noise_scheduler = DDPMScheduler.from_config(teacher.scheduler.config)
    else:
        estimator = train_utils.load_or_fit_estimator(args, accelerator, train_split, response, wavelengths)
        unet_config.update(in_channels=3 + num_bands * (2 if estimator is not None else 1), out_channels=num_bands)
        unet = UNet2DModel(**unet_config)
        noise_scheduler = DDPMScheduler(
            num_train_timesteps=args.num_train_timesteps,
            beta_schedule=args.beta_schedule,
            prediction_type=args.prediction_type,
            rescale_betas_zero_snr=args.rescale_betas_zero_snr,
            # The residual is not bounded by [-1, 1]: clipping x0 would cut real signal.
            clip_sample=args.residual == "none",
        )
    pipeline = HSRDiffusionPipeline(
        unet=unet, scheduler=noise_scheduler, estimator=estimator, wavelengths=wavelengths, response=response
    )
    processor = pipeline.image_processor

    def condition_and_target(batch):
        """UNet conditioning `[B, 3 (+bands), P, P]`, the estimate in [-1, 1] (or zeros) and the clean cube."""
        rgb, cube = batch["rgb"], batch["cube"]  # [B, 3, P, P], [B, bands, P, P] in [-1, 1]
        if estimator is None:
            return rgb, torch.zeros_like(cube), cube
        with torch.no_grad():
            base = processor.normalize(pipeline.prepare_estimate(processor.denormalize(rgb)))
        return torch.cat([rgb, base], dim=1), base, cube

    if args.residual_scale is None:
        # Scale the residual to a spread of about 0.5, like images in [-1, 1], measured on a few batches.
        probe = torch.utils.data.DataLoader(train_dataset, batch_size=16, shuffle=False)
        spreads = []
        for _, batch in zip(range(4), probe):
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            _, base, cube = condition_and_target(batch)
            spreads.append((cube - base).std())
        args.residual_scale = float(0.5 / torch.stack(spreads).mean().clamp(min=1e-3))
        logger.info(f"residual_scale = {args.residual_scale:.3f}")
    pipeline.register_to_config(residual_scale=args.residual_scale)

    ema_unet = None
    if args.use_ema:
        ema_unet = EMAModel(unet.parameters(), decay=args.ema_decay, model_cls=UNet2DModel, model_config=unet.config)
        ema_unet.to(accelerator.device)

    # accelerate hooks: checkpoints hold diffusers-format folders (`unet/`, `unet_ema/`) besides the optimiser state.
    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            if ema_unet is not None:
                ema_unet.save_pretrained(os.path.join(output_dir, "unet_ema"))
            for model in models:
                model.save_pretrained(os.path.join(output_dir, "unet"))
                weights.pop()

    def load_model_hook(models, input_dir):
        if ema_unet is not None:
            loaded = EMAModel.from_pretrained(os.path.join(input_dir, "unet_ema"), UNet2DModel)
            ema_unet.load_state_dict(loaded.state_dict())
            ema_unet.to(accelerator.device)
        for _ in range(len(models)):
            model = models.pop()
            loaded = UNet2DModel.from_pretrained(input_dir, subfolder="unet")
            model.register_to_config(**loaded.config)
            model.load_state_dict(loaded.state_dict())

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)

    # 3. Optimiser, data loader, LR schedule
    optimizer = torch.optim.Adam(unet.parameters(), lr=args.learning_rate)
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset,
        batch_size=args.train_batch_size,
        shuffle=True,
        num_workers=args.dataloader_num_workers,
        drop_last=len(train_dataset) >= args.train_batch_size * accelerator.num_processes,
    )
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
    noise_generator = train_utils.CheckpointedGenerator(args.seed + accelerator.process_index, accelerator.device)
    accelerator.register_for_checkpointing(noise_generator)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers(
            "train_ddpm", config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        )

    # 4. Resume: restores weights, optimiser, LR schedule and RNG states; the data position is skipped to below
    first_epoch, resume_batches = 0, 0
    if checkpoint is not None:
        accelerator.print(f"Resuming from {checkpoint}")
        accelerator.load_state(str(checkpoint))
        first_epoch = global_step // steps_per_epoch
        resume_batches = (global_step % steps_per_epoch) * args.gradient_accumulation_steps

    logger.info(f"{len(train_split)} scenes, {len(train_dataset)} patches per epoch, {max_train_steps} steps")
    if checkpoint is not None and train_utils.budget_spent(accelerator, timer, args.max_train_minutes):
        max_train_steps = global_step  # resumed after the time budget was spent: release this checkpoint as it is
    progress_bar = tqdm(
        range(max_train_steps), initial=global_step, disable=not accelerator.is_local_main_process, desc="Steps"
    )
    scale = args.residual_scale
    if teacher is not None:
        # The one timestep the released one-step sampler visits (the noisiest, with trailing spacing).
        sampler = inference_scheduler(args.inference_scheduler, noise_scheduler.config)
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
            condition, base, cube = condition_and_target(batch)
            clean = (cube - base) * scale  # [B, bands, P, P]
            noise = torch.randn(clean.shape, generator=noise_generator.generator, device=clean.device)
            if teacher is not None:
                # Distillation: from the pure noise the sampler starts with, predict the teacher's sample for it.
                timesteps = torch.full((clean.shape[0],), student_timestep, device=clean.device)
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
                clean = (processor.normalize(sampled.to(clean.device)) - base) * scale
            else:
                timesteps = torch.randint(
                    0,
                    noise_scheduler.config.num_train_timesteps,
                    (clean.shape[0],),
                    generator=noise_generator.generator,
                    device=clean.device,
                )
                noisy = noise_scheduler.add_noise(clean, noise, timesteps)

            with accelerator.accumulate(unet):
                # Condition first, then the noisy residual: [B, 3 (+bands) + bands, P, P].
                model_output = unet(torch.cat([condition, noisy], dim=1), timesteps).sample
                output, target = model_output, clean
                if teacher is not None:
                    # Compare what the pipeline returns: the RGB-consistent projection of the predicted cube. The
                    # projection restores what the camera sees, so the student spends no capacity on it.
                    predicted = pipeline._to_clean(model_output.float(), noisy, timesteps[:, None, None, None])
                    predicted = processor.project(processor.denormalize(base + predicted / scale), rgb)
                    output = (processor.normalize(predicted) - base) * scale
                elif args.prediction_type == "epsilon":
                    target = noise
                elif args.prediction_type == "v_prediction":
                    target = noise_scheduler.get_velocity(clean, noise, timesteps)
                error = F.mse_loss if args.loss == "mse" else F.l1_loss
                per_sample = error(output.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
                if args.snr_gamma is not None and teacher is None:
                    # Min-SNR-gamma (Hang et al. 2023), expressed for each prediction target.
                    snr = compute_snr(noise_scheduler, timesteps)
                    clipped = torch.clamp(snr, max=args.snr_gamma)
                    if args.prediction_type == "epsilon":
                        per_sample = per_sample * clipped / snr
                    elif args.prediction_type == "v_prediction":
                        per_sample = per_sample * clipped / (snr + 1)
                    else:
                        per_sample = per_sample * clipped
                loss = per_sample.mean()
                if args.sam_weight or args.mrae_weight:
                    if teacher is not None:  # the student's projected cube against the teacher's sample
                        predicted_cube, target_cube = predicted.clamp(0, 1), sampled
                    else:
                        predicted_clean = pipeline._to_clean(
                            model_output.float(), noisy, timesteps[:, None, None, None]
                        )
                        predicted_cube = processor.denormalize(base + predicted_clean / scale).clamp(0, 1)
                        target_cube = processor.denormalize(cube)
                    loss = loss + train_utils.spectral_losses(
                        predicted_cube, target_cube, args.sam_weight, args.mrae_weight
                    )
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
                train_utils.save_checkpoint(
                    accelerator, args.output_dir, global_step, args.checkpoints_total_limit, meta
                )
                if train_utils.budget_spent(accelerator, timer, args.max_train_minutes):
                    max_train_steps = global_step  # the time budget ends the run at this checkpoint
            if global_step % args.validation_steps == 0 and global_step < max_train_steps:
                values, grid = run_validation(
                    args, accelerator, unet, ema_unet, noise_scheduler, pipeline, validation_split
                )
                train_utils.log_validation(accelerator, values, grid, global_step)
            if global_step >= max_train_steps:
                break
        if global_step >= max_train_steps:
            break

    # 5. Save the released pipeline (EMA weights when enabled) with a filled-in model card
    accelerator.wait_for_everyone()
    values, _ = run_validation(args, accelerator, unet, ema_unet, noise_scheduler, pipeline, validation_split)
    if accelerator.is_main_process:
        final = build_pipeline(accelerator, unet, ema_unet, noise_scheduler, pipeline, args)
        final.save_pretrained(args.output_dir)
        train_utils.write_model_card(
            args,
            args.output_dir,
            {
                "training_command": args.command,
                "hardware": train_utils.machine_description(accelerator),
                "wall_time_minutes": f"{timer.minutes():.1f}",
                "train_steps": global_step,
                "train_scenes": len(train_split),
                "validation_metrics": train_utils.format_metrics(values),
                "validation_steps_used": args.validation_inference_steps,
                "prediction_type": args.prediction_type,
                "residual": args.residual,
                "resolution": args.resolution,
                "batch_size": args.train_batch_size * accelerator.num_processes,
                "learning_rate": args.learning_rate,
                "response": response,
            },
        )
        if args.push_to_hub:
            train_utils.push_folder(args, args.output_dir)
    accelerator.wait_for_everyone()
    # Release the DDP wrapper (and its gloo reducer) while the process group still exists: dropping it after
    # `end_training` destroyed the group can hang the process at exit.
    del unet, optimizer, train_dataloader, lr_scheduler
    accelerator.free_memory()
    accelerator.end_training()


def build_pipeline(accelerator, unet, ema_unet, noise_scheduler, pipeline, args) -> HSRDiffusionPipeline:
    """The released pipeline: a copy of the (EMA) UNet, the inference scheduler, the estimator and the config."""
    model = accelerator.unwrap_model(unet)
    if ema_unet is not None:
        model = UNet2DModel.from_config(model.config)
        ema_unet.copy_to(model.parameters())
    return HSRDiffusionPipeline(
        unet=model,
        scheduler=inference_scheduler(args.inference_scheduler, noise_scheduler.config),
        estimator=pipeline.estimator,
        wavelengths=pipeline.config.wavelengths,
        response=pipeline.config.response,
        residual_scale=args.residual_scale,
        **args.release_defaults,
    )


def run_validation(args, accelerator, unet, ema_unet, noise_scheduler, pipeline, validation_split):
    released = build_pipeline(accelerator, unet, ema_unet, noise_scheduler, pipeline, args).to(accelerator.device)
    released.set_progress_bar_config(disable=True)
    released.unet.eval()
    values, grid = train_utils.validate(
        released,
        validation_split,
        args,
        pipeline.config.response,
        pipeline.config.wavelengths,
        accelerator,
        {"num_inference_steps": args.validation_inference_steps, "generator": torch.Generator().manual_seed(0)},
    )
    unet.train()
    return values, grid


if __name__ == "__main__":
    main(parse_args())
