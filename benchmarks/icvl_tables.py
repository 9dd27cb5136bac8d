r"""Regenerate `benchmarks/results/icvl_tables.md`: how the models generalise to natural scenes (ICVL) and CAVE.

    python benchmarks/icvl_tables.py --models ddpm=hsr-diffusers/ddpm-cave pixelgan=hsr-diffusers/pixelgan-cave \
        mlp=runs/pixel-mlp-mix --trained-on ddpm=cave17 pixelgan=cave17 mlp=mix --cave-crop 256 --samples 4

Validation scenes (the split rules of `hsr_diffusers/data/splits.py`, written before any of these models was scored):
the 12 ICVL strips of the `"icvl"` split (whole sites none of the new models trained on) and the 7 CAVE scenes of the
`"cave_holdout7"` split. The bundled models were trained on the 17 scenes of the `"cave"` split, so only `feathers` and
`glass_tiles` are new to them: the report gives that pair its own mean.

Protocol, the same for every method:

- ICVL: each strip divided by its maximum (the strips are radiance in camera counts; a global scale sets the exposure
  of the input and never reaches a model), as in issue 25. CAVE: reflectance as stored, centre-cropped to
  `--cave-crop` pixels when given (to bound the CPU time of the diffusion model).
- Input conditions: `clean`, the NTIRE 2020 clean render (8-bit, linear) through the model's response; `noise_jpeg`,
  a photo with the model's own response, shot noise at 5000 photo-electrons at the mean green level, stored as 8-bit
  sRGB JPEG of quality 80 (`render_photo`, seeded per scene so that every method sees the same photo).
- Metrics: RMSE and SAM (radians) of `hsr_diffusers.metrics` per scene, then the mean over scenes. A diffusion model
  run with `--samples` above 1 is scored on the mean of its samples, and its ±2σ coverage (the fraction of true values
  within two calibrated standard deviations) is pooled over every value of the scenes.
- Floors, refitted here in closed form (`fit_root_polynomial`, degree 2, 20000 pixels per scene, clean RGB) on the
  training scenes of the same splits: `floor_cave` (the 12 CAVE training scenes), `floor_cave_daylight` (the same
  relit by four CIE daylights drawn in 4000-10000 K per scene), `floor_icvl` (the 36 ICVL training strips, each
  divided by its maximum) and `floor_both` (CAVE and ICVL training scenes).

The "trained on" column (`--trained-on NAME=LABEL`; floors label themselves) turns the summary into the cross-dataset
matrix: trained on CAVE only or on the mix, tested on CAVE and on ICVL. `--output` (default
`benchmarks/results/icvl_tables.md`) is written with the `.json` of the same stem, which holds every number.
"""

import argparse
import os
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from cave_tables import budget_section
from common import RESULTS_DIR, divide_by_max, machine_info, write_report

from hsr_diffusers.data import get_split, load_cube
from hsr_diffusers.data.degradation import PhotoSettings, Relighting, illuminant_spectrum, render_photo
from hsr_diffusers.data.rendering import render_training_rgb
from hsr_diffusers.evaluation import CalibrationStats
from hsr_diffusers.metrics import rmse, sam
from hsr_diffusers.spectral import DEFAULT_RESPONSE, WAVELENGTHS


SHARED_DATA = Path(os.environ.get("HSR_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
CONDITIONS = {
    "clean": "NTIRE 2020 clean render",
    "noise_jpeg": "shot noise (5000 e- at mean green) + JPEG q80",
}
FLOORS = {
    "floor_cave": "cave12",
    "floor_cave_daylight": "cave12 relit (daylight)",
    "floor_icvl": "icvl36",
    "floor_both": "cave12 + icvl36",
}
HELD_OUT_BY_ALL = ("feathers", "glass_tiles")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", nargs="*", default=[], metavar="NAME=PATH", help="pipeline folders or bundled names"
    )
    parser.add_argument("--trained-on", nargs="*", default=[], metavar="NAME=LABEL", help="training data of --models")
    parser.add_argument("--floors", nargs="*", default=list(FLOORS), choices=list(FLOORS))
    parser.add_argument("--icvl-dir", type=Path, default=SHARED_DATA / "icvl_strips")
    parser.add_argument("--cave-dir", type=Path, default=SHARED_DATA / "cave")
    parser.add_argument("--icvl-split", default="icvl")
    parser.add_argument("--cave-split", default="cave_holdout7")
    parser.add_argument("--cave-crop", type=int, default=0, help="centre crop of the CAVE scenes (0: whole 512x512)")
    parser.add_argument(
        "--cave-illuminant",
        default=None,
        help="score CAVE validation scenes as radiance under this light (`illuminant_spectrum` name, e.g. D6504K); "
        "default: the reflectance itself (equal-energy light)",
    )
    parser.add_argument("--max-scenes", type=int, default=None, help="first N validation scenes of each dataset")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--samples", type=int, default=4, help="samples per image of diffusion models (coverage)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--goals",
        nargs="*",
        default=[],
        metavar="NAME",
        help="--models names to check against the goals of issue 25 (ratios to --goals-floor and --goals-baseline)",
    )
    parser.add_argument("--goals-floor", default="floor_both", choices=list(FLOORS))
    parser.add_argument("--goals-baseline", default=None, metavar="NAME", help="the per-pixel MLP of the goals")
    parser.add_argument(
        "--bfloat16",
        nargs="+",
        default=[],
        metavar="NAME",
        help="--models names loaded with dtype=torch.bfloat16 (the network runs in bf16, the projection in float32)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "icvl_tables.md")
    args = parser.parse_args(argv)
    args.model_paths, args.labels = {}, dict(FLOORS)
    for item in args.models:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or name in args.model_paths or name in FLOORS:
            parser.error(f"--models takes distinct NAME=PATH items (not a floor name), got {item!r}")
        args.model_paths[name] = path
    if unknown := sorted(set(args.bfloat16) - set(args.model_paths)):
        parser.error(f"--bfloat16 takes --models names, got {unknown}")
    for item in args.trained_on:
        name, sep, label = item.partition("=")
        if not sep or name not in args.model_paths:
            parser.error(f"--trained-on takes NAME=LABEL for a --models name, got {item!r}")
        args.labels[name] = label
    for name in [*args.goals, *([args.goals_baseline] if args.goals_baseline else [])]:
        if name not in args.model_paths:
            parser.error(f"--goals and --goals-baseline take --models names, got {name!r}")
    if args.goals and (args.goals_floor not in args.floors or set(args.conditions) != set(CONDITIONS)):
        parser.error("--goals needs --goals-floor among --floors and both --conditions")
    arguments = sys.argv[1:] if argv is None else argv
    args.command = shlex.join(["python", "benchmarks/icvl_tables.py", *arguments])
    return args


# ---------------------------------------------------------------------------------------------------- data
def icvl_cube(folder: Path, name: str) -> np.ndarray:
    """An ICVL strip divided by its maximum (the exposure of the protocol)."""
    return divide_by_max(np.asarray(load_cube(folder / f"{name}.npz"), dtype=np.float32))


def cave_cube(folder: Path, name: str, crop: int = 0) -> np.ndarray:
    """A CAVE scene's reflectance, centre-cropped to `crop` pixels when `crop` is positive."""
    cube = np.asarray(load_cube(folder / f"{name}_ms"), dtype=np.float32)
    if crop:
        top, left = (cube.shape[0] - crop) // 2, (cube.shape[1] - crop) // 2
        cube = cube[top : top + crop, left : left + crop]
    return cube


def validation_scenes(args) -> list[tuple[str, str, np.ndarray]]:
    """`(dataset, scene, cube)` of the ICVL and CAVE validation scenes."""
    icvl = get_split(args.icvl_split)["validation"][: args.max_scenes]
    cave = get_split(args.cave_split)["validation"][: args.max_scenes]
    light = 1.0 if args.cave_illuminant is None else illuminant_spectrum(args.cave_illuminant, WAVELENGTHS)
    scenes = [("icvl", name, icvl_cube(args.icvl_dir, name)) for name in icvl]
    cave_scenes = [cave_cube(args.cave_dir, name, args.cave_crop) * np.float32(light) for name in cave]
    return scenes + [("cave", name, cube.astype(np.float32)) for name, cube in zip(cave, cave_scenes)]


def fit_floors(args, response: str) -> dict:
    """The root-polynomial floors named in `--floors`, fitted on the training scenes, as feed-forward pipelines."""
    from hsr_diffusers import HSRFeedForwardPipeline
    from hsr_diffusers.models import fit_root_polynomial

    def cave_train() -> list[np.ndarray]:
        return [cave_cube(args.cave_dir, name) for name in get_split(args.cave_split)["train"]]

    def icvl_train() -> list[np.ndarray]:
        return [icvl_cube(args.icvl_dir, name) for name in get_split(args.icvl_split)["train"]]

    def cave_daylight() -> list[np.ndarray]:
        relighting = Relighting(daylight_probability=1.0, cct_range=(4000.0, 10000.0))
        rng = np.random.default_rng(args.seed)
        return [relighting(cube, WAVELENGTHS, rng) for cube in cave_train() for _ in range(4)]

    training = {
        "floor_cave": cave_train,
        "floor_cave_daylight": cave_daylight,
        "floor_icvl": icvl_train,
        "floor_both": lambda: cave_train() + icvl_train(),
    }
    floors = {}
    for name in args.floors:
        model = fit_root_polynomial(training[name](), response, list(WAVELENGTHS), seed=args.seed)
        floors[name] = HSRFeedForwardPipeline(unet=model, response=response)
    return floors


def input_rgb(cube: np.ndarray, condition: str, response, seed: int, index: int) -> np.ndarray:
    if condition == "clean":
        return render_training_rgb(cube, response, list(WAVELENGTHS)).astype(np.float32)
    photo = PhotoSettings(camera=response, photo_electrons=5000.0, jpeg_quality=80)
    return render_photo(cube, photo, response, list(WAVELENGTHS), np.random.default_rng((seed, index)))


# ---------------------------------------------------------------------------------------------------- scoring
def score(pipelines: dict, scenes, args) -> tuple[list[dict], dict]:
    """Per-scene rows `{method, condition, dataset, scene, rmse, sam}` and the pooled ±2σ coverage of diffusion models."""
    from hsr_diffusers import HSRDiffusionPipeline

    rows, coverage = [], {}
    for name, pipe in pipelines.items():
        diffusion = isinstance(pipe, HSRDiffusionPipeline)
        response = pipe.config.response
        for condition in args.conditions:
            stats = {"icvl": CalibrationStats(), "cave": CalibrationStats()}
            for index, (dataset, scene, cube) in enumerate(scenes):
                rgb = input_rgb(cube, condition, response, args.seed, index)
                if diffusion:
                    generator = torch.Generator().manual_seed(args.seed)
                    output = pipe(rgb, num_samples=args.samples, generator=generator)
                else:
                    output = pipe(rgb)
                pred = np.asarray(output.cubes[0], dtype=np.float32)
                if output.uncertainty is not None:
                    stats[dataset].update(pred, np.asarray(output.uncertainty[0]), cube)
                row = {"method": name, "condition": condition, "dataset": dataset, "scene": scene}
                rows.append({**row, "rmse": rmse(pred, cube), "sam": sam(pred, cube)})
                print(f"{name} {condition} {dataset} {scene}: RMSE {rows[-1]['rmse']:.4f} SAM {rows[-1]['sam']:.4f}")
            if diffusion and args.samples > 1:
                for dataset, stat in stats.items():
                    coverage[(name, condition, dataset)] = stat.result()["within_2sigma"]
    return rows, coverage


def mean_of(rows, method, condition, dataset, metric, scenes=None) -> float:
    values = [
        row[metric]
        for row in rows
        if (row["method"], row["condition"], row["dataset"]) == (method, condition, dataset)
        and (scenes is None or row["scene"] in scenes)
    ]
    return float(np.mean(values)) if values else float("nan")


# ---------------------------------------------------------------------------------------------------- report
def summary_rows(rows, coverage, methods, labels, conditions) -> list[dict]:
    summary = []
    for method in methods:
        for condition in conditions:
            entry = {"method": method, "trained_on": labels.get(method, "?"), "condition": condition}
            for metric in ("rmse", "sam"):
                entry[f"icvl_{metric}"] = mean_of(rows, method, condition, "icvl", metric)
                entry[f"cave_{metric}"] = mean_of(rows, method, condition, "cave", metric)
                entry[f"cave2_{metric}"] = mean_of(rows, method, condition, "cave", metric, HELD_OUT_BY_ALL)
            entry["icvl_within_2sigma"] = coverage.get((method, condition, "icvl"))
            entry["cave_within_2sigma"] = coverage.get((method, condition, "cave"))
            summary.append(entry)
    return summary


def format_summary(summary: list[dict], condition: str) -> str:
    header = "| Method | Trained on | ICVL RMSE | ICVL SAM | CAVE RMSE | CAVE SAM | CAVE-2 RMSE | CAVE-2 SAM | ±2σ ICVL | ±2σ CAVE |"
    lines = [header, "|" + "---|" * 10]
    for entry in summary:
        if entry["condition"] != condition:
            continue
        cells = [entry["method"], entry["trained_on"]]
        for key in ("icvl_rmse", "icvl_sam", "cave_rmse", "cave_sam", "cave2_rmse", "cave2_sam"):
            cells.append("–" if np.isnan(entry[key]) else f"{entry[key]:.4f}")
        for key in ("icvl_within_2sigma", "cave_within_2sigma"):
            cells.append("–" if entry[key] is None else f"{100 * entry[key]:.1f} %")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_per_scene(rows, methods, condition: str, dataset: str) -> str:
    scenes = list(dict.fromkeys(row["scene"] for row in rows if row["dataset"] == dataset))
    lines = ["| Scene | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 1)]
    by_key = {(r["method"], r["condition"], r["dataset"], r["scene"]): r for r in rows}
    for scene in [*scenes, "mean"]:
        cells = [f"**{scene}**" if scene == "mean" else scene]
        for method in methods:
            if scene == "mean":
                values = (
                    mean_of(rows, method, condition, dataset, "rmse"),
                    mean_of(rows, method, condition, dataset, "sam"),
                )
            else:
                row = by_key[(method, condition, dataset, scene)]
                values = (row["rmse"], row["sam"])
            cells.append(f"{values[0]:.4f} / {values[1]:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# (column, summary key, condition, what it is compared with, goal): the goals of issue 25, each a ratio (at most the
# goal) or a coverage (at least the goal).
GOALS = [
    ("ICVL RMSE", "icvl_rmse", "clean", "floor", 0.80),
    ("ICVL SAM", "icvl_sam", "clean", "floor", 0.80),
    ("ICVL RMSE, noise + JPEG", "icvl_rmse", "noise_jpeg", "floor", 0.80),
    ("ICVL SAM, noise + JPEG", "icvl_sam", "noise_jpeg", "floor", 0.80),
    ("CAVE RMSE", "cave_rmse", "clean", "floor", 0.75),
    ("CAVE SAM", "cave_sam", "clean", "floor", 0.45),
    ("CAVE RMSE, noise + JPEG", "cave_rmse", "noise_jpeg", "floor", 0.85),
    ("ICVL RMSE vs MLP", "icvl_rmse", "clean", "baseline", 0.90),
    ("CAVE RMSE vs MLP", "cave_rmse", "clean", "baseline", 0.90),
    ("±2σ ICVL", "icvl_within_2sigma", "clean", None, 0.80),
    ("±2σ CAVE", "cave_within_2sigma", "clean", None, 0.80),
]


def goal_table(summary: list[dict], names: list[str], floor: str, baseline: str | None) -> str:
    """Each of `names` against the goals of issue 25: its ratio to `floor` (or `baseline`), or its coverage."""
    entries = {(entry["method"], entry["condition"]): entry for entry in summary}
    lines = ["| Method | " + " | ".join(column for column, *_ in GOALS) + " |", "|" + "---|" * (len(GOALS) + 1)]
    goals = [f"≥ {100 * goal:.0f} %" if versus is None else f"≤ {goal:.2f}×" for _, _, _, versus, goal in GOALS]
    lines.append("| goal | " + " | ".join(goals) + " |")
    for name in names:
        cells = [name]
        for _, key, condition, versus, goal in GOALS:
            value = entries[(name, condition)][key]
            if versus is None:  # a coverage; a model without samples has none
                cells.append("–" if value is None else f"{100 * value:.1f} % ({'met' if value >= goal else 'missed'})")
                continue
            reference = floor if versus == "floor" else baseline
            if reference is None:
                cells.append("–")
                continue
            ratio = value / entries[(reference, condition)][key]
            cells.append(f"{ratio:.2f}× ({'met' if ratio <= goal else 'missed'})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_report(args, rows, coverage, methods) -> tuple[str, list[dict]]:
    summary = summary_rows(rows, coverage, methods, args.labels, args.conditions)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    icvl = get_split(args.icvl_split)["validation"][: args.max_scenes]
    cave = get_split(args.cave_split)["validation"][: args.max_scenes]
    crop = f"centre {args.cave_crop}x{args.cave_crop} crops" if args.cave_crop else "whole 512x512 scenes"
    if args.cave_illuminant is not None:
        crop += f", as radiance under {args.cave_illuminant} (spectrum of mean 1)"
    parts = [
        "# Natural-scene generalisation tables (ICVL and CAVE validation)",
        f"Generated by `benchmarks/icvl_tables.py` on {date}. Regenerate with:",
        f"```bash\n{args.command}\n```",
        f"**Machine:** {machine_info()}.",
        f"**Validation scenes** (rules of `hsr_diffusers/data/splits.py`): ICVL `{args.icvl_split}` ({len(icvl)} strips, "
        f"each divided by its maximum): {', '.join(icvl)}. CAVE `{args.cave_split}` ({len(cave)} scenes, {crop}): "
        f"{', '.join(cave)}. CAVE-2 is the mean over {' and '.join(HELD_OUT_BY_ALL)} only, the scenes that every "
        "model here held out (the bundled models trained on the other 17).",
        "**Metrics:** mean over scenes of the per-scene RMSE and SAM (radians); a diffusion model is scored on the "
        f"mean of {args.samples} samples, and ±2σ is the pooled fraction of true values within two calibrated standard "
        "deviations (0.954 for a calibrated Gaussian). Floors: root-polynomial regression (degree 2) refitted here on "
        "the training scenes named in 'Trained on' (cave12: the 12 training scenes of the CAVE split; icvl36: the 36 "
        "training strips).",
    ]
    if args.model_paths:
        parts += ["## Training budgets", budget_section(args.model_paths)]
    for condition in args.conditions:
        parts += [f"## Summary, `{condition}` input: {CONDITIONS[condition]}", format_summary(summary, condition)]
    if args.goals:
        baseline = f" and to `{args.goals_baseline}` (the per-pixel MLP)" if args.goals_baseline else ""
        parts += [
            "## Goals of issue 25",
            f"Ratios of the mean RMSE / SAM to `{args.goals_floor}`{baseline} under the same input, and the ±2σ coverage "
            "on clean input; 'met' or 'missed' against the goal in the first row.",
            goal_table(summary, args.goals, args.goals_floor, args.goals_baseline),
        ]
    for condition in args.conditions:
        for dataset in ("icvl", "cave"):
            parts += [
                f"## Per scene, {dataset.upper()}, `{condition}` input (RMSE / SAM)",
                format_per_scene(rows, methods, condition, dataset),
            ]
    return "\n\n".join(parts) + "\n", summary


def main(argv: list[str] | None = None) -> int:
    from hsr_diffusers import HSRPipeline

    args = parse_args(argv)
    pipelines = {}
    for name, path in args.model_paths.items():
        dtype = torch.bfloat16 if name in args.bfloat16 else torch.float32
        pipelines[name] = HSRPipeline.from_pretrained(path, dtype=dtype)
    responses = {pipe.config.response for pipe in pipelines.values() if isinstance(pipe.config.response, str)}
    response = responses.pop() if len(responses) == 1 else DEFAULT_RESPONSE
    pipelines.update(fit_floors(args, response))
    for pipe in pipelines.values():
        pipe.set_progress_bar_config(disable=True)
    scenes = validation_scenes(args)
    rows, coverage = score(pipelines, scenes, args)
    methods = list(pipelines)
    report, summary = build_report(args, rows, coverage, methods)
    write_report(args.output, report, {"command": args.command, "summary": summary, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
