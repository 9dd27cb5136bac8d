"""Throughput and RGB consistency of the bundled pipelines on real scenes, beside the bundled photo, on one thread.

    python benchmarks/real_scenes.py

The inputs are the two CAVE validation scenes (feathers, glass_tiles: dark backgrounds and all) rendered NTIRE-clean
(`render_rgb(cube)`, 8-bit, truncated) at their full 512x512, and the bundled photo `examples/coffee.png` resized to
the scenes' size and converted to camera RGB as `hsr reconstruct` does. Every pipeline runs at its shipped defaults
(steps, tiles, `rgb_consistency=True`) on one torch thread, side by side in this one process, in the same order for
every input; each time is the best of `--repeats` runs, so that background load inflates the ratios as little as
possible. The table goes to `benchmarks/results/<--output>.md`.

MST++ is this package's MSTPlusPlus at the config of `train_scripts/configs/pixelgan_mst_plus_plus.json`, with random
weights unless `--mst` names a trained pipeline folder, and runs without the RGB projection, as the field runs it: the
network's cost does not depend on its weights, while the projection's would. The PixelGAN is also timed without the
projection, to show what the projection costs.

The consistency figures are measured on the NTIRE-clean scenes, against the 8-bit input `u / 255`:
- the fraction of values whose linear re-render `cube @ A` is more than 1/255 away, and its 99.5th percentile;
- the fraction of pixels the `[0, 1]`-bounded projection had to iterate on (the clipped closed-form projection of the
  network's output missed their RGB by more than 1e-6);
- the pixels whose 8-bit RGB no spectrum in [0, 1] renders exactly (outside the camera's gamut, `rgb_gamut_mask`),
  and those that no spectrum renders within 1/255 of (these are the only pixels the projection cannot fit).
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from common import markdown_table, photo_srgb, write_result

from hsr_diffusers import HSRFeedForwardPipeline, HSRPipeline, MSTPlusPlus
from hsr_diffusers.data import load_cube
from hsr_diffusers.spectral import render_rgb, rgb_gamut_mask


ROOT = Path(__file__).resolve().parents[1]
SCENES = ("feathers", "glass_tiles")
PHOTO = "photo (coffee.png)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data_dir",
        default=os.path.join(os.environ.get("HSR_SHARED_DATA") or str(ROOT.parent / "shared" / "data"), "cave"),
        help="CAVE scene folders (default: $HSR_SHARED_DATA/cave, else ../shared/data/cave).",
    )
    parser.add_argument("--ddpm", default="hsr-diffusers/ddpm-cave")
    parser.add_argument("--pixelgan", default="hsr-diffusers/pixelgan-cave")
    parser.add_argument("--mst", default=None, help="Trained MST++ pipeline folder (default: random weights).")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per (pipeline, input); the best time counts.")
    parser.add_argument("--output", default="real_scenes", help="Name of the file in benchmarks/results/.")
    return parser.parse_args(argv)


def load_inputs(data_dir: Path) -> dict[str, np.ndarray]:
    """`{name: uint8 (H, W, 3) NTIRE-clean render}` for the scenes (the 8-bit input the consistency figures compare
    with), plus the photo at the first scene's size as its uint8 sRGB (`PHOTO`, which each pipeline converts)."""
    inputs = {scene: render_rgb(load_cube(data_dir / f"{scene}_ms")) for scene in SCENES}
    inputs[PHOTO] = photo_srgb(*inputs[SCENES[0]].shape[:2])
    return inputs


def build_pipelines(args) -> dict:
    pipelines = {}
    if args.mst:
        pipelines["MST++"] = HSRPipeline.from_pretrained(args.mst)
    else:
        config = json.loads((ROOT / "train_scripts" / "configs" / "pixelgan_mst_plus_plus.json").read_text())
        torch.manual_seed(0)
        pipelines["MST++ (random weights)"] = HSRFeedForwardPipeline(unet=MSTPlusPlus(**config["unet"]).eval())
    pipelines["PixelGAN"] = HSRPipeline.from_pretrained(args.pixelgan)
    pipelines["PixelGAN, no projection"] = pipelines["PixelGAN"]
    pipelines["DDPM"] = HSRPipeline.from_pretrained(args.ddpm)
    for pipe in pipelines.values():
        pipe.set_progress_bar_config(disable=True)
    return pipelines


def run(pipe, rgb, **kwargs):
    if pipe.is_sampler:
        kwargs["generator"] = torch.Generator().manual_seed(0)
    return pipe(rgb, output_type="pt", **kwargs).cubes


def consistency(pipe, cube: torch.Tensor, raw: torch.Tensor, rgb8: np.ndarray) -> dict:
    processor = pipe.image_processor
    target = torch.from_numpy(rgb8 / np.float32(255)).permute(2, 0, 1)[None]
    error = (processor.render(cube) - target).abs() * 255  # [1, 3, H, W], in 8-bit levels
    clipped = processor.project(raw, target).clamp(0.0, 1.0)
    iterated = ((processor.render(clipped) - target).abs() > 1e-6).any(dim=1)
    return {
        "over": (error > 1).float().mean().item(),
        "p995": np.percentile(error.numpy(), 99.5),
        "max": error.max().item(),
        "iterated": iterated.float().mean().item(),
    }


def main(args):
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    inputs = load_inputs(Path(args.data_dir))
    pipelines = build_pipelines(args)
    seconds: dict[tuple[str, str], float] = {}
    outputs = {}
    for _ in range(args.repeats):
        for input_name, rgb in inputs.items():
            for name, pipe in pipelines.items():
                start = time.perf_counter()
                # MST++ as the field runs it; the bundled models at their defaults (projection on).
                projection = not (name.startswith("MST++") or name.endswith("no projection"))
                space = "srgb" if input_name == PHOTO else "linear"  # the pipeline converts the photo itself
                outputs[name, input_name] = run(pipe, rgb, rgb_consistency=projection, input_space=space)
                elapsed = time.perf_counter() - start
                seconds[name, input_name] = min(elapsed, seconds.get((name, input_name), float("inf")))
                print(f"{name} on {input_name}: {elapsed:.2f} s", flush=True)
    mst = next(iter(pipelines))
    height, width = next(iter(inputs.values())).shape[:2]

    header = ["pipeline"] + [f"{i}: s (x MST++)" for i in inputs]
    rows = [
        [name] + [f"{seconds[name, i]:.2f} ({seconds[mst, i] / seconds[name, i]:.2f}x)" for i in inputs]
        for name in pipelines
    ]
    table = markdown_table(header, rows)

    consistency_header = [
        "model",
        "scene",
        "values > 1/255",
        "99.5th pct (/255)",
        "max (/255)",
        "pixels iterated",
        "outside gamut (exact / within 1/255)",
    ]
    consistency_rows = []
    for name in ("PixelGAN", "DDPM"):
        pipe = pipelines[name]
        for scene in SCENES:
            rgb8 = inputs[scene]
            raw = run(pipe, rgb8, rgb_consistency=False)
            figures = consistency(pipe, outputs[name, scene], raw, rgb8)
            outside = (~rgb_gamut_mask(rgb8)).mean()
            unreachable = int((~rgb_gamut_mask(rgb8, tolerance=1 / 255)).sum())
            consistency_rows.append(
                [name, scene, f"{figures['over']:.2%}", f"{figures['p995']:.3f}", f"{figures['max']:.3f}"]
                + [f"{figures['iterated']:.2%}", f"{outside:.2%} / {unreachable} pixels"]
            )
    body = (
        f"One torch thread, every pipeline side by side in one process; best of {args.repeats} runs.\n\n"
        f"Seconds per {height}x{width} image at the shipped defaults (`rgb_consistency=True`; MST++ and the row marked "
        f"'no projection' without it), and throughput relative to {mst} on the same input:\n\n{table}\n\n"
        "RGB consistency of the outputs on the NTIRE-clean scenes (re-render `cube @ A` against the 8-bit input):\n\n"
        + markdown_table(consistency_header, consistency_rows)
        + "\n"
    )
    write_result(args.output, "Throughput and RGB consistency on real scenes", body)


if __name__ == "__main__":
    main(parse_args())
