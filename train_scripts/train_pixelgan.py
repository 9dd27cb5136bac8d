"""Train the pixel-based cGAN of hsr-diffusers (`HSRFeedForwardPipeline`), or a feed-forward baseline, with 🤗 accelerate.

    accelerate launch train_scripts/train_pixelgan.py --train_data_dir data/cave --model_config small --output_dir gan-cave

The pix2pix recipe (junyanz/pytorch-CycleGAN-and-pix2pix, `models/pix2pix_model.py`) with its defaults visible as flags:
L1 weight 100 plus a vanilla GAN loss, Adam lr 2e-4 with beta1 0.5, a 1x1 PixelGAN discriminator, D loss halved and D
frozen during the generator step. `--gan_weight 0` trains the generator as a plain regressor, and `--generator awan`,
`--generator mst_plus_plus` or `--model_config pixel_mlp` (the per-pixel MLP baseline) trains those baselines with the
same data, losses and checkpoint rule.
"""

import argparse
import functools
import os

import script_args
import script_data
import script_model_card
import script_training
import script_validation
import torch
import torch.nn as nn
from accelerate.logging import get_logger
from script_losses import spectral_loss

from hsr_diffusers import (
    AWAN,
    HSRFeedForwardPipeline,
    HSRPixelGANGenerator,
    MSTPlusPlus,
    PatchDiscriminator,
    PixelDiscriminator,
    PixelMLP,
)


logger = get_logger(__name__, log_level="INFO")

GENERATORS = {"pix2pix": HSRPixelGANGenerator, "awan": AWAN, "mst_plus_plus": MSTPlusPlus, "pixel_mlp": PixelMLP}
DISCRIMINATORS = {"pixel": PixelDiscriminator, "patch": PatchDiscriminator}


class GANLoss(nn.Module):
    """pix2pix's GANLoss: BCE on logits ('vanilla') or least squares ('lsgan') against constant real/fake labels."""

    def __init__(self, gan_mode: str):
        super().__init__()
        self.loss = nn.BCEWithLogitsLoss() if gan_mode == "vanilla" else nn.MSELoss()

    def forward(self, logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
        return self.loss(logits, target)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=script_args.HelpFormatter)
    script_args.add_model_config_arg(
        parser, "pixelgan", sections="'generator', 'unet' (generator kwargs), 'discriminator' and 'training'"
    )
    script_args.add_training_args(
        parser,
        pretrained_help="Fine-tune a released pipeline (a folder, or a bundled name such as "
        "hsr-diffusers/pixelgan-cave): start from its generator and estimator. The architecture then comes from it, "
        "not from --model_config; pass the matching --generator.",
    )
    script_args.add_residual_args(parser)
    gan = parser.add_argument_group("GAN (defaults from pix2pix_model.py and options/train_options.py)")
    gan.add_argument("--generator", type=str, default=None, choices=sorted(GENERATORS), help="None: the preset's.")
    gan.add_argument("--discriminator", type=str, default="pixel", choices=sorted(DISCRIMINATORS))
    gan.add_argument("--ndf", type=int, default=64, help="Discriminator width (pix2pix --ndf 64).")
    gan.add_argument(
        "--gan_mode", type=str, default="vanilla", choices=["vanilla", "lsgan"], help="pix2pix --gan_mode."
    )
    gan.add_argument("--lambda_l1", type=float, default=100.0, help="Weight of the L1 term (pix2pix lambda_L1 = 100).")
    gan.add_argument(
        "--gan_weight", type=float, default=1.0, help="Weight of the adversarial term; 0 = plain regressor."
    )
    gan.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (pix2pix --beta1 0.5).")
    args = script_args.parse_training_args(parser, "train_pixelgan.py", argv, preset_family="pixelgan")
    args.generator = args.generator or args.preset.get("generator", "pix2pix")
    return args


def main(args: argparse.Namespace) -> None:
    checkpoint, global_step, timer = script_training.resolve_resume(args)
    accelerator = script_training.make_accelerator(args)

    # 1. Data, with the band count checked against the model before anything trains
    train_split, validation_split, response, wavelengths = script_data.load_splits(args, accelerator)
    num_bands = len(wavelengths)
    generator_config = dict(args.preset.get("unet", {}))
    if generator_config.get("out_channels", num_bands) != num_bands:
        raise ValueError(
            f"The model config has out_channels={generator_config['out_channels']} but the data has {num_bands} bands."
        )
    train_dataset = script_data.make_train_dataset(args, train_split, response)

    # 2. Models: optional closed-form estimator, generator (registered as `unet`), discriminator
    released = None
    if args.pretrained_model_name_or_path:
        released = script_data.load_released(args, HSRFeedForwardPipeline, wavelengths)
    estimator = script_data.load_or_fit_estimator(
        args, accelerator, train_split, response, wavelengths, released=released
    )
    generator_class = GENERATORS[args.generator]
    if released is not None:
        if not isinstance(released.unet, generator_class):
            raise ValueError(
                f"{args.pretrained_model_name_or_path} holds a {type(released.unet).__name__}; pass the matching "
                f"--generator (got {args.generator})."
            )
        unet = released.unet
    else:
        generator_config.update(in_channels=3 + (num_bands if estimator is not None else 0), out_channels=num_bands)
        unet = generator_class(**generator_config)
    discriminator_class = DISCRIMINATORS[args.discriminator]
    # The discriminator sees the condition first, then the cube: D(cat(rgb, cube)) as pix2pix's D(cat(real_A, B)).
    discriminator = discriminator_class(in_channels=3 + num_bands, ndf=args.ndf)
    use_gan = args.gan_weight > 0
    # Every generator has image-wide operations (pix2pix's InstanceNorm statistics, AWAN's non-local block, MST++'s
    # spectral attention pooled over all pixels): like the DDPM, the released pipeline runs on tiles of four training
    # patches by default, close to what training saw, with memory bounded (AWAN's block costs the square of the pixels).
    default_tile_size = 4 * args.resolution
    if args.generator == "pixel_mlp":  # per pixel: tiles only bound the memory of the hidden layers
        default_tile_size = 256
    pipeline = HSRFeedForwardPipeline(
        unet=unet,
        estimator=estimator,
        wavelengths=wavelengths,
        response=response,
        default_tile_size=default_tile_size,
    )
    processor = pipeline.image_processor
    multiple = unet.downsample_factor
    if args.resolution % multiple:
        raise ValueError(f"--resolution must be a multiple of {multiple} for this generator, got {args.resolution}.")

    ema_unet = script_training.make_ema(args, unet, accelerator)
    script_training.register_checkpoint_hooks(accelerator, generator_class, ema_unet, discriminator_class)

    # 3. Optimisers, data loader, LR schedules
    betas = (args.beta1, 0.999)
    optimizer_g = torch.optim.Adam(unet.parameters(), lr=args.learning_rate, betas=betas)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=args.learning_rate, betas=betas)
    train_dataloader = script_data.make_train_dataloader(args, train_dataset, accelerator)
    progress = script_training.TrainingProgress(args, accelerator, train_dataloader, timer)
    lr_scheduler_g, lr_scheduler_d = progress.lr_scheduler(optimizer_g), progress.lr_scheduler(optimizer_d)
    (unet, discriminator, optimizer_g, optimizer_d, train_dataloader, lr_scheduler_g, lr_scheduler_d) = (
        accelerator.prepare(
            unet, discriminator, optimizer_g, optimizer_d, train_dataloader, lr_scheduler_g, lr_scheduler_d
        )
    )
    criterion_gan = GANLoss(args.gan_mode)
    validate = functools.partial(run_validation, args, accelerator, unet, ema_unet, pipeline, validation_split)

    # 4. Train, resuming from a checkpoint: weights, optimisers, LR schedules and RNG states, then the data position
    num_parameters = sum(p.numel() for p in unet.parameters())
    logger.info(f"{args.generator}: {num_parameters:,} parameters, {progress.budget}")
    progress.start("train_pixelgan", checkpoint, global_step)
    for epoch in progress.epochs():
        unet.train()
        discriminator.train()
        for batch in progress.epoch_batches(epoch, train_dataset, train_dataloader):
            real_a, real_b = batch["rgb"], batch["cube"]  # pix2pix names: A = RGB, B = cube, both in [-1, 1]
            with accelerator.accumulate(unet, discriminator):
                # Generator forward, as HSRFeedForwardPipeline.predict does it, through the (possibly wrapped) module.
                model_input, base = real_a, 0.0
                if estimator is not None:
                    with torch.no_grad():
                        base = processor.normalize(pipeline.prepare_estimate(processor.denormalize(real_a)))
                    model_input = torch.cat([real_a, base], dim=1)
                fake_b = base + unet(model_input).sample  # [B, bands, P, P]

                # Discriminator step: real pairs towards 1, generated pairs towards 0, loss halved as in pix2pix.
                loss_d = torch.zeros((), device=fake_b.device)
                if use_gan:
                    discriminator.requires_grad_(True)
                    pred_fake = discriminator(torch.cat([real_a, fake_b.detach()], dim=1)).sample
                    pred_real = discriminator(torch.cat([real_a, real_b], dim=1)).sample
                    loss_d = 0.5 * (criterion_gan(pred_fake, False) + criterion_gan(pred_real, True))
                    accelerator.backward(loss_d)
                    optimizer_d.step()
                    lr_scheduler_d.step()
                    optimizer_d.zero_grad()

                # Generator step with D frozen: fool D, stay close to the truth in L1 (and spectral terms).
                loss_g_l1 = nn.functional.l1_loss(fake_b, real_b)
                loss_g = args.lambda_l1 * loss_g_l1
                if use_gan:
                    discriminator.requires_grad_(False)
                    loss_g = loss_g + args.gan_weight * criterion_gan(
                        discriminator(torch.cat([real_a, fake_b], dim=1)).sample, True
                    )
                if args.sam_weight or args.mrae_weight:
                    loss_g = loss_g + spectral_loss(
                        processor.denormalize(fake_b).clamp(0, 1),
                        processor.denormalize(real_b),
                        args.sam_weight,
                        args.mrae_weight,
                    )
                script_training.optimizer_step(
                    accelerator, loss_g, unet, optimizer_g, lr_scheduler_g, args.max_grad_norm
                )

            logs = {"loss_g": loss_g.detach().item(), "loss_g_l1": loss_g_l1.detach().item(), "loss_d": loss_d.item()}
            if accelerator.sync_gradients and progress.end_of_step(logs, unet, ema_unet, validate):
                break

    # 5. Validate and save the released pipeline (generator only; the discriminator stays in the checkpoints) with a
    #    model card of this run's settings
    facts = progress.final_validation(validate, train_split, validation_split, response)
    if accelerator.is_main_process:
        final = build_pipeline(accelerator, unet, ema_unet, pipeline)
        accelerator.unwrap_model(discriminator).save_pretrained(os.path.join(args.output_dir, "discriminator"))
        adversarial = f"{args.gan_mode} GAN loss weight {args.gan_weight:g}" if use_gan else "no GAN loss"
        facts.update(
            generator=args.generator,
            model=script_model_card.describe_model(final.unet, args, args.preset.get("unet", {})),
            discriminator=f"`{args.discriminator}` (ndf {args.ndf})" if use_gan else "none (gan_weight 0)",
            residual=args.residual,
            beta1=f"{args.beta1:g}",
            loss=f"L1 weight {args.lambda_l1:g}, {adversarial}",
            start=f"fine-tuned from the released pipeline `{args.pretrained_model_name_or_path}`"
            if args.pretrained_model_name_or_path
            else "trained from random initialisation",
        )
        script_training.save_release(args, final, facts)
    # Drop the prepared objects (with any DDP wrapper) before script_training.end_training ends the process group.
    del unet, discriminator, optimizer_g, optimizer_d, train_dataloader, lr_scheduler_g, lr_scheduler_d, validate
    script_training.end_training(accelerator)


def build_pipeline(accelerator, unet, ema_unet, pipeline) -> HSRFeedForwardPipeline:
    """The released pipeline: the (EMA) generator, the estimator and the pipeline config."""
    return HSRFeedForwardPipeline(
        unet=script_training.released_model(accelerator, unet, ema_unet),
        estimator=pipeline.estimator,
        wavelengths=pipeline.config.wavelengths,
        response=pipeline.config.response,
        default_tile_size=pipeline.config.default_tile_size,
    )


def run_validation(args, accelerator, unet, ema_unet, pipeline, validation_split):
    released = build_pipeline(accelerator, unet, ema_unet, pipeline)
    return script_validation.validate_release(released, unet, validation_split, args, accelerator, {})


if __name__ == "__main__":
    main(parse_args())
