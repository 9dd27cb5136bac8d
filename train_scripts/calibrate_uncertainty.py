"""Calibrate a released DDPM's uncertainty on its training scenes and store the calibration in the pipeline's config.

    python train_scripts/calibrate_uncertainty.py --model runs/ddpm-v2 --train_data_dir data/cave
    python train_scripts/calibrate_uncertainty.py --model runs/ddpm-mix --train_data_dir data/cave data/icvl_strips \
        --train_data_split cave_holdout7 icvl

The spread of a few samples (`output.uncertainty`) tracks the error but is too small: the samples share the model's
bias. This script measures, per band, how much the sample standard deviation must be scaled so that `--coverage` of
the true values lie within ±2σ, on random crops of the *training* scenes, half of them rendered clean (NTIRE 2020) and
half as photos (`PhotoDegradation` with its default ranges and the training cameras). This is split-conformal
calibration with the normalised score `|error| / σ`. The per-band factors are written to the pipeline's
`model_index.json` as `uncertainty_scale`, which `HSRDiffusionPipeline` multiplies into `uncertainty`, so
`from_pretrained` restores them, and a short "Uncertainty calibration" section is added to the folder's model card
(`README.md`) when it has one. The validation scenes are never read.

Without `--output_dir` a local model folder is rewritten in place; a bundled model (`hsr-diffusers/ddpm-cave`, inside
the installed package) or a Hub id needs `--output_dir`, which then receives the whole calibrated pipeline.
"""

import argparse
import json
import logging
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import datasets
import numpy as np
import script_data
import torch

import hsr_diffusers
from hsr_diffusers import HSRDiffusionPipeline
from hsr_diffusers.data import get_cube
from hsr_diffusers.data.degradation import PhotoDegradation
from hsr_diffusers.data.rendering import render_training_rgb
from hsr_diffusers.pipelines.auto_pipeline import resolve_pretrained


logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--model",
        required=True,
        help="A released HSRDiffusionPipeline: a local folder (rewritten in place without --output_dir), a bundled "
        "name (hsr-diffusers/ddpm-cave) or a Hub id.",
    )
    parser.add_argument(
        "--output_dir",
        default=None,
        help="Where the calibrated pipeline is written (the whole pipeline, with the model card when the model folder "
        "has one). Default: --model itself when it is a local folder outside the package's bundled models; required "
        "for bundled names and Hub ids.",
    )
    parser.add_argument(
        "--train_data_dir",
        required=True,
        nargs="+",
        help="One or more sources, as the model trained on them: dataset folders written by `hsr data prepare`, or raw "
        "folders (cube files, CAVE scene folders of band PNGs, the ICVL strips) prepared on the fly into a temporary "
        "folder (or --prepared_data_dir). Every training scene of every source is used.",
    )
    parser.add_argument(
        "--train_data_split",
        nargs="+",
        default=None,
        help="The built-in split of each raw source (e.g. `cave_holdout7 icvl`), as in training; default: detected.",
    )
    parser.add_argument(
        "--prepared_data_dir",
        default=None,
        help="Where raw sources were prepared by training (`--prepared_data_dir` of the training run), to reuse them.",
    )
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--crops_per_scene", type=int, default=2, help="Random crops per scene and input kind.")
    parser.add_argument("--crop_size", type=int, default=128)
    parser.add_argument("--num_samples", type=int, default=4, help="Samples per image, as users run it.")
    parser.add_argument("--coverage", type=float, default=0.9, help="Target fraction of true values within ±2σ.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry_run", action="store_true", help="Print the factors without writing them.")
    args = parser.parse_args(argv)
    if not 0 < args.coverage < 1:
        parser.error(f"--coverage must be in (0, 1), got {args.coverage}")
    if args.train_data_split is not None and len(args.train_data_split) != len(args.train_data_dir):
        parser.error(
            f"--train_data_split names {len(args.train_data_split)} splits for {len(args.train_data_dir)} sources."
        )
    if args.output_dir is None and not args.dry_run:
        if is_bundled(args.model):
            parser.error(
                f"--model {args.model} is a model bundled inside the installed package, which calibration must not "
                "rewrite: pass --output_dir for the calibrated pipeline."
            )
        if not (Path(args.model) / "model_index.json").is_file():
            parser.error(
                f"--model {args.model} is not a local pipeline folder to rewrite in place (a Hub id?): pass --output_dir "
                "for the calibrated pipeline."
            )
        args.output_dir = args.model
    arguments = sys.argv[1:] if argv is None else argv
    args.command = shlex.join(["python", "train_scripts/calibrate_uncertainty.py", *arguments])
    return args


def is_bundled(model: str) -> bool:
    """Whether `--model` names (or is the folder of) a model bundled in the package's `pretrained/` folder."""
    bundled = Path(hsr_diffusers.__file__).resolve().parent / "pretrained"
    return Path(resolve_pretrained(model)).resolve().is_relative_to(bundled)


def normalised_errors(pipe: HSRDiffusionPipeline, split: datasets.Dataset, args) -> np.ndarray:
    """`|mean - truth| / σ` of every value of every crop, `[values, bands]`, with σ the raw sample spread."""
    rng = np.random.default_rng(args.seed)
    degradation = PhotoDegradation()
    response, wavelengths = pipe.config.response, list(pipe.config.wavelengths)
    # The spread the samples give, before any calibration already stored in the config.
    applied = np.asarray(pipe.config.get("uncertainty_scale") or 1.0, dtype=np.float32)
    scores = []
    for index in range(len(split)):
        cube = np.asarray(get_cube(split, index), dtype=np.float32)  # [H, W, bands]
        height, width = cube.shape[:2]
        crop_height, crop_width = min(args.crop_size, height), min(args.crop_size, width)  # thin strips: full height
        for crop in range(2 * args.crops_per_scene):
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            patch = cube[top : top + crop_height, left : left + crop_width]
            if crop % 2 == 0:
                rgb = render_training_rgb(patch, response, wavelengths).astype(np.float32)
            else:
                rgb = degradation.with_updates(clean_probability=0.0)(patch, response, wavelengths, rng)
            output = pipe(
                rgb,
                num_samples=args.num_samples,
                generator=torch.Generator().manual_seed(int(rng.integers(2**31))),
            )
            error = np.abs(output.cubes[0] - patch).reshape(-1, patch.shape[-1])
            sigma = output.uncertainty[0].reshape(-1, patch.shape[-1]) / applied
            scores.append(error / np.maximum(sigma, 1e-6))
        logger.info("scene %d/%d done", index + 1, len(split))
    return np.concatenate(scores)


def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(format="%(asctime)s - %(message)s", level=logging.INFO)
    source = resolve_pretrained(args.model)  # a folder, or a Hub id for `from_pretrained` to download
    pipe = HSRDiffusionPipeline.from_pretrained(source)
    pipe.set_progress_bar_config(disable=True)
    with tempfile.TemporaryDirectory() as tmp:
        # Training's layout of --prepared_data_dir (one subfolder per source), in a temporary folder without it.
        sources = argparse.Namespace(**vars(args))
        sources.prepared_data_dir = args.prepared_data_dir or str(Path(tmp) / "prepared")
        splits = args.train_data_split or [None] * len(args.train_data_dir)
        scores, num_scenes = [], 0
        for index, (folder, split_name) in enumerate(zip(args.train_data_dir, splits)):
            prepared = script_data.prepared_dir(sources, pipe.config.response, index)
            data_dir = script_data.prepare_data_dir(folder, prepared, pipe.config.response, split_name)
            split = datasets.load_from_disk(str(data_dir))[args.train_split]
            scores.append(normalised_errors(pipe, split, args))  # [values, bands]
            num_scenes += len(split)
            del split  # memory-mapped from the temporary folder
        scores = np.concatenate(scores)

    # ±2 s σ holds `coverage` of the values of a band when 2 s is that quantile of the band's normalised errors.
    scale = np.quantile(scores, args.coverage, axis=0) / 2.0
    raw = float(np.mean(scores <= 2.0))
    calibrated = float(np.mean(scores <= 2.0 * scale))
    summary = {
        "uncertainty_scale": [round(float(s), 4) for s in scale],
        "raw_within_2sigma": raw,
        "calibrated_within_2sigma": calibrated,
        "num_values": int(scores.shape[0] * scores.shape[1]),
        "num_scenes": num_scenes,
    }
    logger.info(
        "Within ±2σ on the training crops: %.1f %% raw, %.1f %% calibrated; scale %.2f-%.2f",
        100 * raw,
        100 * calibrated,
        scale.min(),
        scale.max(),
    )
    if not args.dry_run:
        output = Path(args.output_dir)
        pipe.register_to_config(uncertainty_scale=summary["uncertainty_scale"])
        pipe.save_pretrained(output)
        # The model folder's card and run facts, carried to a new output folder
        for name in ("README.md", "train_meta.json"):
            if Path(source, name).is_file() and not (output / name).is_file():
                shutil.copyfile(Path(source, name), output / name)
        (output / "uncertainty_calibration.json").write_text(json.dumps({**summary, "args": vars(args)}, indent=2))
        if (output / "README.md").is_file():
            add_card_section(output / "README.md", card_section(summary, args))
        logger.info("Saved the calibrated pipeline in %s", output)
    return summary


CARD_HEADING = "## Uncertainty calibration"


def card_section(summary: dict, args) -> str:
    """The model card's account of the calibration: factors, target, coverage before and after, and the command."""
    scale = summary["uncertainty_scale"]
    crops = 2 * args.crops_per_scene * summary["num_scenes"]
    sentences = [
        "`uncertainty` (the per-band standard deviation of `num_samples` samples) is multiplied by per-band factors of "
        f"{min(scale):.2f}-{max(scale):.2f}, stored as `uncertainty_scale` in `model_index.json` and restored by "
        "`from_pretrained`.",
        f"They were fitted on the training scenes only ({crops} random {args.crop_size}x{args.crop_size} crops of "
        f"{summary['num_scenes']} scenes, half clean renders and half photo-degraded, {args.num_samples} samples each) "
        f"so that {args.coverage:.0%} of the true values lie within ±2σ (split-conformal, score |error| / σ).",
        f"On those crops {summary['raw_within_2sigma']:.1%} of the values were within ±2σ before calibration and "
        f"{summary['calibrated_within_2sigma']:.1%} after.",
    ]
    return f"{CARD_HEADING}\n\n" + "\n".join(sentences) + f"\n\n```bash\n{args.command}\n```\n"


def add_card_section(card: Path, section: str) -> None:
    """Appends `section` to a model card, replacing the section of an earlier calibration."""
    text = card.read_text()
    if CARD_HEADING in text:
        start = text.index(CARD_HEADING)
        end = text.find("\n## ", start + len(CARD_HEADING))
        text = text[:start] + (text[end + 1 :] if end != -1 else "")
    card.write_text(text.rstrip("\n") + "\n\n" + section)


if __name__ == "__main__":
    main(parse_args())
