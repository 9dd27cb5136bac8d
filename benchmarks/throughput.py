"""Inference throughput (megapixels per second) and peak memory of each pipeline against image size.

    python benchmarks/throughput.py --ddpm hsr-diffusers/ddpm-cave --pixelgan hsr-diffusers/pixelgan-cave

Every (pipeline, size) pair runs in a fresh subprocess, so that its peak resident memory (ru_maxrss) is its own. MST++
and AWAN are this package's re-implementations at their published sizes; speed does not depend on their weights, so they
run with random weights unless `--mst` / `--awan` name trained folders. Ratios to MST++ are computed within this run, on
this machine. Images larger than `--tile_size` squared pixels are tiled (`tile_size`, overlap 32).
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, write_result  # noqa: E402


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
    parser.add_argument("--ddpm_steps", type=int, default=10)
    parser.add_argument("--tile_size", type=int, default=256)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--output", default="throughput")
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build(name: str, path: str | None):
    import torch

    from hsr_diffusers import AWAN, HSRPipeline, HSRPixelGANPipeline, MSTPlusPlus

    if path:
        return HSRPipeline.from_pretrained(path)
    torch.manual_seed(0)
    model = MSTPlusPlus() if name == "MST++" else AWAN(num_channels=96)
    return HSRPixelGANPipeline(unet=model)


def worker(spec: dict) -> dict:
    """Runs one pipeline on one synthetic photo-sized image; returns seconds and peak RSS."""
    import torch

    torch.set_grad_enabled(False)
    pipe = build(spec["name"], spec["path"])
    pipe.set_progress_bar_config(disable=True)
    side = int(round((spec["megapixels"] * 1e6) ** 0.5))
    height, width = side, int(round(spec["megapixels"] * 1e6 / side))
    rng = np.random.default_rng(0)
    # Smooth, photo-like content (the models' speed does not depend on it, the projection's iterations do a little).
    coarse = rng.uniform(0.05, 0.6, size=(height // 32 + 2, width // 32 + 2, 3)).astype(np.float32)
    rgb = np.kron(coarse, np.ones((32, 32, 1), np.float32))[:height, :width]
    tile = spec["tile_size"] if height * width > spec["tile_size"] ** 2 else None
    kwargs = {"tile_size": tile, "tile_overlap": 32}
    if spec["kind"] == "ddpm":
        kwargs.update(num_inference_steps=spec["steps"], generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    pipe(rgb, **kwargs)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mib": peak_mib, "height": height, "width": width, "tiled": tile is not None}


def main(args):
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    pipelines = [
        (f"DDPM ({args.ddpm_steps} steps)", "ddpm", args.ddpm, args.max_megapixels_ddpm),
        ("PixelGAN", "gan", args.pixelgan, None),
        ("MST++", "gan", args.mst, args.max_megapixels_slow),
        ("AWAN", "gan", args.awan, min(args.max_megapixels_slow, args.max_megapixels_awan)),
    ]
    rows, speed = [], {}
    for label, kind, path, largest in pipelines:
        for megapixels in args.megapixels:
            if largest is not None and megapixels > largest:
                rows.append([label, megapixels, "-", f"skipped (over {largest:g} MP for this model)", "-", "-"])
                continue
            spec = {
                "name": label,
                "kind": kind,
                "path": path,
                "megapixels": megapixels,
                "steps": args.ddpm_steps,
                "tile_size": args.tile_size,
            }
            command = [sys.executable, __file__, "--worker", json.dumps(spec)]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                rows.append([label, megapixels, "-", f"timeout after {args.timeout} s", "-", "-"])
                continue
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                last_line = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
                rows.append([label, megapixels, "-", "failed: " + last_line[:80], "-", "-"])
                continue
            result = json.loads(lines[-1][len("RESULT ") :])
            mp_per_s = megapixels / result["seconds"]
            speed[(label, megapixels)] = mp_per_s
            rows.append(
                [
                    label,
                    megapixels,
                    f"{result['height']}x{result['width']}" + (" tiled" if result["tiled"] else ""),
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
        markdown_table(["pipeline", "megapixels", "image", "seconds", "MP/s", "peak RSS (MiB)"], rows)
        + "\n\nThroughput relative to MST++ at the same size (same run, same machine):\n\n"
        + markdown_table(["pipeline", "megapixels", "x MST++"], ratio_rows)
        + "\n"
    )
    write_result(args.output, "Inference throughput and peak memory", body)


if __name__ == "__main__":
    main(parse_args())
