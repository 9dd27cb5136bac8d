"""Train the conditional DDPM of hsr-diffusers (`HSRDiffusionPipeline`) with 🤗 accelerate.

    accelerate launch train_scripts/train_ddpm.py --train_data_dir data/cave --model_config small --output_dir ddpm-cave

Skeleton of diffusers' `examples/unconditional_image_generation/train_unconditional.py`: parse_args() -> main(args),
accelerate save/load hooks writing diffusers-format folders, EMA, checkpoint-N with a total limit, resume from
'latest', validation through the released pipeline class, and `save_pretrained` at the end. One-step distillation of a
trained model is `distill_ddpm.py`.
"""

import argparse
import math

import script_utils
import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr
from tqdm.auto import tqdm

from hsr_diffusers import HSRDiffusionPipeline
from hsr_diffusers.training_utils import read_checkpoint_meta, save_checkpoint, spectral_loss, write_model_card


logger = get_logger(__name__, log_level="INFO")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=script_utils.HelpFormatter)
    parser.add_argument(
        "--model_config",
        type=str,
        default="small",
        help="Preset name (tiny, small, base: train_scripts/configs/ddpm_<name>.json) or a JSON path with 'unet' "
        "(UNet2DModel kwargs without in/out channels) and optional 'training' (flag defaults) sections.",
    )
    script_utils.add_training_args(
        parser,
        pretrained_help="Fine-tune a released pipeline (a folder, or a bundled name such as hsr-diffusers/ddpm-cave): "
        "start from its UNet, estimator, noise schedule, prediction type, residual scale and sampling defaults. The "
        "architecture then comes from it, not from --model_config.",
    )
    script_utils.add_residual_args(parser)
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
        help="Scale of the residual before diffusion; None: 0.5 / std of the training residual (plain mode: 1).",
    )
    ddpm.add_argument("--use_ema", action="store_true")
    ddpm.add_argument("--ema_decay", type=float, default=0.999)
    ddpm.add_argument(
        "--inference_scheduler",
        type=str,
        default="ddim",
        choices=sorted(script_utils.INFERENCE_SCHEDULERS),
        help="Scheduler saved with the pipeline (and used for validation), built from the training scheduler config.",
    )
    ddpm.add_argument("--validation_inference_steps", type=int, default=10)
    args = script_utils.parse_training_args(parser, "train_ddpm.py", argv, preset_family="ddpm")
    if args.residual == "none" and args.residual_scale is None:
        args.residual_scale = 1.0
    # Sampling defaults of the released pipeline. Attention at the lowest UNet level costs the square of its token
    # count: tiles of a few patch sizes are fast.
    args.release_defaults = {"default_tile_size": 4 * args.resolution}
    return args


def main(args: argparse.Namespace) -> None:
    checkpoint, global_step = script_utils.resolve_resume(args)
    meta = read_checkpoint_meta(checkpoint)
    timer = script_utils.Timer(meta.get("wall_time_minutes", 0.0))
    if args.residual_scale is None and "residual_scale" in meta:
        args.residual_scale = meta["residual_scale"]
    accelerator = script_utils.make_accelerator(args)

    # 1. Data: stream patches; check the band count against the model before anything trains
    train_split, validation_split, response = script_utils.load_splits(args, accelerator)
    wavelengths = script_utils.dataset_wavelengths(train_split)
    num_bands = len(wavelengths)
    unet_config = dict(args.preset["unet"])
    if unet_config.get("out_channels", num_bands) != num_bands:
        raise ValueError(
            f"The model config has out_channels={unet_config['out_channels']} but the data has {num_bands} bands."
        )
    train_dataset = script_utils.make_train_dataset(args, train_split, response)

    # 2. Models: closed-form estimator (fitted once, saved beside the checkpoints), UNet, noise scheduler; or all of
    #    them from the released pipeline being fine-tuned
    if args.pretrained_model_name_or_path:
        released = script_utils.load_released(args, HSRDiffusionPipeline, wavelengths)
        args.prediction_type = released.scheduler.config.prediction_type
        if args.residual_scale is None:
            args.residual_scale = released.config.residual_scale
        args.release_defaults = {
            key: released.config[key]
            for key in ("default_num_inference_steps", "default_tile_size", "default_tile_overlap")
        }
        estimator = script_utils.load_or_fit_estimator(
            args, accelerator, train_split, response, wavelengths, released=released
        )
        unet = released.unet
        noise_scheduler = DDPMScheduler.from_config(released.scheduler.config)
    else:
        estimator = script_utils.load_or_fit_estimator(args, accelerator, train_split, response, wavelengths)
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

    if args.residual_scale is None:
        # Scale the residual to a spread of about 0.5, like images in [-1, 1], measured on a few batches.
        probe = torch.utils.data.DataLoader(train_dataset, batch_size=16, shuffle=False)
        spreads = []
        for _, batch in zip(range(4), probe):
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            _, base, cube = script_utils.ddpm_condition(pipeline, batch)
            spreads.append((cube - base).std())
        args.residual_scale = float(0.5 / torch.stack(spreads).mean().clamp(min=1e-3))
        logger.info(f"residual_scale = {args.residual_scale:.3f}")
    pipeline.register_to_config(residual_scale=args.residual_scale)

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
    if checkpoint is not None and script_utils.budget_spent(accelerator, timer, args.max_train_minutes):
        max_train_steps = global_step  # resumed after the time budget was spent: release this checkpoint as it is
    progress_bar = tqdm(
        range(max_train_steps), initial=global_step, disable=not accelerator.is_local_main_process, desc="Steps"
    )
    scale = args.residual_scale
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
            # Diffuse the scaled residual over the estimate: x0 = (cube - estimate) * scale.
            condition, base, cube = script_utils.ddpm_condition(pipeline, batch)
            clean = (cube - base) * scale  # [B, bands, P, P]
            noise = torch.randn(clean.shape, generator=noise_generator.generator, device=clean.device)
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
                if args.prediction_type == "epsilon":
                    target = noise
                elif args.prediction_type == "v_prediction":
                    target = noise_scheduler.get_velocity(clean, noise, timesteps)
                else:
                    target = clean
                error = F.mse_loss if args.loss == "mse" else F.l1_loss
                per_sample = error(model_output.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
                if args.snr_gamma is not None:
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
                    # Spectral terms on the cube that the scheduler would infer from this output.
                    predicted_clean = pipeline.predict_clean_sample(
                        model_output.float(), noisy, timesteps[:, None, None, None]
                    )
                    predicted_cube = processor.denormalize(base + predicted_clean / scale).clamp(0, 1)
                    loss = loss + spectral_loss(
                        predicted_cube, processor.denormalize(cube), args.sam_weight, args.mrae_weight
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

    # 5. Validate and save the released pipeline (EMA weights when enabled) with a model card of this run's settings
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
        facts["model"] = script_utils.describe_model(final.unet, args, args.preset["unet"])
        if args.pretrained_model_name_or_path:
            facts["start"] = f"fine-tuned from the released pipeline `{args.pretrained_model_name_or_path}`"
        else:
            facts["start"] = "trained from random initialisation"
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
