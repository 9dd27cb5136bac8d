"""Train the pixel-based cGAN of hsr-diffusers (`HSRPixelGANPipeline`), or a feed-forward baseline, with 🤗 accelerate.

    accelerate launch train_scripts/train_pixelgan.py --train_data_dir data/cave --model_config small --output_dir gan-cave

The pix2pix recipe (junyanz/pytorch-CycleGAN-and-pix2pix, `models/pix2pix_model.py`) with its defaults visible as flags:
L1 weight 100 plus a vanilla GAN loss, Adam lr 2e-4 with beta1 0.5, a 1x1 PixelGAN discriminator, D loss halved and D
frozen during the generator step. `--gan_weight 0` trains the generator as a plain regressor, and `--generator awan` or
`--generator mst_plus_plus` trains those baselines with the same data, losses and checkpoint rule.
"""

import argparse
import math
import os

import script_utils
import torch
import torch.nn as nn
from accelerate.logging import get_logger
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from hsr_diffusers import (
    AWAN,
    HSRPixelGANGenerator,
    HSRPixelGANPipeline,
    MSTPlusPlus,
    PatchDiscriminator,
    PixelDiscriminator,
)
from hsr_diffusers.training_utils import read_checkpoint_meta, save_checkpoint, spectral_loss, write_model_card


logger = get_logger(__name__, log_level="INFO")

GENERATORS = {"pix2pix": HSRPixelGANGenerator, "awan": AWAN, "mst_plus_plus": MSTPlusPlus}
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=script_utils.HelpFormatter)
    parser.add_argument(
        "--model_config",
        type=str,
        default="small",
        help="Preset name (tiny, small, base, awan, mst_plus_plus: train_scripts/configs/pixelgan_<name>.json) or a "
        "JSON path with 'generator', 'unet' (generator kwargs), 'discriminator' and 'training' sections.",
    )
    script_utils.add_training_args(
        parser,
        pretrained_help="Fine-tune a released pipeline (a folder, or a bundled name such as "
        "hsr-diffusers/pixelgan-cave): start from its generator and estimator. The architecture then comes from it, "
        "not from --model_config; pass the matching --generator.",
    )
    script_utils.add_residual_args(parser)
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
    gan.add_argument("--use_ema", action="store_true", help="Keep an EMA of the generator and release it.")
    gan.add_argument("--ema_decay", type=float, default=0.999)
    args = script_utils.parse_training_args(parser, "train_pixelgan.py", argv, preset_family="pixelgan")
    args.generator = args.generator or args.preset.get("generator", "pix2pix")
    return args


def main(args: argparse.Namespace) -> None:
    checkpoint, global_step = script_utils.resolve_resume(args)
    timer = script_utils.Timer(read_checkpoint_meta(checkpoint).get("wall_time_minutes", 0.0))
    accelerator = script_utils.make_accelerator(args)

    # 1. Data, with the band count checked against the model before anything trains
    train_split, validation_split, response = script_utils.load_splits(args, accelerator)
    wavelengths = script_utils.dataset_wavelengths(train_split)
    num_bands = len(wavelengths)
    generator_config = dict(args.preset.get("unet", {}))
    if generator_config.get("out_channels", num_bands) != num_bands:
        raise ValueError(
            f"The model config has out_channels={generator_config['out_channels']} but the data has {num_bands} bands."
        )
    train_dataset = script_utils.make_train_dataset(args, train_split, response)

    # 2. Models: optional closed-form estimator, generator (registered as `unet`), discriminator
    released = None
    if args.pretrained_model_name_or_path:
        released = script_utils.load_released(args, HSRPixelGANPipeline, wavelengths)
    estimator = script_utils.load_or_fit_estimator(
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
    pipeline = HSRPixelGANPipeline(
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

    ema_unet = None
    if args.use_ema:
        ema_unet = EMAModel(
            unet.parameters(), decay=args.ema_decay, model_cls=generator_class, model_config=unet.config
        )
        ema_unet.to(accelerator.device)

    # accelerate hooks: diffusers-format `unet/` and `discriminator/` folders, chosen by type (train_dreambooth.py).
    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            if ema_unet is not None:
                ema_unet.save_pretrained(os.path.join(output_dir, "unet_ema"))
            for model in models:
                folder = "discriminator" if isinstance(model, discriminator_class) else "unet"
                model.save_pretrained(os.path.join(output_dir, folder))
                weights.pop()

    def load_model_hook(models, input_dir):
        if ema_unet is not None:
            loaded = EMAModel.from_pretrained(os.path.join(input_dir, "unet_ema"), generator_class)
            ema_unet.load_state_dict(loaded.state_dict())
            ema_unet.to(accelerator.device)
        for _ in range(len(models)):
            model = models.pop()
            if isinstance(model, discriminator_class):
                loaded = discriminator_class.from_pretrained(input_dir, subfolder="discriminator")
            else:
                loaded = generator_class.from_pretrained(input_dir, subfolder="unet")
            model.load_state_dict(loaded.state_dict())

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)

    # 3. Optimisers, data loader, LR schedules
    betas = (args.beta1, 0.999)
    optimizer_g = torch.optim.Adam(unet.parameters(), lr=args.learning_rate, betas=betas)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=args.learning_rate, betas=betas)
    train_dataloader = script_utils.make_train_dataloader(args, train_dataset, accelerator)
    steps_per_epoch = math.ceil(len(train_dataloader) / accelerator.num_processes / args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_epochs * steps_per_epoch
    num_epochs = math.ceil(max_train_steps / steps_per_epoch)

    def schedule(optimizer):
        return get_scheduler(
            args.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
            num_training_steps=max_train_steps * accelerator.num_processes,
        )

    lr_scheduler_g, lr_scheduler_d = schedule(optimizer_g), schedule(optimizer_d)
    (unet, discriminator, optimizer_g, optimizer_d, train_dataloader, lr_scheduler_g, lr_scheduler_d) = (
        accelerator.prepare(
            unet, discriminator, optimizer_g, optimizer_d, train_dataloader, lr_scheduler_g, lr_scheduler_d
        )
    )
    criterion_gan = GANLoss(args.gan_mode)
    if accelerator.is_main_process and args.report_to != "none":
        config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("train_pixelgan", config=config)

    # 4. Resume: weights, optimisers, LR schedules and RNG states; then skip the batches already seen
    first_epoch, resume_batches = 0, 0
    if checkpoint is not None:
        accelerator.print(f"Resuming from {checkpoint}")
        accelerator.load_state(str(checkpoint))
        first_epoch = global_step // steps_per_epoch
        resume_batches = (global_step % steps_per_epoch) * args.gradient_accumulation_steps

    logger.info(f"{args.generator}: {sum(p.numel() for p in unet.parameters()):,} parameters, {max_train_steps} steps")
    if checkpoint is not None and script_utils.budget_spent(accelerator, timer, args.max_train_minutes):
        max_train_steps = global_step  # resumed after the time budget was spent: release this checkpoint as it is
    progress_bar = tqdm(
        range(max_train_steps), initial=global_step, disable=not accelerator.is_local_main_process, desc="Steps"
    )
    for epoch in range(first_epoch, num_epochs):
        if global_step >= max_train_steps:
            break  # resumed from the final checkpoint: nothing left to train
        unet.train()
        discriminator.train()
        train_dataset.set_epoch(epoch)
        train_dataloader.set_epoch(epoch)
        batches = train_dataloader
        if epoch == first_epoch and resume_batches:
            batches = accelerator.skip_first_batches(train_dataloader, resume_batches)
        for batch in batches:
            real_a, real_b = batch["rgb"], batch["cube"]  # pix2pix names: A = RGB, B = cube, both in [-1, 1]
            with accelerator.accumulate(unet, discriminator):
                # Generator forward, as HSRPixelGANPipeline.predict does it, through the (possibly wrapped) module.
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
                accelerator.backward(loss_g)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                optimizer_g.step()
                lr_scheduler_g.step()
                optimizer_g.zero_grad()

            if not accelerator.sync_gradients:
                continue
            if ema_unet is not None:
                ema_unet.step(unet.parameters())
            global_step += 1
            progress_bar.update(1)
            logs = {"loss_g": loss_g.detach().item(), "loss_g_l1": loss_g_l1.detach().item(), "loss_d": loss_d.item()}
            progress_bar.set_postfix(**logs)
            accelerator.log(logs, step=global_step)

            if global_step % args.checkpointing_steps == 0:
                meta = {"wall_time_minutes": timer.minutes()}
                save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit, meta)
                if script_utils.budget_spent(accelerator, timer, args.max_train_minutes):
                    max_train_steps = global_step  # the time budget ends the run at this checkpoint
            if global_step % args.validation_steps == 0 and global_step < max_train_steps:
                values, grid = run_validation(args, accelerator, unet, ema_unet, pipeline, validation_split)
                script_utils.log_validation(accelerator, values, grid, global_step)
            if global_step >= max_train_steps:
                break
        if global_step >= max_train_steps:
            break

    # 5. Validate and save the released pipeline (generator only; the discriminator stays in the checkpoints) with a
    #    model card of this run's settings
    accelerator.wait_for_everyone()
    values, grid = run_validation(args, accelerator, unet, ema_unet, pipeline, validation_split)
    script_utils.log_validation(accelerator, values, grid, global_step)
    if accelerator.is_main_process:
        final = build_pipeline(accelerator, unet, ema_unet, pipeline)
        final.save_pretrained(args.output_dir)
        accelerator.unwrap_model(discriminator).save_pretrained(os.path.join(args.output_dir, "discriminator"))
        facts = script_utils.run_facts(
            args, accelerator, timer, global_step, train_split, validation_split, values, response
        )
        adversarial = f"{args.gan_mode} GAN loss weight {args.gan_weight:g}" if use_gan else "no GAN loss"
        facts.update(
            generator=args.generator,
            model=script_utils.describe_model(final.unet, args, args.preset.get("unet", {})),
            discriminator=f"`{args.discriminator}` (ndf {args.ndf})" if use_gan else "none (gan_weight 0)",
            residual=args.residual,
            beta1=f"{args.beta1:g}",
            loss=f"L1 weight {args.lambda_l1:g}, {adversarial}",
            start=f"fine-tuned from the released pipeline `{args.pretrained_model_name_or_path}`"
            if args.pretrained_model_name_or_path
            else "trained from random initialisation",
        )
        write_model_card(args.output_dir, facts, script_utils.card_template(args.model_card))
        if args.push_to_hub:
            script_utils.push_folder(args, args.output_dir)
    accelerator.wait_for_everyone()
    # Release the DDP wrappers (and their gloo reducers) while the process group still exists: dropping them after
    # `end_training` destroyed the group can hang the process at exit.
    del unet, discriminator, optimizer_g, optimizer_d, train_dataloader, lr_scheduler_g, lr_scheduler_d
    accelerator.free_memory()
    accelerator.end_training()


def build_pipeline(accelerator, unet, ema_unet, pipeline) -> HSRPixelGANPipeline:
    model = accelerator.unwrap_model(unet)
    if ema_unet is not None:
        model = type(model).from_config(model.config)
        ema_unet.copy_to(model.parameters())
    return HSRPixelGANPipeline(
        unet=model,
        estimator=pipeline.estimator,
        wavelengths=pipeline.config.wavelengths,
        response=pipeline.config.response,
        default_tile_size=pipeline.config.default_tile_size,
    )


def run_validation(args, accelerator, unet, ema_unet, pipeline, validation_split):
    released = build_pipeline(accelerator, unet, ema_unet, pipeline).to(accelerator.device)
    released.set_progress_bar_config(disable=True)
    released.unet.eval()
    values, grid = script_utils.validate(
        released, validation_split, args, pipeline.config.response, pipeline.config.wavelengths, accelerator, {}
    )
    unet.train()
    return values, grid


if __name__ == "__main__":
    main(parse_args())
