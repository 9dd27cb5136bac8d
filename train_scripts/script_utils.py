"""Glue shared by the training scripts beside it: flags, accelerator set-up, data loading, resuming, validation, cards.

The scripts import it as `import script_utils`: Python puts a script's own folder first on `sys.path` when it runs the
script (`python train_scripts/train_ddpm.py`, `accelerate launch train_scripts/train_ddpm.py`), so no path edit is
needed. What a user of the package needs outside these scripts (the estimator fit, spectral losses, atomic checkpoints,
the model-card writer) lives in `hsr_diffusers.training_utils`.
"""

import argparse
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import torch

from hsr_diffusers import metrics
from hsr_diffusers.data import PatchDataset, build_dataset, get_cube, get_split, read_metadata
from hsr_diffusers.data.degradation import HELD_OUT_CAMERAS, PhotoDegradation, training_cameras
from hsr_diffusers.data.io import CUBE_SUFFIXES, CubeFormatError, find_cave_band_files
from hsr_diffusers.models import RootPolynomialRegression
from hsr_diffusers.spectral import DEFAULT_RESPONSE, RENDER_MODES
from hsr_diffusers.training_utils import (
    CHECKPOINT_PATTERN,
    fit_root_polynomial,
    format_metrics,
    list_checkpoints,
    render_training_rgb,
)


logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
REPO_ROOT = Path(__file__).resolve().parents[1]
CARD_TEMPLATES_DIR = REPO_ROOT / "model_cards" / "templates"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help` shows each flag's default and keeps the script docstring's line breaks (its example command)."""


# ---------------------------------------------------------------------------------------------------- flags
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


def add_data_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Where the cubes come from and how RGB is made from them (all training scripts)."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name", type=str, default=None, help="A 🤗 Hub dataset id written by `hsr data prepare`."
    )
    data.add_argument(
        "--train_data_dir",
        type=str,
        default=None,
        help="A dataset folder written by `hsr data prepare`, or a raw folder prepared on the fly into "
        "<output_dir>/prepared_dataset: cube files (.mat/.h5/.npy/ENVI/TIFF), or CAVE scene folders of band PNGs "
        "(with feathers and glass_tiles present, the built-in 'cave' split: those two validate, the rest trains).",
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
        type=str,
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


# ---------------------------------------------------------------------------------------------------- set-up and data
def make_accelerator(args):
    """The `Accelerator` of a training run (seedable sampler, so a resumed run sees the same batches), with logging,
    the seed and the output folder set up."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    set_seed(args.seed)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    return accelerator


def raw_folder_layout(folder: Path) -> tuple[str, dict | None]:
    """
    The `build_dataset` format and split of a raw folder: `"folder"` when it holds cube files, `"cave"` when it holds
    CAVE scene folders of band PNGs (the layouts `load_cube` reads). A CAVE folder with the built-in split's
    validation scenes gets that split's validation and all its other scenes for training; otherwise every scene trains.
    """
    files = [path for path in folder.rglob("*") if path.is_file() and not path.name.startswith(".")]
    if any(path.suffix.lower() in CUBE_SUFFIXES and not path.name.endswith(".wavelengths.npy") for path in files):
        return "folder", None
    names = []
    for directory in sorted({path.parent for path in files if path.suffix.lower() == ".png"}):
        try:
            bands = find_cave_band_files(directory)
        except CubeFormatError:
            continue
        if bands[0].parent == directory:  # the nested download layout is found at its inner folder
            prefix = bands[0].name.rsplit("_", 1)[0]
            names.append(prefix[: -len("_ms")] if prefix.endswith("_ms") else prefix)
    if not names:
        raise CubeFormatError(
            f"--train_data_dir {folder} holds no dataset written by `hsr data prepare`, no cube files "
            f"({', '.join(CUBE_SUFFIXES)}) and no CAVE scene folders of band PNGs (<scene>_ms_NN.png)."
        )
    validation = [name for name in get_split("cave")["validation"] if name in names]
    if len(validation) < len(get_split("cave")["validation"]):
        return "cave", None
    return "cave", {"train": [name for name in names if name not in validation], "validation": validation}


def load_splits(args, accelerator) -> tuple[datasets.Dataset, datasets.Dataset | None, str]:
    """The training and validation splits and the response to render RGB with."""
    recorded = None
    if args.dataset_name is not None:
        loaded = datasets.load_dataset(args.dataset_name)
    else:
        path = Path(args.train_data_dir)
        if not path.exists():
            raise FileNotFoundError(f"--train_data_dir {path} does not exist.")
        if not (path / "dataset_dict.json").is_file() and not (path / "dataset_info.json").is_file():
            # A raw folder: prepare it once, next to the outputs (main process first, then the others read it).
            prepared = Path(args.output_dir) / "prepared_dataset"
            with accelerator.main_process_first():
                if not prepared.exists():
                    layout, split = raw_folder_layout(path)
                    logger.info(f"Preparing {path} ({layout} format) into {prepared}")
                    build_dataset(
                        path, prepared, format=layout, split=split, response=args.response or DEFAULT_RESPONSE
                    )
            path = prepared
        recorded = read_metadata(path).get("response")
        loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({args.train_split: loaded})
    if args.train_split not in loaded:
        raise ValueError(f"The dataset has no split {args.train_split!r}; it has {list(loaded)}.")
    train = loaded[args.train_split]
    if len(train) == 0:
        raise ValueError("The training split is empty.")
    validation = loaded.get(args.validation_split)
    return train, validation, args.response or recorded or DEFAULT_RESPONSE


def dataset_wavelengths(split: datasets.Dataset) -> list[float]:
    values = split.with_format("numpy", columns=["wavelengths"])[0]["wavelengths"]
    # Whole-nanometre bands as ints, so that the pipeline config matches its `list[int]` annotation.
    return [int(w) if float(w).is_integer() else float(w) for w in values]


def make_train_dataset(args, split: datasets.Dataset, response: str) -> PatchDataset:
    return PatchDataset(
        split,
        patch_size=args.resolution,
        patches_per_scene=args.patches_per_scene,
        response=response,
        rgb_mode=args.rgb_mode,
        seed=args.seed,
        in_memory=args.in_memory,
        degradation=make_degradation(args),
    )


# ---------------------------------------------------------------------------------------------------- models
def resolve_model(name_or_path: str) -> str:
    """A flag's model as `from_pretrained` finds it: bundled names map to their folder, offline."""
    from hsr_diffusers.pipelines.auto_pipeline import resolve_pretrained

    return resolve_pretrained(name_or_path)


def load_released(args, pipeline_class, wavelengths: list):
    """The released pipeline that `--pretrained_model_name_or_path` fine-tunes (bundled names resolve offline)."""
    released = pipeline_class.from_pretrained(resolve_model(args.pretrained_model_name_or_path))
    if list(released.config.wavelengths) != list(wavelengths):
        raise ValueError(
            f"{args.pretrained_model_name_or_path} has wavelengths {released.config.wavelengths}, the data {wavelengths}."
        )
    args.residual = "root_poly" if released.estimator is not None else "none"
    return released


def load_or_fit_estimator(
    args, accelerator, train_split, response, wavelengths, released=None
) -> RootPolynomialRegression | None:
    """
    The closed-form estimator of residual training (`--residual root_poly`), fitted once on the main process (or taken
    from the `released` pipeline being fine-tuned) and saved in `output_dir/estimator` so that a resumed run conditions
    on exactly the same estimate; None for `--residual none`.
    """
    if args.residual != "root_poly":
        return None
    estimator_dir = Path(args.output_dir) / "estimator"
    with accelerator.main_process_first():
        if released is not None:
            estimator = released.estimator
            if accelerator.is_main_process:
                estimator.save_pretrained(estimator_dir)
        elif (estimator_dir / "config.json").is_file():
            estimator = RootPolynomialRegression.from_pretrained(estimator_dir)
        else:
            estimator = fit_root_polynomial(
                train_split, response, wavelengths, args.rgb_mode, args.root_poly_degree, seed=args.seed
            )
            if accelerator.is_main_process:
                estimator.save_pretrained(estimator_dir)
    return estimator.requires_grad_(False).to(accelerator.device)


def make_train_dataloader(args, train_dataset, accelerator) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        train_dataset,
        batch_size=args.train_batch_size,
        shuffle=True,
        num_workers=args.dataloader_num_workers,
        drop_last=len(train_dataset) >= args.train_batch_size * accelerator.num_processes,
    )


# ---------------------------------------------------------------------------------------------------- resuming
def resolve_resume(args) -> tuple[Path | None, int]:
    """The checkpoint to resume from and its global step (None, 0 when starting fresh)."""
    if not args.resume_from_checkpoint:
        return None, 0
    if args.resume_from_checkpoint == "latest":
        found = list_checkpoints(args.output_dir)
        if not found:
            logger.info("No checkpoint found in the output directory: starting a new run.")
            return None, 0
        path = found[-1]
    else:
        path = Path(args.resume_from_checkpoint)
        if not path.is_dir() or not CHECKPOINT_PATTERN.match(path.name):
            raise FileNotFoundError(f"--resume_from_checkpoint {path} is not a checkpoint-N folder.")
    return path, int(CHECKPOINT_PATTERN.match(path.name).group(1))


class CheckpointedGenerator:
    """
    A `torch.Generator` for the training noise whose state is saved in every checkpoint (register it with
    `accelerator.register_for_checkpointing`). The global RNG is not enough: data loaders draw from it whenever an
    iterator starts, which a resumed run does at a different moment than an uninterrupted one.
    """

    def __init__(self, seed: int, device: torch.device):
        self.generator = torch.Generator(device).manual_seed(seed)

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


class Timer:
    """Wall time of a run, including the minutes of the runs it resumed from."""

    def __init__(self, previous_minutes: float = 0.0):
        self.start = time.perf_counter()
        self.previous = previous_minutes

    def minutes(self) -> float:
        return self.previous + (time.perf_counter() - self.start) / 60


def budget_spent(accelerator, timer: Timer, max_minutes: float | None) -> bool:
    """Whether the `--max_train_minutes` budget is spent, agreed by all processes (any rank over budget stops all)."""
    if max_minutes is None:
        return False
    over = torch.tensor(float(timer.minutes() >= max_minutes), device=accelerator.device)
    return bool(accelerator.reduce(over, reduction="sum").item() > 0)


# ---------------------------------------------------------------------------------------------------- validation
def validate(pipeline, split: datasets.Dataset | None, args, response, wavelengths, accelerator, call_kwargs: dict):
    """
    Runs the released pipeline on full validation scenes (tiled), sharded across processes, logging each scene as it
    goes; returns metrics gathered over all processes (mean over scenes) and, on the main process, a preview grid for
    the first scene.
    """
    count = 0 if split is None else min(len(split), args.max_validation_scenes)
    if count == 0:
        return {}, None
    mine = list(range(accelerator.process_index, count, accelerator.num_processes))
    names = split.with_format(None, columns=["name"])["name"] if "name" in split.column_names else None
    tile_size, tile_overlap = args.validation_tile_size, args.validation_tile_size // 8
    rows, grid = [], None
    for index in mine:
        start = time.perf_counter()
        cube = np.asarray(get_cube(split, index), dtype=np.float32)
        height, width = cube.shape[:2]
        tiles = pipeline.image_processor.num_tiles(height, width, tile_size, tile_overlap)
        name = names[index] if names is not None else f"#{index}"
        logger.info(
            f"validation scene {index + 1}/{count} ({name}, {height}x{width}, {tiles} tiles of {tile_size} px)"
        )
        rgb = render_training_rgb(cube, response, wavelengths, args.rgb_mode).astype(np.float32)
        pred = pipeline(rgb, tile_size=tile_size, tile_overlap=tile_overlap, **call_kwargs).cubes[0]
        rows.append(
            [
                metrics.mrae(pred, cube, eps=1 / 65535),
                metrics.rmse(pred, cube),
                metrics.psnr(pred, cube),
                metrics.sam(pred, cube),
            ]
        )
        logger.info(
            f"validation scene {index + 1}/{count} ({name}): MRAE {rows[-1][0]:.4f}, RMSE {rows[-1][1]:.4f}, "
            f"PSNR {rows[-1][2]:.2f}, SAM {rows[-1][3]:.4f} in {time.perf_counter() - start:.1f} s"
        )
        if index == 0:
            error = np.abs(pred - cube).mean(-1)
            error_map = np.repeat((np.clip(error / 0.1, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
            previews = pipeline.image_processor.cube_to_rgb(np.stack([cube, pred]))
            grid = np.concatenate([previews[0], previews[1], error_map], axis=1)  # truth | prediction | error
    local = torch.tensor(rows if rows else np.zeros((0, 4)), dtype=torch.float64, device=accelerator.device)
    # Pad to a common length so that gather works when scenes do not divide evenly among processes.
    per_process = math.ceil(count / accelerator.num_processes)
    padded = torch.full((per_process, 5), float("nan"), dtype=torch.float64, device=accelerator.device)
    padded[: len(local), :4] = local
    padded[: len(local), 4] = 1.0
    gathered = accelerator.gather(padded).cpu().numpy()
    gathered = gathered[gathered[:, 4] == 1.0][:, :4]
    keys = ["val/mrae", "val/rmse", "val/psnr", "val/sam"]
    return dict(zip(keys, gathered.mean(axis=0).tolist())), grid


def log_validation(accelerator, values: dict, grid: np.ndarray | None, step: int) -> None:
    """Validation metrics to the console (main process) and the trackers, the preview grid to TensorBoard."""
    if not values:
        return
    accelerator.log(values, step=step)
    if accelerator.is_main_process:
        logger.info("step %d: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in values.items()))
    if grid is not None and accelerator.is_main_process:
        for tracker in accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.add_images("val/truth_prediction_error", grid[None], step, dataformats="NHWC")


# ---------------------------------------------------------------------------------------------------- outputs
def machine_description(accelerator) -> str:
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
    if split is None or "name" not in split.column_names:
        return []
    return list(split.with_format(None, columns=["name"])["name"])


def describe_rgb_input(args, response: str) -> str:
    """How the run made the RGB it trained on, in words."""
    rendered = f'`render_rgb(cube, "{response}", mode="{args.rgb_mode}")`'
    if args.rgb_degradation == "none":
        return f"rendered with {rendered} for every patch"
    degradation = make_degradation(args)
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


def describe_loss_terms(args) -> str:
    weights = (("SAM", args.sam_weight), ("MRAE", args.mrae_weight))
    terms = [f"{name} weight {weight:g}" for name, weight in weights if weight]
    return ", ".join(terms) if terms else "no SAM or MRAE term"


def describe_ema(args) -> str:
    return f"EMA of the weights (decay {args.ema_decay:g}), released" if args.use_ema else "no EMA"


def run_facts(args, accelerator, timer, global_step, train_split, validation_split, values, response) -> dict:
    """The model-card facts that every training script states from its own run."""
    train_names, validation_names = scene_names(train_split), scene_names(validation_split)
    return {
        "training_command": args.command,
        "hardware": machine_description(accelerator),
        "wall_time_minutes": f"{timer.minutes():.1f}",
        "train_steps": global_step,
        "train_scenes": len(train_split),
        "train_scene_names": ", ".join(train_names) or "unnamed",
        "validation_scene_names": ", ".join(validation_names[: args.max_validation_scenes]) or "none",
        "validation_metrics": format_metrics(values),
        "validation_tile_size": args.validation_tile_size,
        "resolution": args.resolution,
        "patches_per_scene": args.patches_per_scene,
        "batch_size": args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps,
        "learning_rate": f"{args.learning_rate:g}",
        "response": response,
        "rgb_input": describe_rgb_input(args, response),
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


def push_folder(args, output_dir: str | Path) -> None:
    from huggingface_hub import create_repo, upload_folder

    repo_id = create_repo(args.hub_model_id or Path(output_dir).name, exist_ok=True, token=args.hub_token).repo_id
    upload_folder(
        repo_id=repo_id,
        folder_path=output_dir,
        ignore_patterns=["checkpoint-*", "logs/*", "prepared_dataset/*"],
        token=args.hub_token,
    )


# ---------------------------------------------------------------------------------------------------- DDPM scripts
# Shared by train_ddpm.py and distill_ddpm.py: both train a `UNet2DModel` released in an `HSRDiffusionPipeline`.
INFERENCE_SCHEDULERS = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "dpmsolver": "DPMSolverMultistepScheduler"}


def inference_scheduler(name: str, config):
    """The scheduler saved with the released pipeline, built from the training scheduler's config."""
    import diffusers

    # "trailing" spacing keeps the last (noisiest) training timestep in few-step schedules.
    return getattr(diffusers, INFERENCE_SCHEDULERS[name]).from_config(config, timestep_spacing="trailing")


def ddpm_condition(pipeline, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """UNet conditioning `[B, 3 (+bands), P, P]`, the estimate in [-1, 1] (or zeros) and the clean cube."""
    rgb, cube = batch["rgb"], batch["cube"]  # [B, 3, P, P], [B, bands, P, P] in [-1, 1]
    if pipeline.estimator is None:
        return rgb, torch.zeros_like(cube), cube
    processor = pipeline.image_processor
    with torch.no_grad():
        base = processor.normalize(pipeline.prepare_estimate(processor.denormalize(rgb)))
    return torch.cat([rgb, base], dim=1), base, cube


def register_unet_hooks(accelerator, ema_unet) -> None:
    """accelerate hooks: checkpoints hold diffusers-format folders (`unet/`, `unet_ema/`) besides the optimiser state."""
    from diffusers import UNet2DModel
    from diffusers.training_utils import EMAModel

    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            if ema_unet is not None:
                ema_unet.save_pretrained(os.path.join(output_dir, "unet_ema"))
            for model in models:
                model.save_pretrained(os.path.join(output_dir, "unet"))
                weights.pop()

    def load_model_hook(models, input_dir):
        if ema_unet is not None:
            loaded = EMAModel.from_pretrained(os.path.join(input_dir, "unet_ema"), UNet2DModel)
            ema_unet.load_state_dict(loaded.state_dict())
            ema_unet.to(accelerator.device)
        for _ in range(len(models)):
            model = models.pop()
            loaded = UNet2DModel.from_pretrained(input_dir, subfolder="unet")
            model.register_to_config(**loaded.config)
            model.load_state_dict(loaded.state_dict())

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)


def build_ddpm_pipeline(accelerator, unet, ema_unet, noise_scheduler, pipeline, args):
    """The released pipeline: a copy of the (EMA) UNet, the inference scheduler, the estimator and the config."""
    from diffusers import UNet2DModel

    from hsr_diffusers import HSRDiffusionPipeline

    model = accelerator.unwrap_model(unet)
    if ema_unet is not None:
        model = UNet2DModel.from_config(model.config)
        ema_unet.copy_to(model.parameters())
    return HSRDiffusionPipeline(
        unet=model,
        scheduler=inference_scheduler(args.inference_scheduler, noise_scheduler.config),
        estimator=pipeline.estimator,
        wavelengths=pipeline.config.wavelengths,
        response=pipeline.config.response,
        residual_scale=args.residual_scale,
        **args.release_defaults,
    )


def validate_ddpm(args, accelerator, unet, ema_unet, noise_scheduler, pipeline, validation_split):
    """Validation of the pipeline the run would release now, at `--validation_inference_steps`."""
    released = build_ddpm_pipeline(accelerator, unet, ema_unet, noise_scheduler, pipeline, args)
    released = released.to(accelerator.device)
    released.set_progress_bar_config(disable=True)
    released.unet.eval()
    values, grid = validate(
        released,
        validation_split,
        args,
        pipeline.config.response,
        pipeline.config.wavelengths,
        accelerator,
        {"num_inference_steps": args.validation_inference_steps, "generator": torch.Generator().manual_seed(0)},
    )
    unet.train()
    return values, grid


def ddpm_card_facts(args, noise_scheduler) -> dict:
    """The DDPM-specific facts of a model card, from the run."""
    sampler = type(inference_scheduler(args.inference_scheduler, noise_scheduler.config)).__name__
    steps = args.validation_inference_steps
    return {
        "prediction_type": args.prediction_type,
        "residual": args.residual,
        "residual_scale": f"{args.residual_scale:.4g}",
        "loss": args.loss.upper(),
        "sampler": sampler,
        "validation_steps_used": steps,
        "validation_sampling": f"{steps} {sampler} step{'s' if steps != 1 else ''}",
        "default_num_inference_steps": args.release_defaults.get("default_num_inference_steps", "the pipeline's"),
    }
