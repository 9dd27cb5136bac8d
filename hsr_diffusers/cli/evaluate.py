"""`hsr evaluate`: score saved pipelines on a prepared dataset split and write the tables.

    hsr evaluate runs/ddpm-cave runs/pixelgan-cave runs/awan-cave --data data/cave --samples 8 --tile-size 256
    hsr evaluate hsr-diffusers/ddpm-cave --data data/arad_hs --split validation --names ddpm --output-dir eval/arad

Every model sees the same RGB of every scene and is scored by `hsr_diffusers.metrics` (MRAE, RMSE, PSNR, SAM, SSIM,
back-projection MRAE; see `hsr_diffusers.evaluation`). Writes results.md (mean table, per-scene table, uncertainty
calibration for diffusion models run with --samples > 1), results.csv (one row per model and scene) and results.json
to --output-dir, and prints the Markdown. The heavy imports happen when the command runs.
"""

import argparse
import logging
import sys
from pathlib import Path

from hsr_diffusers.cli import choice_of


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers `hsr evaluate` on the `hsr` subparsers."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score saved pipelines on a dataset split (Markdown, CSV, JSON)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="a pipeline folder written by save_pretrained, a bundled name (hsr-diffusers/...) or a Hub id",
    )
    parser.add_argument("--data", required=True, type=Path, help="dataset folder written by `hsr data prepare`")
    parser.add_argument("--split", default="validation", help="split to evaluate (default: validation)")
    parser.add_argument("--crop", type=int, default=0, help="pixels removed from every border before scoring")
    parser.add_argument(
        "--steps", type=int, default=None, help="denoising steps of diffusion models (default: each model's own)"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=1,
        help="samples per image for diffusion models: the mean is scored, the spread is checked for calibration",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling noise, the same for every image")
    parser.add_argument(
        "--tile-size", type=int, default=None, help="run every model tile by tile (default: each model's own tiling)"
    )
    parser.add_argument("--tile-overlap", type=int, default=None, help="tile overlap (default: tile size / 8)")
    parser.add_argument("--max-scenes", type=int, default=None, help="evaluate only the first N scenes")
    parser.add_argument(
        "--output-dir", type=Path, default=Path("hsr_evaluation"), help="where results.md/.csv/.json are written"
    )
    parser.add_argument("--names", nargs="+", default=None, help="one name per MODEL (default: the folder names)")
    parser.add_argument(
        "--no-rgb-consistency", action="store_true", help="turn off the pipelines' RGB-consistency projection"
    )
    parser.add_argument(
        "--rgb-mode",
        type=choice_of("hsr_diffusers.spectral", "RENDER_MODES"),
        default="ntire2020_clean",
        help="RGB rendering for scenes without a paired RGB, one of hsr_diffusers.spectral.RENDER_MODES (default: "
        "%(default)s); use the training scripts' --rgb_mode",
    )
    parser.add_argument(
        "--mrae-eps",
        type=float,
        default=1 / 65535,
        help="added to the target in the MRAE denominator (default: 1/65535, one 16-bit level)",
    )
    parser.add_argument("--device", default=None, help="device to run the models on (default: cpu)")
    parser.set_defaults(func=run_evaluate)
    return parser


def default_name(model: str) -> str:
    """The table name of a model: its folder name (`runs/ddpm-cave/` -> `ddpm-cave`)."""
    return Path(str(model).rstrip("/")).name or str(model)


def run_evaluate(args: argparse.Namespace) -> int:
    names = args.names if args.names is not None else [default_name(model) for model in args.models]
    if len(names) != len(args.models):
        print(f"hsr evaluate: {len(names)} --names for {len(args.models)} models.", file=sys.stderr)
        return 1
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        print(f"hsr evaluate: duplicate model names {duplicates}; give distinct --names.", file=sys.stderr)
        return 1

    from hsr_diffusers.evaluation import evaluate

    logging.basicConfig(format="%(message)s", level=logging.INFO)
    logging.getLogger("hsr_diffusers.evaluation").setLevel(logging.INFO)
    try:
        result = evaluate(
            dict(zip(names, args.models)),
            args.data,
            split=args.split,
            crop=args.crop,
            num_inference_steps=args.steps,
            num_samples=args.samples,
            seed=args.seed,
            tile_size=args.tile_size,
            tile_overlap=args.tile_overlap,
            max_scenes=args.max_scenes,
            rgb_consistency=not args.no_rgb_consistency,
            rgb_mode=args.rgb_mode,
            mrae_eps=args.mrae_eps,
            device=args.device,
        )
    except (FileNotFoundError, OSError, ValueError) as error:
        print(f"hsr evaluate: {error}", file=sys.stderr)
        return 1
    paths = result.save(args.output_dir)
    print(paths["md"].read_text())
    print(f"Wrote {paths['md']}, {paths['csv']} and {paths['json']}.")
    return 0
