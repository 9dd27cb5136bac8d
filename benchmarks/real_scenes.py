"""Throughput and RGB consistency of the bundled pipelines on every real input we have, on one thread.

    python benchmarks/real_scenes.py --mst runs/mst_plus_plus_cave17

The inputs, every one at 512x512:

- all 19 CAVE scenes of `$HSR_SHARED_DATA/cave` (train and validation alike), rendered NTIRE-clean (`render_rgb(cube)`,
  8-bit, truncated), dark backgrounds and all;
- the ICVL strips of `$HSR_SHARED_DATA/icvl_strips` (natural daylight radiance, `load_cube`, rendered the same way).
  A strip is 8-11 lines high, so the strips are cut into 512-pixel-wide pieces (left, middle and right of each) and
  stacked into 512x512 mosaics, the first half of the scenes in one and the second half in the other, each piece
  repeated in order until the mosaic is full;
- the bundled photos (`examples/*.png`, `examples/*.jpg`) resized to 512x512, given to each pipeline as sRGB
  (`input_space="srgb"`): the pipeline converts them to its camera RGB inside the timed call, as for a user.

Every pipeline runs at its shipped defaults (steps, tiles, `rgb_consistency=True`) on one torch thread, side by side in
this one process, in the same order for every input; each time is the best of `--repeats` runs, so that background
load inflates the ratios as little as possible. The time inside the image processor's projections (`project`,
`project_and_clip`) is measured in the same runs and reported as a share of the pipeline's time. The bundled models'
estimate is projected inside the root-polynomial product (`RootPolynomialRegression.consistent_estimate`, the same
operator as `project` after the regression): that part is counted with the network, not with the projections.
Wall-clock and CPU time (of this thread) are both kept: on a shared machine the CPU-time ratios are the steadier ones.

MST++ is this package's MSTPlusPlus at the config of `train_scripts/configs/pixelgan_mst_plus_plus.json`, with random
weights unless `--mst` names a trained pipeline folder, and runs as its authors run it: one forward pass over the whole
image, without the RGB projection. The network's cost does not depend on its weights, while the projection's would. The
PixelGAN is also timed without the projection, to show what the projection costs.

The consistency figures are measured on the NTIRE-clean inputs (CAVE and ICVL), against the 8-bit input `u / 255`:
- the fraction of values whose linear re-render `cube @ A` is more than 1/255 away, and its 99.5th percentile;
- for the PixelGAN, the fraction of pixels the `[0, 1]`-bounded projection had to iterate on (the closed-form projection
  of the network's output has a band outside [0, 1]);
- the pixels whose 8-bit RGB no spectrum in [0, 1] renders exactly (outside the camera's gamut, `rgb_gamut_mask`),
  and those that no spectrum renders within 1/255 of (these are the only pixels the projection cannot fit).

The Markdown goes to `benchmarks/results/<--output>.md`, every number also to `<--output>.json`.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS_DIR, markdown_table, photo_srgb, write_result

from hsr_diffusers import HSRFeedForwardPipeline, HSRPipeline, MSTPlusPlus
from hsr_diffusers.data import load_cube
from hsr_diffusers.spectral import render_rgb, rgb_gamut_mask


ROOT = Path(__file__).resolve().parents[1]
PROJECTIONS = ("project", "project_and_clip")


def parse_args(argv=None):
    shared = os.environ.get("HSR_SHARED_DATA") or str(ROOT.parent / "shared" / "data")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=os.path.join(shared, "cave"), help="CAVE scene folders.")
    parser.add_argument("--icvl_dir", default=os.path.join(shared, "icvl_strips"), help="ICVL strips (.npz).")
    parser.add_argument("--ddpm", default="hsr-diffusers/ddpm-cave")
    parser.add_argument("--pixelgan", default="hsr-diffusers/pixelgan-cave")
    parser.add_argument("--mst", default=None, help="Trained MST++ pipeline folder (default: random weights).")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per (pipeline, input); the best time counts.")
    parser.add_argument("--size", type=int, default=512, help="Height and width of every input.")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N inputs (a quick check).")
    parser.add_argument("--output", default="real_scenes", help="Name of the files in benchmarks/results/.")
    return parser.parse_args(argv)


def icvl_mosaics(icvl_dir: Path, size: int, count: int = 2) -> list[np.ndarray]:
    """`count` `size`x`size` cubes stacked from `size`-pixel-wide pieces of the ICVL strips (see the module docstring)."""
    paths = sorted(icvl_dir.glob("*.npz"))
    groups = [paths[i * len(paths) // count : (i + 1) * len(paths) // count] for i in range(count)]
    mosaics = []
    for group in groups:
        pieces = []
        for path in group:
            strip = load_cube(path)
            width = strip.shape[1]
            pieces += [strip[:, left : left + size] for left in (0, (width - size) // 2, width - size)]
        rows, lines = [], 0
        while lines < size:
            piece = pieces[len(rows) % len(pieces)][: size - lines]
            rows.append(piece)
            lines += len(piece)
        mosaics.append(np.concatenate(rows))
    return mosaics


def load_inputs(args) -> dict[str, np.ndarray]:
    """`{name: RGB}`: uint8 NTIRE-clean renders of the CAVE scenes and ICVL mosaics (the 8-bit input the consistency
    figures compare with), then the photos as uint8 sRGB."""
    inputs = {}
    for folder in sorted(Path(args.data_dir).glob("*_ms")):
        inputs[f"CAVE {folder.name.removesuffix('_ms')}"] = render_rgb(load_cube(folder)[: args.size, : args.size])
    if Path(args.icvl_dir).is_dir():
        for index, mosaic in enumerate(icvl_mosaics(Path(args.icvl_dir), args.size)):
            inputs[f"ICVL mosaic {index + 1}"] = render_rgb(mosaic)
    for photo in sorted([*(ROOT / "examples").glob("*.png"), *(ROOT / "examples").glob("*.jpg")]):
        inputs[f"photo {photo.name}"] = photo_srgb(args.size, args.size, photo.name)  # converted by each pipeline
    return dict(list(inputs.items())[: args.limit])


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
        time_projections(pipe.image_processor)
    return pipelines


def time_projections(processor):
    """Wraps the processor's projections so that `processor.projection_seconds` sums the wall and CPU seconds spent in
    them (the outermost call only, when one calls the other)."""
    if hasattr(processor, "projection_seconds"):
        return
    processor.projection_seconds = [0.0, 0.0]
    depth = [0]

    def timed(method):
        def wrapper(*args, **kwargs):
            depth[0] += 1
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    processor.projection_seconds[0] += time.perf_counter() - wall
                    processor.projection_seconds[1] += time.thread_time() - cpu

        return wrapper

    for name in PROJECTIONS:
        setattr(processor, name, timed(getattr(processor, name)))


def run(pipe, rgb, **kwargs):
    if pipe.is_sampler:
        kwargs["generator"] = torch.Generator().manual_seed(0)
    return pipe(rgb, output_type="pt", **kwargs).cubes


def consistency(pipe, cube: torch.Tensor, rgb8: np.ndarray, raw: torch.Tensor | None) -> dict:
    processor = pipe.image_processor
    target = torch.from_numpy(rgb8 / np.float32(255)).permute(2, 0, 1)[None]
    error = (processor.render(cube) - target).abs() * 255  # [1, 3, H, W], in 8-bit levels
    figures = {
        "over": (error > 1).float().mean().item(),
        "p995": float(np.percentile(error.numpy(), 99.5)),
        "max": error.max().item(),
        "iterated": None,
    }
    if raw is not None:
        closed = processor.project(raw, target)
        unsaturated = (target < 254.5 / 255).all(dim=1)
        figures["iterated"] = (((closed < 0) | (closed > 1)).any(dim=1) & unsaturated).float().mean().item()
    return figures


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def main(args):
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    inputs = load_inputs(args)
    pipelines = build_pipelines(args)
    mst = next(iter(pipelines))
    best: dict[tuple[str, str], dict] = {}
    outputs = {}
    for repeat in range(args.repeats):
        for input_name, rgb in inputs.items():
            for name, pipe in pipelines.items():
                processor = pipe.image_processor
                processor.projection_seconds[:] = [0.0, 0.0]
                # MST++ as the field runs it; the bundled models at their defaults (projection on).
                projection = not (name.startswith("MST++") or name.endswith("no projection"))
                wall, cpu = time.perf_counter(), time.thread_time()
                space = "srgb" if input_name.startswith("photo") else "linear"  # a photo is converted by the pipeline
                outputs[name, input_name] = run(pipe, rgb, rgb_consistency=projection, input_space=space)
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
                record = {"wall": wall, "cpu": cpu, "projection_wall": processor.projection_seconds[0]}
                record["projection_cpu"] = processor.projection_seconds[1]
                if (name, input_name) not in best or wall < best[name, input_name]["wall"]:
                    best[name, input_name] = record
                print(f"[{repeat + 1}/{args.repeats}] {name} on {input_name}: {wall:.2f} s", flush=True)

    results = {"inputs": list(inputs), "pipelines": list(pipelines), "reference": mst, "per_input": {}}
    for input_name in inputs:
        row = {}
        for name in pipelines:
            record = dict(best[name, input_name])
            record["ratio_wall"] = best[mst, input_name]["wall"] / record["wall"]
            record["ratio_cpu"] = best[mst, input_name]["cpu"] / record["cpu"]
            record["projection_share"] = record["projection_wall"] / record["wall"]
            record["projection_share_cpu"] = record["projection_cpu"] / record["cpu"]
            row[name] = record
        results["per_input"][input_name] = row
    summary = {}
    for name in list(pipelines)[1:]:
        per_input = [results["per_input"][i][name] for i in inputs]
        summary[name] = {
            key: {"min": min(v), "median": statistics.median(v), "max": max(v)}
            for key in ("ratio_wall", "ratio_cpu", "projection_share", "projection_share_cpu")
            for v in [[record[key] for record in per_input]]
        }
    results["summary"] = summary

    summary_rows = [
        [
            name,
            spread([results["per_input"][i][name]["ratio_wall"] for i in inputs]),
            spread([results["per_input"][i][name]["ratio_cpu"] for i in inputs]),
            spread([100 * results["per_input"][i][name]["projection_share"] for i in inputs]),
            spread([100 * results["per_input"][i][name]["projection_share_cpu"] for i in inputs]),
        ]
        for name in list(pipelines)[1:]
    ]
    summary_table = markdown_table(
        [
            "pipeline",
            f"x {mst}, wall: min / median / max",
            "x, CPU time: min / median / max",
            "projection % of wall time: min / median / max",
            "projection % of CPU time: min / median / max",
        ],
        summary_rows,
    )
    header = (
        ["input"] + [f"{name}: s (x)" for name in pipelines] + [f"projection %: {n}" for n in ("PixelGAN", "DDPM")]
    )
    rows = []
    for input_name in inputs:
        row = results["per_input"][input_name]
        rows.append(
            [input_name]
            + [f"{row[name]['wall']:.2f} ({row[name]['ratio_wall']:.2f}x)" for name in pipelines]
            + [f"{100 * row[name]['projection_share']:.1f}" for name in ("PixelGAN", "DDPM")]
        )
    table = markdown_table(header, rows)

    consistency_rows, results["consistency"] = [], {}
    rendered = [name for name in inputs if not name.startswith("photo")]  # a photo's sRGB is not what it renders to
    for name in ("PixelGAN", "DDPM"):
        pipe = pipelines[name]
        for input_name in rendered:
            rgb8 = inputs[input_name]
            raw = outputs["PixelGAN, no projection", input_name] if name == "PixelGAN" else None
            figures = consistency(pipe, outputs[name, input_name], rgb8, raw)
            figures["outside_gamut"] = float((~rgb_gamut_mask(rgb8)).mean())
            figures["unreachable_pixels"] = int((~rgb_gamut_mask(rgb8, tolerance=1 / 255)).sum())
            results["consistency"][f"{name} on {input_name}"] = figures
            iterated = "-" if figures["iterated"] is None else f"{figures['iterated']:.2%}"
            consistency_rows.append(
                [name, input_name, f"{figures['over']:.2%}", f"{figures['p995']:.3f}", f"{figures['max']:.3f}"]
                + [iterated, f"{figures['outside_gamut']:.2%} / {figures['unreachable_pixels']} pixels"]
            )
    consistency_header = [
        "model",
        "input",
        "values > 1/255",
        "99.5th pct (/255)",
        "max (/255)",
        "pixels iterated",
        "outside gamut (exact / within 1/255)",
    ]
    body = (
        f"One torch thread, every pipeline side by side in one process, {len(inputs)} inputs of {args.size}x{args.size}; best "
        f"of {args.repeats} runs. The machine is shared (other jobs ran beside this one): the ratios are measured in "
        "one process, input by input, and the CPU-time ratios (time this thread ran) are the ones load disturbs "
        "least.\n\n"
        f"Throughput relative to {mst} on the same input, and the share of each pipeline's time spent in the RGB "
        "projections (the output's; the estimate's is folded into the estimator and counted with the network), over "
        f"all {len(inputs)} inputs:\n\n{summary_table}\n\n"
        f"Per input: seconds (wall, best of {args.repeats}) at the shipped defaults (`rgb_consistency=True`; "
        f"{mst} and the row marked 'no projection' without it), the throughput ratio to {mst}, and the projection's "
        f"share of the wall time:\n\n{table}\n\n"
        "RGB consistency of the outputs on the NTIRE-clean inputs (re-render `cube @ A` against the 8-bit input):\n\n"
        + markdown_table(consistency_header, consistency_rows)
        + "\n"
    )
    write_result(args.output, "Throughput and RGB consistency on real scenes", body)
    (RESULTS_DIR / f"{args.output}.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main(parse_args())
