"""Inference throughput (megapixels per second) and peak memory of each pipeline against image size.

    python benchmarks/throughput.py --ddpm hsr-diffusers/ddpm-cave --pixelgan hsr-diffusers/pixelgan-cave

Every (pipeline, size) pair runs in a fresh subprocess, so that its peak resident memory (ru_maxrss) is its own. MST++
and AWAN are this package's re-implementations at their published sizes; speed does not depend on their weights, so they
run with random weights unless `--mst` / `--awan` name trained folders. Ratios to MST++ are computed within this run, on
this machine. The input is a bundled example photo resized to each size and converted to each model's camera RGB, as
`hsr reconstruct` does. Every pipeline runs as shipped: its own default steps and tiling (`default_num_inference_steps`,
`default_tile_size`); a pipeline without a tile size of its own is tiled at `--tile_size` (overlap 32) when the image
is larger than one tile, so that memory stays bounded.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

from common import markdown_table, photo_rgb, write_result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ddpm", default="hsr-diffusers/ddpm-cave")
    parser.add_argument("--pixelgan", default="hsr-diffusers/pixelgan-cave")
    parser.add_argument("--mst", default=None, help="Trained MST++ pipeline folder (default: random weights).")
    parser.add_argument("--awan", default=None, help="Trained AWAN pipeline folder (default: random weights).")
    parser.add_argument("--megapixels", type=float, nargs="+", default=[0.25, 1.0, 4.0, 12.0])
    parser.add_argument("--max_megapixels_slow", type=float, default=1.0, help="Largest size for MST++ and AWAN.")
    parser.add_argument("--max_megapixels_ddpm", type=float, default=1.0, help="Largest size for the DDPM.")
    parser.add_argument("--max_megapixels_awan", type=float, default=0.25, help="Largest size for AWAN.")
    parser.add_argument("--ddpm_steps", type=int, default=None, help="Default: the pipeline's own.")
    parser.add_argument(
        "--ddpm_dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="Weights of the DDPM (the others: fp32).",
    )
    parser.add_argument(
        "--only", nargs="+", default=None, help="Run only these pipelines (DDPM, PixelGAN, MST++, AWAN)."
    )
    parser.add_argument("--tile_size", type=int, default=512, help="For pipelines without a default tile size.")
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--output", default="throughput")
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build(name: str, path: str | None, dtype: str = "float32"):
    import torch

    from hsr_diffusers import AWAN, HSRFeedForwardPipeline, HSRPipeline, MSTPlusPlus

    if path:
        return HSRPipeline.from_pretrained(path, dtype=getattr(torch, dtype))
    torch.manual_seed(0)
    if name == "MST++":
        return HSRFeedForwardPipeline(unet=MSTPlusPlus())
    return HSRFeedForwardPipeline(unet=AWAN(num_channels=96), default_tile_size=256)  # as train_pixelgan.py ships it


def worker(spec: dict) -> dict:
    """Runs one pipeline on one synthetic photo-sized image; returns seconds and peak RSS."""
    import torch

    torch.set_grad_enabled(False)
    pipe = build(spec["name"], spec["path"], spec.get("dtype", "float32"))
    pipe.set_progress_bar_config(disable=True)
    side = int(round((spec["megapixels"] * 1e6) ** 0.5))
    height, width = side, int(round(spec["megapixels"] * 1e6 / side))
    rgb = photo_rgb(pipe, height, width)
    kwargs, tile = {}, pipe.config.get("default_tile_size")
    if not tile and height * width > spec["tile_size"] ** 2:
        tile = spec["tile_size"]
        kwargs = {"tile_size": tile, "tile_overlap": 32}
    if spec["kind"] == "ddpm":
        kwargs.update(num_inference_steps=spec["steps"], generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    pipe(rgb, **kwargs)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    steps = spec["steps"] or pipe.config.get("default_num_inference_steps")
    return {"seconds": seconds, "peak_mib": peak_mib, "height": height, "width": width, "tile": tile, "steps": steps}


def _settings(result: dict) -> str:
    text = f"tiles {result['tile']}" if result["tile"] else "whole image"
    return f"{result['steps']} steps, {text}" if result["steps"] else text


def main(args):
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    pipelines = [
        (
            "DDPM" + (f" ({args.ddpm_dtype})" if args.ddpm_dtype != "float32" else ""),
            "ddpm",
            args.ddpm,
            args.max_megapixels_ddpm,
        ),
        ("PixelGAN", "gan", args.pixelgan, None),
        ("MST++", "gan", args.mst, args.max_megapixels_slow),
        ("AWAN", "gan", args.awan, min(args.max_megapixels_slow, args.max_megapixels_awan)),
    ]
    if args.only:
        pipelines = [p for p in pipelines if p[0].split(" ")[0] in args.only]
    rows, speed = [], {}
    for label, kind, path, largest in pipelines:
        for megapixels in args.megapixels:
            if largest is not None and megapixels > largest:
                rows.append([label, megapixels, "-", "-", f"skipped (over {largest:g} MP for this model)", "-", "-"])
                continue
            spec = {
                "name": label,
                "kind": kind,
                "path": path,
                "megapixels": megapixels,
                "steps": args.ddpm_steps,
                "dtype": args.ddpm_dtype if kind == "ddpm" else "float32",
                "tile_size": args.tile_size,
            }
            command = [sys.executable, __file__, "--worker", json.dumps(spec)]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                rows.append([label, megapixels, "-", "-", f"timeout after {args.timeout} s", "-", "-"])
                continue
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                last_line = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
                rows.append([label, megapixels, "-", "-", "failed: " + last_line[:80], "-", "-"])
                continue
            result = json.loads(lines[-1][len("RESULT ") :])
            mp_per_s = megapixels / result["seconds"]
            speed[(label, megapixels)] = mp_per_s
            rows.append(
                [
                    label,
                    megapixels,
                    f"{result['height']}x{result['width']}",
                    _settings(result),
                    round(result["seconds"], 2),
                    round(mp_per_s, 4),
                    round(result["peak_mib"]),
                ]
            )
            print(rows[-1], flush=True)

    ratio_rows = []
    for label, *_ in pipelines:
        for megapixels in args.megapixels:
            if (label, megapixels) in speed and ("MST++", megapixels) in speed:
                ratio_rows.append(
                    [label, megapixels, round(speed[(label, megapixels)] / speed[("MST++", megapixels)], 2)]
                )
    body = (
        markdown_table(["pipeline", "megapixels", "image", "settings", "seconds", "MP/s", "peak RSS (MiB)"], rows)
        + "\n\nThroughput relative to MST++ at the same size (same run, same machine):\n\n"
        + markdown_table(["pipeline", "megapixels", "x MST++"], ratio_rows)
        + "\n"
    )
    write_result(args.output, "Inference throughput and peak memory", body)


if __name__ == "__main__":
    main(parse_args())
