"""Fit the root-polynomial regression floor (Finlayson et al. 2015) and save it as a loadable `HSRFeedForwardPipeline`.

    python train_scripts/train_regression.py --train_data_dir data/cave --output_dir runs/root-poly-cave

Closed-form least squares from root-polynomial RGB features to the bands, fitted on random pixels of the training
scenes, each divided by its maximum, with the RGB rendered exactly as the training scripts render it
(`hsr_diffusers.fit_root_polynomial` on `script_data.estimator_cubes`: the same fit as the residual estimator of
`train_ddpm.py` and `train_pixelgan.py`). Seconds on a CPU.

The result is saved as an `HSRFeedForwardPipeline` whose `unet` is the `RootPolynomialRegression`: despite its name, that
pipeline runs any feed-forward generator (the pix2pix generator, AWAN, MST++, this regression), and the contract a
generator meets is written in its class docstring (`hsr_diffusers/pipelines/hsr_pixelgan/pipeline_hsr_pixelgan.py`).
The saved folder loads with `HSRPipeline.from_pretrained` and evaluates with `hsr evaluate` like every learned model;
it is the floor they must clear.
"""

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import script_args
import script_data
import script_model_card
import script_training
import script_validation
from accelerate import Accelerator
from script_model_card import format_metrics

from hsr_diffusers import HSRFeedForwardPipeline
from hsr_diffusers.models import fit_root_polynomial


logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=script_args.HelpFormatter)
    script_args.add_data_args(parser)

    fit = parser.add_argument_group("fit")
    fit.add_argument(
        "--degree",
        "--root_poly_degree",
        dest="degree",
        type=int,
        default=2,
        choices=[1, 2, 3],
        help="Root-polynomial degree: 3, 6 or 13 terms (Finlayson et al. 2015).",
    )
    fit.add_argument(
        "--pixels_per_scene",
        type=int,
        default=20000,
        help="Random training pixels per scene (20000, as the training scripts' estimator).",
    )
    fit.add_argument("--seed", type=int, default=0, help="Seed of the pixel sampling.")

    out = parser.add_argument_group("output")
    out.add_argument("--output_dir", type=str, required=True)
    out.add_argument("--max_validation_scenes", type=int, default=2, help="Scenes scored for the model card.")
    out.add_argument("--validation_tile_size", type=int, default=256)
    out.add_argument("--push_to_hub", action="store_true")
    out.add_argument("--hub_model_id", type=str, default=None)
    out.add_argument("--hub_token", type=str, default=None)
    args = parser.parse_args(argv)
    if (args.dataset_name is None) == (args.train_data_dir is None):
        parser.error("give exactly one of --dataset_name or --train_data_dir")
    if args.pixels_per_scene < 1:
        parser.error(f"--pixels_per_scene must be at least 1, got {args.pixels_per_scene}")
    arguments = sys.argv[1:] if argv is None else argv
    args.command = shlex.join(["python", "train_scripts/train_regression.py", *arguments])
    return args


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    start = time.perf_counter()
    # A single-process Accelerator: `load_splits` and `validate` are shared with the training scripts and expect one.
    accelerator = Accelerator(cpu=True)
    os.makedirs(args.output_dir, exist_ok=True)

    # 1. Data, with the RGB rendering of the training scripts
    train_split, validation_split, response, wavelengths = script_data.load_splits(args, accelerator)

    # 2. Closed-form fit on random training pixels, of the scenes the residual estimator is fitted on
    model = fit_root_polynomial(
        script_data.estimator_cubes(args, train_split, response),
        response,
        wavelengths,
        args.rgb_mode,
        args.degree,
        pixels_per_scene=args.pixels_per_scene,
        seed=args.seed,
    )
    fit_seconds = time.perf_counter() - start
    num_pixels = sum(
        min(args.pixels_per_scene, int(shape[0]) * int(shape[1]))
        for shape in train_split.with_format(None, columns=["shape"])["shape"]
    )
    logger.info("Fitted degree-%d root polynomial on %d pixels in %.1f s.", args.degree, num_pixels, fit_seconds)

    # 3. The released pipeline: the feed-forward pipeline with the regression as the whole model, registered as `unet`
    pipeline = HSRFeedForwardPipeline(unet=model, wavelengths=wavelengths, response=response)
    pipeline.set_progress_bar_config(disable=True)
    values, _ = script_validation.validate(pipeline, validation_split, args, response, wavelengths, accelerator, {})
    pipeline.save_pretrained(args.output_dir)
    write_model_card(args, train_split, num_pixels, fit_seconds, values, response, len(wavelengths), accelerator)
    logger.info("Saved %s", args.output_dir)
    if args.push_to_hub:
        script_training.push_folder(args, args.output_dir)


def write_model_card(args, train_split, num_pixels, fit_seconds, values, response, num_bands, accelerator) -> None:
    """A short README.md: what the model is, how to load it, its (closed-form) training budget and the command."""
    num_terms = {1: 3, 2: 6, 3: 13}[args.degree]
    card = f"""# Root-polynomial regression (degree {args.degree}): RGB to {num_bands} bands

The closed-form floor of hsr-diffusers: per pixel, the spectrum is a linear map of the {num_terms} root-polynomial terms
of the linear RGB (Finlayson, Mackiewicz and Hurlbert, IEEE TIP 2015), fitted by least squares. Exposure invariant, no
spatial context, no iterations: every learned model should beat it. Saved as an `HSRFeedForwardPipeline` (the pipeline for
any feed-forward generator) whose `unet` is a `RootPolynomialRegression`; the pipeline's RGB-consistency projection
applies as for the other models.

## How to use

```python
from hsr_diffusers import HSRPipeline

pipe = HSRPipeline.from_pretrained("{args.output_dir}")
cube = pipe(rgb).cubes[0]  # rgb: linear (H, W, 3) in [0, 1] -> (H, W, bands)
```

## Training details

- **train_steps**: 0 (closed-form least squares, no iterations)
- **training_budget**: one least-squares solve on {num_pixels:,} pixels (up to {args.pixels_per_scene:,} random pixels from each of {train_split.num_rows} training scenes, seed {args.seed})
- **wall_time_minutes**: {fit_seconds / 60:.2f}
- **hardware**: {script_model_card.machine_description(accelerator)}
- **response**: {response}
- **rgb_mode**: {args.rgb_mode}
- **checkpoint_rule**: none to choose (closed form); the validation scenes are not used by the fit
- **training_command**: `{args.command}`

## Evaluation

Validation metrics of the saved pipeline (logged only; MRAE with one 16-bit level as epsilon):

{format_metrics(values)}
"""
    Path(args.output_dir, "README.md").write_text(card)
    facts = {
        "train_steps": 0,
        "training_budget": f"one least-squares solve on {num_pixels:,} pixels",
        "wall_time_minutes": f"{fit_seconds / 60:.2f}",
        "hardware": script_model_card.machine_description(accelerator),
        "num_processes": accelerator.num_processes,
        "training_command": args.command,
    }
    script_model_card.write_run_facts(args.output_dir, facts)


if __name__ == "__main__":
    main(parse_args())
