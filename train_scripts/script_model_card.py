"""Model cards of the training scripts: the `README.md` written beside a released pipeline, a template of
`model_cards/templates/` (`--model_card`) filled with facts of the run itself (settings, data, steps, minutes,
hardware, command, validation metrics), so that a card never states what the template's author trained.
"""

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path

import datasets
import script_args
import script_data
import torch


CARD_TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "model_cards" / "templates"
# The run's facts as JSON beside the card: what scripts read (benchmarks/cave_tables.py, training_throughput.py), since
# the card's prose is for people.
RUN_FACTS_FILE = "train_meta.json"


def format_metrics(values: Mapping[str, float]) -> str:
    r"""
    A one-row markdown table of metrics, e.g. `{"val/rmse": 0.031}` -> `| RMSE |`; a note when there are none.
    """
    if not values:
        return "(no validation split)"
    header = "| " + " | ".join(key.replace("val/", "").upper() for key in values) + " |"
    rule = "|" + "---|" * len(values)
    row = "| " + " | ".join(f"{value:.4f}" for value in values.values()) + " |"
    return "\n".join([header, rule, row])


class _KeepMissing(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def write_model_card(
    output_dir: str | os.PathLike, facts: Mapping[str, object], template: str | os.PathLike | None = None
) -> Path:
    r"""
    Writes the `README.md` of a released pipeline folder: a template with `{field}` placeholders filled from `facts`,
    and the facts themselves as JSON (`train_meta.json`), which scripts read instead of the card's prose.

    The facts should be the run's own settings (preset, EMA, loss weights, data, steps, minutes, ...), so that a card
    never states what the template's author trained. A placeholder without a fact is left as `{field}`, where a test
    or a reader sees it; literal braces in a template are written `{{` and `}}` (`str.format` rules).

    Args:
        output_dir (`str` or `os.PathLike`):
            The pipeline folder.
        facts (`Mapping[str, object]`):
            Values of the placeholders.
        template (`str` or `os.PathLike`, *optional*):
            A template file (see `model_cards/templates/`). Without one, the card lists the facts.

    Returns:
        `Path`: the written `README.md`.
    """
    if template is None:
        lines = ["# HSR pipeline", "", "Trained with hsr-diffusers.", ""]
        lines += [f"- **{key}**: {value}" for key, value in facts.items()]
        text = "\n".join(lines) + "\n"
    else:
        text = Path(template).read_text().format_map(_KeepMissing(facts))
    card = Path(output_dir) / "README.md"
    card.write_text(text)
    write_run_facts(output_dir, facts)
    return card


def write_run_facts(output_dir: str | os.PathLike, facts: Mapping[str, object]) -> Path:
    """Writes `facts` to `<output_dir>/train_meta.json` (values JSON cannot hold are written as text)."""
    path = Path(output_dir) / RUN_FACTS_FILE
    path.write_text(json.dumps(dict(facts), indent=2, default=str) + "\n")
    return path


def machine_description(accelerator) -> str:
    """Processes, device and torch version of the run, e.g. `1 process(es) on CPU (x86_64, 2 cores), torch 2.13.0`."""
    if torch.cuda.is_available() and accelerator.device.type == "cuda":
        device = torch.cuda.get_device_name(accelerator.device)
    else:
        device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return f"{accelerator.num_processes} process(es) on {device}, torch {torch.__version__}"


def card_template(name_or_path: str | None) -> Path | None:
    """`--model_card` as a file: a path, or a name in `model_cards/templates/`; None for no template."""
    if name_or_path is None:
        return None
    for candidate in (Path(name_or_path), CARD_TEMPLATES_DIR / name_or_path):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"--model_card {name_or_path!r} is neither a file nor a template in {CARD_TEMPLATES_DIR}.")


def scene_names(split: datasets.Dataset | None) -> list[str]:
    """The `name` column of a split (empty without one)."""
    if split is None or "name" not in split.column_names:
        return []
    return list(split.with_format(None, columns=["name"])["name"])


def describe_rgb_input(args, response: str) -> str:
    """How the run made the RGB it trained on, in words."""
    rendered = f'`render_rgb(cube, "{response}", mode="{args.rgb_mode}")`'
    if args.rgb_degradation == "none":
        return f"rendered with {rendered} for every patch"
    degradation = script_args.make_degradation(args)
    jpeg = f"JPEG quality {degradation.jpeg_quality[0]}-{degradation.jpeg_quality[1]}"
    return (
        f"photo degradations drawn per patch (`--rgb_degradation photo`): {len(degradation.cameras)} cameras "
        f"({', '.join(degradation.cameras)}) with "
        f"their best 3x3 correction to `{response}`, exposure {degradation.exposure[0]}-{degradation.exposure[1]}, shot "
        f"noise at {degradation.photo_electrons[0]:g}-{degradation.photo_electrons[1]:g} photo-electrons, read noise "
        f"{degradation.read_noise_electrons[0]:g}-{degradation.read_noise_electrons[1]:g} e-, mosaic + demosaicing with "
        f"probability {degradation.mosaic_probability:g}, {jpeg} with probability {degradation.jpeg_probability:g}; "
        f"the clean render {rendered} for {degradation.clean_probability:g} of the patches"
    )


def training_sources(args) -> list:
    """The run's training sources: its `--train_data_dir` folders, or its `--dataset_name`."""
    folders = getattr(args, "train_data_dir", None) or [getattr(args, "dataset_name", None)]
    return [folders] if isinstance(folders, str) else folders


def describe_data_mix(args) -> str:
    """The training sources, their scene counts, splits and weights (`--train_data_dir`, ...), in words."""
    folders = training_sources(args)
    sizes = getattr(args, "source_sizes", None) or [None] * len(folders)
    splits = getattr(args, "train_data_split", None) or ["auto"] * len(folders)
    weights = getattr(args, "train_data_weights", None)
    parts = []
    for index, (folder, size, split) in enumerate(zip(folders, sizes, splits)):
        share = f", weight {weights[index]:g}" if weights else ""
        parts.append(f"`{folder}` ({size} training scenes, split {split}{share})")
    return "; ".join(parts)


# Names of known sources in the card's `datasets:` metadata, by a word of their folder or Hub name.
KNOWN_DATASETS = {
    "cave": "CAVE multispectral image database",
    "icvl": "ICVL hyperspectral image database",
    "arad": "NTIRE 2020 ARAD-HS",
}


def describe_dataset_list(args, train_scenes: int) -> str:
    """The card's `datasets:` metadata: one YAML item per training source, named and with its scene count."""
    folders = training_sources(args)
    sizes = getattr(args, "source_sizes", None) or [train_scenes] * len(folders)
    items = []
    for folder, size in zip(folders, sizes):
        local = Path(str(folder))
        # A local folder by its last part, a Hub dataset by its id.
        fallback = local.name if local.exists() else str(folder)
        name = next((title for word, title in KNOWN_DATASETS.items() if word in local.name.lower()), fallback)
        items.append(f"  - {name} ({size} training scenes)")
    return "\n".join(items)


def describe_illumination(args) -> str:
    """`--relight` and `--exposure`, in words."""
    relight = getattr(args, "relight", "none")
    if relight == "none":
        light = "no relighting"
    else:
        low, high = args.relight_cct_range
        light = (
            f"relighting of {'the CAVE (reflectance) sources' if relight == 'cave' else 'every source'}: CIE daylight "
            f"{low:g}-{high:g} K with probability {args.relight_daylight_probability:g}, else CIE A, FL1-12 or LED"
        )
    if getattr(args, "exposure", "none") == "none":
        return f"{light}; stored levels (no exposure normalisation)"
    low, high = args.exposure_level_range
    if args.exposure == "scene_rgb_max":
        return (
            f"{light}; each scene scaled so that its clean linear RGB peaks at a level drawn in {low:g}-{high:g} for "
            "each patch"
        )
    return f"{light}; each patch scaled so that its clean linear RGB peaks at a level drawn in {low:g}-{high:g}"


def describe_loss_terms(args) -> str:
    """The spectral loss terms of the run (`--sam_weight`, `--mrae_weight`), in words."""
    weights = (("SAM", args.sam_weight), ("MRAE", args.mrae_weight))
    terms = [f"{name} weight {weight:g}" for name, weight in weights if weight]
    return ", ".join(terms) if terms else "no SAM or MRAE term"


def describe_ema(args) -> str:
    """`--use_ema` and its decay, in words."""
    return f"EMA of the weights (decay {args.ema_decay:g}), released" if args.use_ema else "no EMA"


def run_facts(args, accelerator, timer, global_step, train_split, validation_split, values, response) -> dict:
    """The model-card facts that every training script states from its own run."""
    train_names, validation_names = scene_names(train_split), scene_names(validation_split)
    return {
        "training_command": args.command,
        "hardware": machine_description(accelerator),
        "num_processes": accelerator.num_processes,
        "wall_time_minutes": f"{timer.minutes():.1f}",
        "train_steps": global_step,
        "train_scenes": len(train_split),
        "dataset_list": describe_dataset_list(args, len(train_split)),
        "train_scene_names": ", ".join(train_names) or "unnamed",
        "validation_scene_names": ", ".join(
            validation_names[i]
            for i in script_data.validation_order(args, validation_split)
            if i < len(validation_names)
        )
        or "none",
        "validation_metrics": format_metrics(values),
        "validation_tile_size": args.validation_tile_size,
        "resolution": args.resolution,
        "patches_per_scene": args.patches_per_scene,
        "batch_size": args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps,
        "learning_rate": f"{args.learning_rate:g}",
        "response": response,
        "rgb_input": describe_rgb_input(args, response),
        "data_mix": describe_data_mix(args),
        "illumination": describe_illumination(args),
        "loss_terms": describe_loss_terms(args),
        "ema": describe_ema(args),
        "seed": args.seed,
    }


def describe_model(model, args, preset_keys=()) -> str:
    """The trained network: class, where it started (a preset or a released pipeline) and its size."""
    size = f"{sum(p.numel() for p in model.parameters()):,} parameters"
    if getattr(args, "pretrained_model_name_or_path", None):
        return f"`{type(model).__name__}` fine-tuned from `{args.pretrained_model_name_or_path}`, {size}"
    settings = ", ".join(f"{key} {model.config[key]}" for key in preset_keys if key in model.config)
    settings = f" ({settings})" if settings else ""
    return f"`{type(model).__name__}` preset `{args.model_config}`{settings}, {size}"
