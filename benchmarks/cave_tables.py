r"""Regenerate `benchmarks/results/cave_tables.md`: every method on the CAVE validation scenes, in one command.

    hsr data prepare --format cave ../shared/data/cave data/cave --split cave      # once: 17 train / 2 validation
    python benchmarks/cave_tables.py --data data/cave --samples 4 --floor root_poly \
        --models ddpm=hsr-diffusers/ddpm-cave pixelgan=hsr-diffusers/pixelgan-cave \
                 mst_plus_plus=runs/mst_cave root_poly=runs/root_poly_cave

Each `name=path` is a pipeline folder written by the training scripts (or a bundled name). Every model sees the same RGB
of each validation scene and is scored by `hsr_diffusers.evaluation.evaluate` with the same metrics, under three
input conditions (`--conditions`):

- `clean`: the NTIRE 2020 clean render (8-bit, linear) through the model's response;
- `noise_jpeg`: a photo taken with the model's own response: shot noise at 5000 photo-electrons at the scene's mean
  green level, stored as 8-bit sRGB JPEG of quality 80 (`hsr_diffusers.data.degradation.render_photo`);
- `cameras`: photos of the cameras held out of degradation-aware training (`HELD_OUT_CAMERAS`, no noise, 8-bit
  sRGB), each mapped to the model's space by its best 3x3 correction on the ColorChecker; one evaluation per camera,
  reported as their mean.

With `--floor NAME`, a summary table gives every model's RMSE and SAM as a ratio to that model's (the root-polynomial
regression refit on the same training scenes) under each condition, with the DDPM's coverage at ±1σ and ±2σ. The report holds
the exact command line, the machine, each model's training budget (read from its folder's `train_meta.json`, else
from its last `checkpoint-N`), the mean table, the per-scene table (one row per scene, one column group per method) and
the uncertainty calibration of the diffusion model. Checkpoint selection, the same for every method: the final
checkpoint of a fixed training budget; the validation scenes are not used to choose anything. Next to the Markdown,
`cave_tables.json` keeps every number (summary, per-scene rows, calibration) for scripts and tests to read.

## ARAD-HS protocol (NTIRE 2020 clean track, 450 training / 10 validation scenes)

    # NTIRE2020/ as downloaded: NTIRE2020_{Train,Validation}_Spectral/ARAD_HS_*.mat and
    # NTIRE2020_{Train,Validation}_Clean/ARAD_HS_*_clean.png (the 8-bit clean-track RGB, paired by scene name).
    # 1. One dataset with the official 450/10 split, each cube with its clean RGB.
    hsr data prepare --format arad NTIRE2020 data/arad_hs --split ntire2020 --rgb-dir NTIRE2020 \
        --response cie1964_ntire2020 --expected-bands 31
    # 2. Every method on the same data with the same fixed budget; the final checkpoint is the one evaluated.
    STEPS=100000
    accelerate launch train_scripts/train_ddpm.py --train_data_dir data/arad_hs --model_config base \
        --use_ema --max_train_steps $STEPS --output_dir runs/arad_hs/ddpm
    accelerate launch train_scripts/train_pixelgan.py --train_data_dir data/arad_hs --model_config base \
        --max_train_steps $STEPS --output_dir runs/arad_hs/pixelgan
    accelerate launch train_scripts/train_pixelgan.py --train_data_dir data/arad_hs --model_config awan \
        --gan_weight 0 --max_train_steps $STEPS --output_dir runs/arad_hs/awan
    accelerate launch train_scripts/train_pixelgan.py --train_data_dir data/arad_hs --model_config mst_plus_plus \
        --gan_weight 0 --max_train_steps $STEPS --output_dir runs/arad_hs/mst_plus_plus
    python train_scripts/train_regression.py --train_data_dir data/arad_hs --output_dir runs/arad_hs/root_poly
    # 3. All of them on the 10 validation scenes, full 482x512 images, with the same metrics.
    hsr evaluate runs/arad_hs/ddpm runs/arad_hs/pixelgan runs/arad_hs/awan runs/arad_hs/mst_plus_plus \
        runs/arad_hs/root_poly --data data/arad_hs --split validation --samples 8 --tile-size 256 \
        --output-dir benchmarks/results/arad_hs

## Output

`--output` (default `benchmarks/results/cave_tables.md`) and the `.json` of the same stem.
"""

import argparse
import json
import re
import shlex
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from common import RESULTS_DIR, machine_info, write_report

from hsr_diffusers.data.degradation import HELD_OUT_CAMERAS, PhotoSettings
from hsr_diffusers.spectral import DEFAULT_RESPONSE


CONDITIONS = {
    "clean": "NTIRE 2020 clean render",
    "noise_jpeg": "shot noise (5000 e- at mean green) + JPEG q80",
    "cameras": f"held-out cameras ({', '.join(HELD_OUT_CAMERAS)}), 3x3-corrected",
}


def condition_photos(condition: str) -> list[PhotoSettings | None]:
    """The photo settings of a condition (None: the clean render); the model's own response stands for `camera`."""
    if condition == "clean":
        return [None]
    if condition == "noise_jpeg":
        return [PhotoSettings(camera=DEFAULT_RESPONSE, photo_electrons=5000.0, jpeg_quality=80)]
    return [PhotoSettings(camera=camera) for camera in HELD_OUT_CAMERAS]


CHECKPOINT_RULE = (
    "the final checkpoint of a fixed training budget; no checkpoint or stopping step was picked by looking at the "
    "validation scenes. Scores on these scenes have gated releases and steered earlier searches: each bundled model's "
    "card says how it was chosen, and with which rule"
)


def arad_protocol_commands() -> str:
    """The ARAD-HS (NTIRE 2020 clean track) commands of this module's docstring, as shell text to paste."""
    section = __doc__.split("## ARAD-HS protocol", 1)[1].split("\n## ", 1)[0]
    title, body = section.split("\n", 1)
    return f"# ARAD-HS protocol{title}\n" + textwrap.dedent(body).strip() + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", required=True, help="dataset folder from `hsr data prepare --format cave --split cave` (17/2 scenes)"
    )
    parser.add_argument(
        "--models", nargs="+", required=True, metavar="NAME=PATH", help="pipeline folders (or bundled names) by name"
    )
    parser.add_argument("--split", default="validation")
    parser.add_argument("--crop", type=int, default=0, help="border crop in pixels before scoring")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: each model's own)")
    parser.add_argument("--samples", type=int, default=8, help="samples per image of diffusion models (calibration)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile-size", type=int, default=None, help="tile size (default: each model's own tiling)")
    parser.add_argument("--tile-overlap", type=int, default=None, help="default: tile size / 8")
    parser.add_argument("--max-scenes", type=int, default=None)
    parser.add_argument("--device", default=None, help="device to run the models on (default: cpu)")
    parser.add_argument(
        "--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS), help="input conditions"
    )
    parser.add_argument("--floor", default=None, help="a --models name to report ratios against (the regression)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "cave_tables.md")
    args = parser.parse_args(argv)
    if args.floor is not None and args.floor not in [item.partition("=")[0] for item in args.models]:
        parser.error(f"--floor {args.floor!r} is not one of the --models names")
    args.model_paths = {}
    for item in args.models:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--models takes NAME=PATH items, got {item!r}")
        if name in args.model_paths:
            parser.error(f"--models names must be distinct, got {name!r} twice")
        args.model_paths[name] = path
    arguments = sys.argv[1:] if argv is None else argv
    args.command = shlex.join(["python", "benchmarks/cave_tables.py", *arguments])
    return args


# ---------------------------------------------------------------------------------------------------- budgets
BUDGET_KEYS = ("train_steps", "batch_size", "wall_time_minutes", "hardware", "training_command", "training_budget")


def read_training_budget(folder: str | Path) -> dict[str, str]:
    r"""
    What a pipeline folder records about its training, from JSON only (never from the model card's prose).

    The folder's `train_meta.json` gives any of `BUDGET_KEYS` (the facts a training run states about itself:
    `train_steps`, `batch_size`, `wall_time_minutes`, `hardware`, `training_command`, `training_budget`);
    `train_steps` and `wall_time_minutes` fall back to the last `checkpoint-N` folder and its `train_meta.json`.

    Args:
        folder (`str` or `Path`):
            A pipeline folder or a bundled name (`hsr-diffusers/ddpm-cave`).

    Returns:
        `dict[str, str]`: the recorded facts as display strings (floats with one decimal); empty when the folder
        records nothing.
    """
    from hsr_diffusers.pipelines.auto_pipeline import resolve_pretrained

    folder = Path(resolve_pretrained(folder))
    recorded = {}
    meta = folder / "train_meta.json"
    if meta.is_file():
        recorded = {key: value for key, value in json.loads(meta.read_text()).items() if key in BUDGET_KEYS}
    checkpoints = sorted(
        (int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)
    )
    if checkpoints:
        step, last = checkpoints[-1]
        recorded.setdefault("train_steps", step)
        meta = last / "train_meta.json"
        minutes = json.loads(meta.read_text()).get("wall_time_minutes") if meta.is_file() else None
        if minutes is not None:
            recorded.setdefault("wall_time_minutes", minutes)
    return {key: f"{value:.1f}" if isinstance(value, float) else str(value) for key, value in recorded.items()}


def budget_section(model_paths: dict[str, str]) -> str:
    lines = [
        "| Method | Folder | Steps | Batch | Wall time (min) | Hardware |",
        "|---|---|---|---|---|---|",
    ]
    commands = []
    for name, path in model_paths.items():
        facts = read_training_budget(path)
        cells = [
            facts.get(key, "not recorded") for key in ("train_steps", "batch_size", "wall_time_minutes", "hardware")
        ]
        lines.append(f"| {name} | `{path}` | " + " | ".join(cells) + " |")
        if "training_command" in facts:
            commands.append(f"- **{name}**: `{facts['training_command']}`")
        if "training_budget" in facts:
            commands.append(f"- **{name}** budget: {facts['training_budget']}")
    if commands:
        lines += ["", "Training commands, as recorded in each folder:", "", *commands]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- report
def software_info() -> str:
    import diffusers

    import hsr_diffusers

    text = f"diffusers {diffusers.__version__}, hsr-diffusers {hsr_diffusers.__version__}"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return text + (f", commit {commit}" if commit else "")


def condition_means(results) -> dict[str, dict]:
    """`{method: {metric: mean}}` over the scenes and, for `cameras`, over the cameras; calibration pooled likewise."""
    means: dict[str, dict] = {}
    for result in results:
        for method, values in result.means().items():
            entry = means.setdefault(method, {"runs": []})
            entry["runs"].append({**values, **result.calibration.get(method, {})})
    for entry in means.values():
        runs = entry.pop("runs")
        for key in runs[0]:
            entry[key] = float(np.mean([run[key] for run in runs if key in run]))
    return means


def summary_table(summary: dict[str, dict[str, dict]], floor: str | None) -> str:
    """RMSE and SAM per condition (and their ratio to the floor), with the coverage of the sampled models."""
    conditions = list(summary)
    header = ["Method"]
    for condition in conditions:
        header += [f"{condition} RMSE", f"{condition} SAM"] + (["RMSE / floor", "SAM / floor"] if floor else [])
        header += [f"{condition} ±1σ", f"{condition} ±2σ"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    methods = list(next(iter(summary.values())))
    for method in methods:
        cells = [method]
        for condition in conditions:
            values = summary[condition][method]
            cells += [f"{values['rmse']:.4f}", f"{values['sam']:.4f}"]
            if floor:
                reference = summary[condition][floor]
                cells += [f"{values['rmse'] / reference['rmse']:.2f}", f"{values['sam'] / reference['sam']:.2f}"]
            for key in ("within_1sigma", "within_2sigma"):
                cells.append(f"{100 * values[key]:.1f} %" if key in values else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_report(results: dict, model_paths: dict[str, str], command: str, floor: str | None, split: str) -> str:
    """The whole Markdown report: summary over the conditions, then each condition's `EvaluationResult` tables."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = {condition: condition_means(runs) for condition, runs in results.items()}
    parts = [
        "# CAVE reproduction tables",
        f"Generated by `benchmarks/cave_tables.py` on {date}. Regenerate with:",
        f"```bash\n{command}\n```",
        f"**Checkpoint selection (every method):** {CHECKPOINT_RULE}.",
        f"**Machine:** {machine_info()}; {software_info()}.",
        "## Training budgets",
        budget_section(model_paths),
        "## Summary over input conditions",
        f"Mean over the {split} scenes (and over the held-out cameras for `cameras`). "
        + "; ".join(f"`{name}`: {CONDITIONS[name]}" for name in results)
        + ". Diffusion models are scored on the mean of their samples; ±1σ and ±2σ are the fractions of true values "
        "within that many (calibrated) standard deviations of it, pooled over pixels and bands."
        + (f" Ratios are to `{floor}`, from the unrounded means." if floor else ""),
        summary_table(summary, floor),
    ]
    for condition, runs in results.items():
        for photo, result in zip(condition_photos(condition), runs):
            title = CONDITIONS[condition] if photo is None or condition != "cameras" else f"camera {photo.camera}"
            parts += [f"## Condition `{condition}`: {title}", result.to_markdown(level=3).strip()]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    import logging

    from hsr_diffusers import HSRPipeline
    from hsr_diffusers.evaluation import evaluate

    args = parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    pipelines = {}
    for name, path in args.model_paths.items():
        pipelines[name] = HSRPipeline.from_pretrained(path)
        pipelines[name].set_progress_bar_config(disable=True)
        if args.device is not None:
            pipelines[name].to(args.device)
    results = {}
    for condition in args.conditions:
        results[condition] = []
        for photo in condition_photos(condition):
            logging.info("Condition %s%s", condition, f" ({photo})" if photo else "")
            result = evaluate(
                pipelines,
                args.data,
                split=args.split,
                crop=args.crop,
                num_inference_steps=args.steps,
                num_samples=args.samples,
                seed=args.seed,
                tile_size=args.tile_size,
                tile_overlap=args.tile_overlap,
                max_scenes=args.max_scenes,
                photo=photo,
            )
            # The tables name where each model came from, not "in memory".
            for name, path in args.model_paths.items():
                result.methods[name]["source"] = path
            results[condition].append(result)
    report = build_report(results, args.model_paths, args.command, args.floor, args.split)
    summary = {condition: condition_means(runs) for condition, runs in results.items()}
    payload = {
        "command": args.command,
        "summary": summary,
        "conditions": {
            condition: [{"photo": result.settings.get("photo"), "rows": result.rows} for result in runs]
            for condition, runs in results.items()
        },
        "calibration": {condition: [result.calibration for result in runs] for condition, runs in results.items()},
    }
    write_report(args.output, report, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
