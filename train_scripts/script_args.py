"""Flags of the training scripts beside it: presets, argument groups spelled as in diffusers' examples, checks.

The scripts import their sibling modules (`import script_args`) as Python allows when it runs a script: it puts the
script's own folder first on `sys.path` (`python train_scripts/train_ddpm.py`, `accelerate launch ...`).
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

from hsr_diffusers.data.dataset import EXPOSURE_MODES
from hsr_diffusers.data.degradation import HELD_OUT_CAMERAS, PhotoDegradation, Relighting, training_cameras
from hsr_diffusers.spectral import RENDER_MODES


CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help` shows each flag's default and keeps the script docstring's line breaks (its example command)."""


def load_preset(name_or_path: str) -> dict:
    """A preset JSON file (`configs/<family>_<name>.json` or any path)."""
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"Model config {name_or_path!r} not found (looked for {path}).")
    return json.loads(path.read_text())


def preset_path(family: str, name: str) -> str:
    """`configs/<family>_<name>.json` for a short preset name, else `name` itself (a path)."""
    candidate = CONFIG_DIR / f"{family}_{name}.json"
    return str(candidate) if candidate.is_file() else name


def add_model_config_arg(parser: argparse.ArgumentParser, family: str, sections: str) -> None:
    """`--model_config`: a preset of `configs/<family>_<name>.json` (listed from that folder) or a JSON path."""
    names = sorted(path.stem[len(family) + 1 :] for path in CONFIG_DIR.glob(f"{family}_*.json"))
    parser.add_argument(
        "--model_config",
        type=str,
        default="small",
        help=f"Preset name ({', '.join(names)}: train_scripts/configs/{family}_<name>.json) or a JSON path with "
        f"{sections} sections; its 'training' section gives flag defaults, which explicit flags override.",
    )


def add_data_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Where the cubes come from and how RGB is made from them (all training scripts)."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name", type=str, default=None, help="A 🤗 Hub dataset id written by `hsr data prepare`."
    )
    data.add_argument(
        "--train_data_dir",
        type=str,
        nargs="+",
        default=None,
        help="One or more sources, read together: a dataset folder written by `hsr data prepare`, or a raw folder "
        "prepared on the fly (once, into --prepared_data_dir): cube files (.mat/.h5/.npy/.npz/ENVI/TIFF), or CAVE "
        "scene folders of band PNGs (with feathers and glass_tiles present, the built-in 'cave' split: those two "
        "validate, the rest trains). A folder of the ICVL strips gets the built-in 'icvl' split (by site).",
    )
    data.add_argument(
        "--train_data_split",
        type=str,
        nargs="+",
        default=None,
        help="Built-in split (`hsr_diffusers.data.get_split`, e.g. cave_holdout7, icvl) of each raw --train_data_dir, "
        "in the same order; 'auto' keeps the detected one. Ignored for prepared dataset folders.",
    )
    data.add_argument(
        "--train_data_weights",
        type=float,
        nargs="+",
        default=None,
        help="Share of each --train_data_dir in the training patches of an epoch (normalised; the epoch keeps "
        "--patches_per_scene x all scenes patches). None: every scene gets --patches_per_scene.",
    )
    data.add_argument(
        "--prepared_data_dir",
        type=str,
        default=None,
        help="Where a raw --train_data_dir is prepared, and found again by later and resumed runs (with several "
        "sources, one subfolder per source). None: a folder of the 🤗 datasets cache (HF_DATASETS_CACHE) named "
        "after the raw folder and a digest of its files, never inside --output_dir.",
    )
    data.add_argument("--train_split", type=str, default="train")
    data.add_argument("--validation_split", type=str, default="validation")
    data.add_argument(
        "--response",
        type=str,
        default=None,
        help="Camera response used to render RGB; None: the dataset's, else cie1964_ntire2020.",
    )
    data.add_argument("--rgb_mode", type=str, default="ntire2020_clean", choices=RENDER_MODES)
    return data


def add_degradation_args(parser: argparse.ArgumentParser) -> None:
    """Photo-like RGB for degradation-aware training (`hsr_diffusers.data.degradation.PhotoDegradation`)."""
    defaults = PhotoDegradation.__dataclass_fields__
    group = parser.add_argument_group("photo degradation (drawn per patch, seeded by --seed, the epoch and the patch)")
    group.add_argument(
        "--rgb_degradation",
        type=str,
        default="none",
        choices=["none", "photo"],
        help="'photo': render each patch as a photo (a random camera with its best 3x3 correction to the model's "
        "response, exposure, shot and read noise, optional mosaic + demosaicing, 8-bit sRGB, optional JPEG), keeping "
        "the clean render for --clean_rgb_probability of the patches. 'none': --rgb_mode for every patch.",
    )
    group.add_argument(
        "--degradation_cameras",
        type=str,
        nargs="+",
        default=None,
        help="Cameras to draw from (names of `hsr_diffusers.list_responses()`). Default: the CIE observer and every "
        f"shipped camera except the held-out {', '.join(HELD_OUT_CAMERAS)}.",
    )
    group.add_argument("--clean_rgb_probability", type=float, default=defaults["clean_probability"].default)
    group.add_argument(
        "--photo_electrons",
        type=float,
        nargs=2,
        default=defaults["photo_electrons"].default,
        metavar=("LOW", "HIGH"),
        help="Log-uniform range of the mean photo-electrons at the mean green level (shot noise).",
    )
    group.add_argument("--read_noise_electrons", type=float, nargs=2, default=defaults["read_noise_electrons"].default)
    group.add_argument(
        "--exposure_range",
        type=float,
        nargs=2,
        default=defaults["exposure"].default,
        help="Log-uniform exposure range: above 1 highlights clip, below 1 the noise is amplified.",
    )
    group.add_argument("--mosaic_probability", type=float, default=defaults["mosaic_probability"].default)
    group.add_argument("--jpeg_probability", type=float, default=defaults["jpeg_probability"].default)
    group.add_argument("--jpeg_quality", type=int, nargs=2, default=defaults["jpeg_quality"].default)


def add_illumination_args(parser: argparse.ArgumentParser) -> None:
    """Relighting of reflectance sources and the exposure of training patches (`PatchDataset`)."""
    group = parser.add_argument_group("illumination and exposure (drawn per patch, seeded like the degradation)")
    group.add_argument(
        "--relight",
        type=str,
        default="none",
        choices=["none", "cave", "all"],
        help="Render reflectance patches as radiance under a drawn light (CIE daylight in --relight_cct_range, else "
        "A, FL1-12 or a CIE LED; `hsr_diffusers.data.degradation.Relighting`). 'cave': the sources prepared from CAVE "
        "folders (reflectance), not measured radiance such as ICVL; 'all': every source.",
    )
    group.add_argument("--relight_daylight_probability", type=float, default=0.5)
    group.add_argument("--relight_cct_range", type=float, nargs=2, default=(4000.0, 10000.0), metavar=("LOW", "HIGH"))
    group.add_argument(
        "--exposure",
        type=str,
        default="none",
        choices=EXPOSURE_MODES,
        help="'rgb_max': scale each patch so that its clean linear RGB peaks at a level drawn in --exposure_level_range "
        "(set from the RGB, as an auto-exposure; natural radiance spans a wide range; near-black patches are lifted "
        "too). 'scene_rgb_max': the same level for the scene's RGB maximum, so that dark patches stay dark. 'none': "
        "the stored values.",
    )
    group.add_argument("--exposure_level_range", type=float, nargs=2, default=(0.25, 1.0), metavar=("LOW", "HIGH"))


def make_relighting(args) -> Relighting | None:
    """The run's `Relighting`, or None for `--relight none` (and for scripts without the flag)."""
    if getattr(args, "relight", "none") == "none":
        return None
    return Relighting(daylight_probability=args.relight_daylight_probability, cct_range=tuple(args.relight_cct_range))


def make_degradation(args) -> PhotoDegradation | None:
    """The run's `PhotoDegradation`, or None for `--rgb_degradation none`."""
    if args.rgb_degradation == "none":
        return None
    return PhotoDegradation(
        cameras=tuple(args.degradation_cameras) if args.degradation_cameras else training_cameras(),
        clean_probability=args.clean_rgb_probability,
        photo_electrons=tuple(args.photo_electrons),
        read_noise_electrons=tuple(args.read_noise_electrons),
        exposure=tuple(args.exposure_range),
        mosaic_probability=args.mosaic_probability,
        jpeg_probability=args.jpeg_probability,
        jpeg_quality=tuple(args.jpeg_quality),
    )


def add_training_args(parser: argparse.ArgumentParser, pretrained_help: str) -> None:
    """Flags shared by the network training scripts, spelled as in diffusers' training examples."""
    data = add_data_args(parser)
    add_degradation_args(parser)
    add_illumination_args(parser)
    data.add_argument("--resolution", type=int, default=64, help="Side of the square training patches.")
    data.add_argument("--patches_per_scene", type=int, default=32, help="Random patches per scene and epoch.")
    data.add_argument("--in_memory", action="store_true", help="Load every cube into RAM (default: stream from disk).")
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    train = parser.add_argument_group("optimisation")
    train.add_argument("--output_dir", type=str, required=True)
    train.add_argument("--pretrained_model_name_or_path", type=str, default=None, help=pretrained_help)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--train_batch_size", type=int, default=4, help="Batch size per process (4 in the method).")
    train.add_argument("--num_epochs", type=int, default=1000, help="1000 epochs in the method.")
    train.add_argument("--max_train_steps", type=int, default=None, help="Overrides --num_epochs when set.")
    train.add_argument(
        "--max_train_minutes",
        type=float,
        default=None,
        help="Time budget: stop at the first checkpoint reached after this many wall-clock minutes (resumed runs "
        "included) and release that checkpoint's weights.",
    )
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--learning_rate", type=float, default=2e-4, help="2e-4 in the method (Adam).")
    train.add_argument("--lr_scheduler", type=str, default="constant", help="Any diffusers `get_scheduler` name.")
    train.add_argument("--lr_warmup_steps", type=int, default=0)
    train.add_argument("--mixed_precision", type=str, default="no", choices=["no", "fp16", "bf16"])
    train.add_argument("--max_grad_norm", type=float, default=1.0)
    train.add_argument("--sam_weight", type=float, default=0.0, help="Weight of a SAM loss on the predicted cube.")
    train.add_argument("--mrae_weight", type=float, default=0.0, help="Weight of an MRAE loss on the predicted cube.")
    train.add_argument(
        "--use_ema",
        action="store_true",
        help="Keep an EMA of the trained weights (diffusers' EMAModel) and release it.",
    )
    train.add_argument("--ema_decay", type=float, default=0.999)

    ckpt = parser.add_argument_group("checkpoints and logging")
    ckpt.add_argument("--checkpointing_steps", type=int, default=500)
    ckpt.add_argument("--checkpoints_total_limit", type=int, default=None)
    ckpt.add_argument("--resume_from_checkpoint", type=str, default=None, help="A checkpoint folder or 'latest'.")
    ckpt.add_argument(
        "--validation_steps",
        type=int,
        default=500,
        help="Validate every N steps (full scenes, tiled; metrics to the console and the trackers). The end of the "
        "run always validates once more, for the model card.",
    )
    ckpt.add_argument("--max_validation_scenes", type=int, default=2)
    ckpt.add_argument("--validation_tile_size", type=int, default=256)
    ckpt.add_argument("--report_to", type=str, default="tensorboard", help="'tensorboard' or 'none'.")
    ckpt.add_argument("--logging_dir", type=str, default="logs")
    ckpt.add_argument("--push_to_hub", action="store_true")
    ckpt.add_argument("--hub_model_id", type=str, default=None)
    ckpt.add_argument("--hub_token", type=str, default=None)
    ckpt.add_argument(
        "--model_card",
        type=str,
        default=None,
        help="Model card template (a path, or a name in model_cards/templates/), filled with the run's settings.",
    )


def add_residual_args(parser: argparse.ArgumentParser) -> None:
    """The closed-form estimate that the DDPM and the GAN learn the residual of."""
    group = parser.add_argument_group("residual")
    group.add_argument(
        "--residual",
        default="root_poly",
        choices=["none", "root_poly"],
        help="Learn the residual over a closed-form root-polynomial estimate ('none': the method's plain formulation).",
    )
    group.add_argument("--root_poly_degree", type=int, default=2)


def parse_training_args(
    parser: argparse.ArgumentParser, script: str, argv: list[str] | None, preset_family: str | None = None
) -> argparse.Namespace:
    """
    Parses and checks the flags. With `preset_family`, the `"training"` section of the `--model_config` preset gives
    defaults that explicit flags override (`args.preset` holds the preset). `args.command` records the command.
    """
    if preset_family is not None:
        known, _ = parser.parse_known_args(argv)
        preset = load_preset(preset_path(preset_family, known.model_config))
        parser.set_defaults(**preset.get("training", {}))
    args = parser.parse_args(argv)
    if preset_family is not None:
        args.preset = preset
    arguments = sys.argv[1:] if argv is None else argv
    args.command = shlex.join(["accelerate", "launch", f"train_scripts/{script}", *arguments])
    check_args(args)
    return args


def check_args(args) -> None:
    """Stops bad flag combinations before anything is loaded."""
    if (args.dataset_name is None) == (args.train_data_dir is None):
        raise ValueError("Give exactly one of --dataset_name or --train_data_dir.")
    check_sources(args)
    for name in (
        "resolution",
        "train_batch_size",
        "gradient_accumulation_steps",
        "checkpointing_steps",
        "validation_steps",
    ):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}.")
    if args.learning_rate <= 0:
        raise ValueError(f"--learning_rate must be positive, got {args.learning_rate}.")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        raise ValueError(f"--max_train_steps must be at least 1, got {args.max_train_steps}.")
    if args.max_train_minutes is not None and args.max_train_minutes < 0:
        raise ValueError(f"--max_train_minutes must not be negative, got {args.max_train_minutes}.")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        raise ValueError(f"--checkpoints_total_limit must be at least 1, got {args.checkpoints_total_limit}.")


def check_sources(args) -> None:
    """One --train_data_split and one --train_data_weights per --train_data_dir, when given."""
    num_sources = len(args.train_data_dir or [None])
    for name in ("train_data_split", "train_data_weights"):
        values = getattr(args, name, None)
        if values is not None and len(values) != num_sources:
            raise ValueError(f"--{name} needs one value per --train_data_dir ({num_sources}), got {values}.")
    weights = getattr(args, "train_data_weights", None)
    if weights is not None and (min(weights) < 0 or sum(weights) <= 0):
        raise ValueError(f"--train_data_weights must be non-negative with a positive sum, got {weights}.")
