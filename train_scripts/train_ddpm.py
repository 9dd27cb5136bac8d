"""Train the conditional DDPM of hsr-diffusers (`HSRDiffusionPipeline`) with 🤗 accelerate.

    accelerate launch train_scripts/train_ddpm.py --train_data_dir data/cave --model_config small --output_dir ddpm-cave

Skeleton of diffusers' `examples/unconditional_image_generation/train_unconditional.py`: parse_args() -> main(args),
accelerate save/load hooks writing diffusers-format folders, EMA, checkpoint-N with a total limit, resume from
'latest', validation through the released pipeline class, and `save_pretrained` at the end. One-step distillation of a
trained model is `distill_ddpm.py`.
"""

import argparse
import functools

import script_args
import script_data
import script_ddpm
import script_model_card
import script_training
import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import compute_snr
from script_checkpoints import read_checkpoint_meta
from script_losses import spectral_loss

from hsr_diffusers import HSRDiffusionPipeline


logger = get_logger(__name__, log_level="INFO")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=script_args.HelpFormatter)
    script_args.add_model_config_arg(
        parser, "ddpm", sections="'unet' (UNet2DModel kwargs without in/out channels) and optional 'training'"
    )
    script_args.add_training_args(
        parser,
        pretrained_help="Fine-tune a released pipeline (a folder, or a bundled name such as hsr-diffusers/ddpm-cave): "
        "start from its UNet, estimator, noise schedule, prediction type, residual scale and sampling defaults. The "
        "architecture then comes from it, not from --model_config.",
    )
    script_args.add_residual_args(parser)
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
    script_ddpm.add_inference_args(
        ddpm,
        validation_inference_steps=10,
        help="Scheduler saved with the pipeline (and used for validation), built from the training scheduler config.",
    )
    args = script_args.parse_training_args(parser, "train_ddpm.py", argv, preset_family="ddpm")
    if args.residual == "none" and args.residual_scale is None:
        args.residual_scale = 1.0
    # Sampling defaults of the released pipeline. Attention at the lowest UNet level costs the square of its token
    # count: tiles of a few patch sizes are fast.
    args.release_defaults = {"default_tile_size": 4 * args.resolution}
    return args


def main(args: argparse.Namespace) -> None:
    checkpoint, global_step, timer = script_training.resolve_resume(args)
    meta = read_checkpoint_meta(checkpoint)
    if args.residual_scale is None and "residual_scale" in meta:
        args.residual_scale = meta["residual_scale"]
    accelerator = script_training.make_accelerator(args)

    # 1. Data: stream patches; check the band count against the model before anything trains
    train_split, validation_split, response, wavelengths = script_data.load_splits(args, accelerator)
    num_bands = len(wavelengths)
    unet_config = dict(args.preset["unet"])
    if unet_config.get("out_channels", num_bands) != num_bands:
        raise ValueError(
            f"The model config has out_channels={unet_config['out_channels']} but the data has {num_bands} bands."
        )
    train_dataset = script_data.make_train_dataset(args, train_split, response)

    # 2. Models: closed-form estimator (fitted once, saved beside the checkpoints), UNet, noise scheduler; or all of
    #    them from the released pipeline being fine-tuned
    if args.pretrained_model_name_or_path:
        released = script_data.load_released(args, HSRDiffusionPipeline, wavelengths)
        args.prediction_type = released.scheduler.config.prediction_type
        if args.residual_scale is None:
            args.residual_scale = released.config.residual_scale
        args.release_defaults = {
            key: released.config[key]
            for key in ("default_num_inference_steps", "default_tile_size", "default_tile_overlap")
        }
        estimator = script_data.load_or_fit_estimator(
            args, accelerator, train_split, response, wavelengths, released=released
        )
        unet = released.unet
        noise_scheduler = DDPMScheduler.from_config(released.scheduler.config)
    else:
        estimator = script_data.load_or_fit_estimator(args, accelerator, train_split, response, wavelengths)
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
            _, base, cube = script_ddpm.ddpm_condition(pipeline, batch)
            spreads.append((cube - base).std())
        args.residual_scale = float(0.5 / torch.stack(spreads).mean().clamp(min=1e-3))
        logger.info(f"residual_scale = {args.residual_scale:.3f}")
    pipeline.register_to_config(residual_scale=args.residual_scale)

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
    progress.start("train_ddpm", checkpoint, global_step)
    scale = args.residual_scale
    for epoch in progress.epochs():
        unet.train()
        for batch in progress.epoch_batches(epoch, train_dataset, train_dataloader):
            # Diffuse the scaled residual over the estimate: x0 = (cube - estimate) * scale.
            condition, base, cube = script_ddpm.ddpm_condition(pipeline, batch)
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
                script_training.optimizer_step(accelerator, loss, unet, optimizer, lr_scheduler, args.max_grad_norm)

            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0]}
            if accelerator.sync_gradients and progress.end_of_step(logs, unet, ema_unet, validate):
                break

    # 5. Validate and save the released pipeline (EMA weights when enabled) with a model card of this run's settings
    facts = progress.final_validation(validate, train_split, validation_split, response)
    if accelerator.is_main_process:
        final = script_ddpm.build_ddpm_pipeline(accelerator, unet, ema_unet, noise_scheduler, pipeline, args)
        facts.update(script_ddpm.ddpm_card_facts(args, noise_scheduler))
        facts["model"] = script_model_card.describe_model(final.unet, args, args.preset["unet"])
        if args.pretrained_model_name_or_path:
            facts["start"] = f"fine-tuned from the released pipeline `{args.pretrained_model_name_or_path}`"
        else:
            facts["start"] = "trained from random initialisation"
        script_training.save_release(args, final, facts)
    # Drop the prepared objects (with any DDP wrapper) before script_training.end_training ends the process group.
    del unet, optimizer, train_dataloader, lr_scheduler, validate
    script_training.end_training(accelerator)


if __name__ == "__main__":
    main(parse_args())
