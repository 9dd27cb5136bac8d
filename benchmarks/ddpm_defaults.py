"""Chooses the DDPM pipeline's default number of sampling steps and tile size by a fixed rule on the *training* scenes.

    python benchmarks/ddpm_defaults.py --model hsr-diffusers/ddpm-cave --data /path/to/prepared/cave --split train

Every (steps, tile size) pair is scored on fixed crops of the training scenes (RMSE and SAM of one sample, projection
on, the pipeline's own scheduler), and timed per UNet step on a 1-megapixel photo. The rule: the fastest pair whose
RMSE and SAM are both within `--tolerance` of the best values any pair reaches. The reported (validation) split is not
read, so the defaults cannot be tuned to the numbers reported elsewhere. Given several models (a model and its
distilled student), the same rule chooses among the (model, steps, tile) triples of all of them.
"""

import argparse
import time

import numpy as np
import torch
from common import divide_by_max, fixed_crops, markdown_table, photo_rgb, write_result

from hsr_diffusers import HSRPipeline, metrics
from hsr_diffusers.data.rendering import render_training_rgb


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=["hsr-diffusers/ddpm-cave"], help="One or several models.")
    parser.add_argument("--data", required=True, help="A dataset folder written by `hsr data prepare`.")
    parser.add_argument("--split", default="train", help="Never the split whose numbers are reported.")
    parser.add_argument("--crop_size", type=int, default=256)
    parser.add_argument("--crops_per_scene", type=int, default=1)
    parser.add_argument(
        "--divide_by_max",
        action="store_true",
        help="Divide each crop by its maximum, as `icvl_tables.py` does with the ICVL strips (radiance of any scale).",
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10])
    parser.add_argument(
        "--tiles", type=str, nargs="+", default=["64:16", "128:16", "256:32"], help="tile_size:tile_overlap pairs."
    )
    parser.add_argument("--tolerance", type=float, default=0.02, help="Relative slack on the best RMSE and SAM.")
    parser.add_argument("--timing_megapixels", type=float, default=1.0)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="Weights and UNet inputs.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="ddpm_defaults")
    return parser.parse_args(argv)


def seconds_per_megapixel(pipe, rgb, steps: int, tile_size: int, tile_overlap: int) -> float:
    """Wall time of the whole pipeline call on `rgb`, best of two runs, per megapixel."""
    times = []
    for _ in range(2):
        start = time.perf_counter()
        pipe(rgb, num_inference_steps=steps, tile_size=tile_size, tile_overlap=tile_overlap)
        times.append(time.perf_counter() - start)
    return min(times) / (rgb.shape[0] * rgb.shape[1] / 1e6)


def choose(rows: list[dict], tolerance: float) -> dict:
    """The fastest configuration within `tolerance` of the best RMSE and of the best SAM."""
    best_rmse, best_sam = min(r["rmse"] for r in rows), min(r["sam"] for r in rows)
    eligible = [r for r in rows if r["rmse"] <= best_rmse * (1 + tolerance) and r["sam"] <= best_sam * (1 + tolerance)]
    return min(eligible, key=lambda r: r["seconds_per_mp"])


def main(args):
    crops = fixed_crops(args.data, args.split, args.crop_size, args.crops_per_scene)
    if args.divide_by_max:
        crops = [(name, divide_by_max(cube)) for name, cube in crops]
    side = int(round(args.timing_megapixels**0.5 * 1000))
    rows = []
    for model in args.model:
        rows += score_model(args, model, crops, side)

    chosen = choose(rows, args.tolerance)
    header = ["model", "steps", "tile:overlap", "RMSE", "SAM (rad)", "s / MP", "chosen"]
    table = [
        [
            f"`{r['model']}`",
            r["steps"],
            r["tile"],
            r["rmse"],
            r["sam"],
            r["seconds_per_mp"],
            "**yes**" if r is chosen else "",
        ]
        for r in rows
    ]
    crop_shapes = ", ".join(sorted({f"{crop.shape[0]}x{crop.shape[1]}" for _, crop in crops}))
    scaled = "each divided by its maximum, " if args.divide_by_max else ""
    body = (
        f"Models in {args.dtype}; {len(crops)} fixed crops of the `{args.split}` scenes ({crop_shapes}), {scaled}"
        f"one sample each, seed {args.seed}, projection on. Time: seconds per megapixel of the whole pipeline call on a "
        f"{side}x{side} photo (`examples/coffee.png` resized), best of two runs.\n\n"
        f"Rule: the fastest configuration whose RMSE and SAM are both within {args.tolerance:.0%} of the best values "
        f"in the table.\n\n{markdown_table(header, table)}\n\n"
        f"**Chosen:** `{chosen['model']}`, {chosen['steps']} steps, tiles of {chosen['tile'].split(':')[0]} px with "
        f"{chosen['tile'].split(':')[1]} px overlap.\n"
    )
    write_result(args.output, "DDPM default steps and tile size, chosen on the training scenes", body)
    return chosen


def score_model(args, model: str, crops: list, side: int) -> list[dict]:
    """RMSE, SAM and measured seconds per megapixel (on the photo at `side` x `side`) of every (steps, tile) pair of
    one model."""
    pipe = HSRPipeline.from_pretrained(model, dtype=getattr(torch, args.dtype))
    pipe.set_progress_bar_config(disable=True)
    timing_image = photo_rgb(pipe, side, side)
    rows = []
    for spec in args.tiles:
        tile_size, tile_overlap = (int(v) for v in spec.split(":"))
        for steps in args.steps:
            rmse, sam = [], []
            for _, cube in crops:
                rgb = render_training_rgb(cube, pipe.config.response, pipe.config.wavelengths).astype(np.float32)
                generator = torch.Generator().manual_seed(args.seed)
                pred = pipe(
                    rgb, num_inference_steps=steps, tile_size=tile_size, tile_overlap=tile_overlap, generator=generator
                ).cubes[0]
                rmse.append(metrics.rmse(pred, cube))
                sam.append(metrics.sam(pred, cube))
            row = {
                "model": model,
                "steps": steps,
                "tile": spec,
                "rmse": float(np.mean(rmse)),
                "sam": float(np.mean(sam)),
            }
            row["seconds_per_mp"] = seconds_per_megapixel(pipe, timing_image, steps, tile_size, tile_overlap)
            rows.append(row)
            print(row, flush=True)
    return rows


if __name__ == "__main__":
    main(parse_args())
