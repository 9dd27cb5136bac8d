"""Training-only code shared by `train_ddpm.py` and `train_pixelgan.py`: flags, data, checkpoints, validation, cards.

Kept out of the `hsr_diffusers` package on purpose (diffusers keeps training code in `examples/`).
"""

import argparse
import json
import logging
import math
import os
import platform
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import torch

from hsr_diffusers import metrics
from hsr_diffusers.data import PatchDataset, build_dataset, get_cube, read_metadata
from hsr_diffusers.models import RootPolynomialRegression
from hsr_diffusers.spectral import DEFAULT_RESPONSE, RENDER_MODES, render_rgb


logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


# ---------------------------------------------------------------------------------------------------- flags
def load_preset(name_or_path: str) -> dict:
    """A preset from `configs/` by short name (`"small"` -> `configs/<family>_small.json`) or a JSON path."""
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"Model config {name_or_path!r} not found (looked for {path}).")
    return json.loads(path.read_text())


def preset_path(family: str, name: str) -> str:
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
        help="A dataset folder written by `hsr data prepare`, or a raw folder of cubes (prepared on the fly).",
    )
    data.add_argument("--train_split", type=str, default="train")
    data.add_argument("--validation_split", type=str, default="validation")
    data.add_argument(
        "--response",
        type=str,
        default=None,
        help="Camera response used to render RGB (default: the dataset's, else cie1964_ntire2020).",
    )
    data.add_argument("--rgb_mode", type=str, default="ntire2020_clean", choices=RENDER_MODES)
    return data


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by both network training scripts, spelled as in diffusers' training examples."""
    data = add_data_args(parser)
    data.add_argument("--resolution", type=int, default=64, help="Side of the square training patches.")
    data.add_argument("--patches_per_scene", type=int, default=32, help="Random patches per scene and epoch.")
    data.add_argument("--in_memory", action="store_true", help="Load every cube into RAM (default: stream from disk).")
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    train = parser.add_argument_group("optimisation")
    train.add_argument("--output_dir", type=str, required=True)
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
        "--residual",
        type=str,
        default="root_poly",
        choices=["none", "root_poly"],
        help="Learn the residual over a closed-form root-polynomial estimate ('none': the method's plain formulation).",
    )
    train.add_argument("--root_poly_degree", type=int, default=2)

    ckpt = parser.add_argument_group("checkpoints and logging")
    ckpt.add_argument("--checkpointing_steps", type=int, default=500)
    ckpt.add_argument("--checkpoints_total_limit", type=int, default=None)
    ckpt.add_argument("--resume_from_checkpoint", type=str, default=None, help="A checkpoint folder or 'latest'.")
    ckpt.add_argument("--validation_steps", type=int, default=500)
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
        help="Model card template (a path, or a name in model_cards/templates/).",
    )


def parse_with_preset(parser: argparse.ArgumentParser, family: str, argv: list[str] | None):
    """Parses flags; values in the preset's "training" section become defaults that explicit flags override."""
    known, _ = parser.parse_known_args(argv)
    preset = load_preset(preset_path(family, known.model_config))
    parser.set_defaults(**preset.get("training", {}))
    args = parser.parse_args(argv)
    args.preset = preset
    arguments = sys.argv[1:] if argv is None else argv
    args.command = shlex.join(["accelerate", "launch", f"train_scripts/train_{family}.py", *arguments])
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


# ---------------------------------------------------------------------------------------------------- data
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
            # A raw folder of cubes: prepare it once, next to the outputs (main process first, then the others read it).
            prepared = Path(args.output_dir) / "prepared_dataset"
            with accelerator.main_process_first():
                if not prepared.exists():
                    build_dataset(path, prepared, format="folder", response=args.response or DEFAULT_RESPONSE)
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
    )


def scene_rgb(cube: np.ndarray, response, wavelengths, rgb_mode: str) -> np.ndarray:
    """Linear RGB in [0, 1] of a whole scene, as the patch dataset renders it."""
    rgb = render_rgb(cube, response, mode=rgb_mode, wavelengths=wavelengths, seed=0)
    return rgb / 255.0 if rgb.dtype == np.uint8 else np.clip(rgb, 0.0, 1.0)


def fit_root_polynomial(
    split: datasets.Dataset,
    response,
    wavelengths,
    rgb_mode: str,
    degree: int,
    pixels_per_scene: int = 20000,
    seed: int = 0,
) -> RootPolynomialRegression:
    """Closed-form root-polynomial regression fitted on a random subset of the training pixels, one scene at a time."""
    rng = np.random.default_rng(seed)
    rgbs, cubes = [], []
    for index in range(len(split)):
        cube = np.asarray(get_cube(split, index), dtype=np.float32)
        rgb = scene_rgb(cube, response, wavelengths, rgb_mode)
        flat = rng.choice(
            cube.shape[0] * cube.shape[1], size=min(pixels_per_scene, cube.shape[0] * cube.shape[1]), replace=False
        )
        cubes.append(cube.reshape(-1, cube.shape[-1])[flat])
        rgbs.append(rgb.reshape(-1, 3)[flat])
    model = RootPolynomialRegression(degree=degree, in_channels=3, out_channels=len(wavelengths))
    return model.fit(np.concatenate(rgbs), np.concatenate(cubes))


def load_or_fit_estimator(args, accelerator, train_split, response, wavelengths) -> RootPolynomialRegression | None:
    """
    The closed-form estimator of residual training (`--residual root_poly`), fitted once on the main process and saved
    in `output_dir/estimator` so that a resumed run conditions on exactly the same estimate; None for `--residual none`.
    """
    if args.residual != "root_poly":
        return None
    estimator_dir = Path(args.output_dir) / "estimator"
    with accelerator.main_process_first():
        if (estimator_dir / "config.json").is_file():
            estimator = RootPolynomialRegression.from_pretrained(estimator_dir)
        else:
            estimator = fit_root_polynomial(
                train_split, response, wavelengths, args.rgb_mode, args.root_poly_degree, seed=args.seed
            )
            if accelerator.is_main_process:
                estimator.save_pretrained(estimator_dir)
    return estimator.requires_grad_(False).to(accelerator.device)


# ---------------------------------------------------------------------------------------------------- checkpoints
def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete `checkpoint-N` folders sorted by step (half-written `*.tmp` folders never match)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)))


def save_checkpoint(
    accelerator, output_dir: str | Path, step: int, total_limit: int | None, meta: dict | None = None
) -> Path:
    """
    Saves the full training state to `checkpoint-<step>` atomically: it is written to a temporary folder and renamed
    when complete, so a crash while saving never leaves a folder that `--resume_from_checkpoint latest` would pick.
    Older checkpoints beyond `total_limit` are removed after the new one is complete.
    """
    final = Path(output_dir) / f"checkpoint-{step}"
    partial = Path(output_dir) / f"checkpoint-{step}.tmp"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / "train_meta.json").write_text(json.dumps(meta or {}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        if total_limit is not None:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old)
        logger.info(f"Saved state to {final}")
    accelerator.wait_for_everyone()
    return final


def read_meta(checkpoint: Path | None) -> dict:
    """Values saved beside a checkpoint's state (wall time so far, residual scale, ...)."""
    if checkpoint is None or not (checkpoint / "train_meta.json").is_file():
        return {}
    return json.loads((checkpoint / "train_meta.json").read_text())


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


# ---------------------------------------------------------------------------------------------------- losses
def spectral_losses(pred: torch.Tensor, target: torch.Tensor, sam_weight: float, mrae_weight: float) -> torch.Tensor:
    """Weighted SAM and MRAE terms on `[N, bands, H, W]` cubes in [0, 1] (with small epsilons for stable gradients)."""
    loss = pred.new_zeros(())
    if sam_weight:
        cosine = torch.nn.functional.cosine_similarity(pred, target, dim=1, eps=1e-6)
        loss = loss + sam_weight * torch.arccos(cosine.clamp(-1 + 1e-6, 1 - 1e-6)).mean()
    if mrae_weight:
        loss = loss + mrae_weight * ((pred - target).abs() / (target.abs() + 1e-3)).mean()
    return loss


# ---------------------------------------------------------------------------------------------------- validation
def validate(pipeline, split: datasets.Dataset | None, args, response, wavelengths, accelerator, call_kwargs: dict):
    """
    Runs the released pipeline on full validation scenes (tiled), sharded across processes; returns metrics gathered
    over all processes (mean over scenes) and, on the main process, a preview grid for the first scene.
    """
    count = 0 if split is None else min(len(split), args.max_validation_scenes)
    if count == 0:
        return {}, None
    mine = list(range(accelerator.process_index, count, accelerator.num_processes))
    rows, grid = [], None
    for index in mine:
        cube = np.asarray(get_cube(split, index), dtype=np.float32)
        rgb = scene_rgb(cube, response, wavelengths, args.rgb_mode).astype(np.float32)
        pred = pipeline(
            rgb, tile_size=args.validation_tile_size, tile_overlap=args.validation_tile_size // 8, **call_kwargs
        ).cubes[0]
        rows.append(
            [
                metrics.mrae(pred, cube, eps=1 / 65535),
                metrics.rmse(pred, cube),
                metrics.psnr(pred, cube),
                metrics.sam(pred, cube),
            ]
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
    names = ["val/mrae", "val/rmse", "val/psnr", "val/sam"]
    return dict(zip(names, gathered.mean(axis=0).tolist())), grid


def log_validation(accelerator, values: dict, grid: np.ndarray | None, step: int) -> None:
    if not values:
        return
    accelerator.log(values, step=step)
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


def write_model_card(args, output_dir: str | Path, facts: dict) -> None:
    """Fills `model_cards/templates/<template>.md` (`{field}` placeholders) and writes it as the folder's README.md."""
    template_path = Path(args.model_card) if args.model_card else None
    if template_path is not None and not template_path.is_file():
        template_path = REPO_ROOT / "model_cards" / "templates" / args.model_card
    if template_path is None or not template_path.is_file():
        lines = ["# HSR pipeline", "", "Trained with hsr-diffusers.", ""]
        lines += [f"- **{key}**: {value}" for key, value in facts.items()]
        Path(output_dir, "README.md").write_text("\n".join(lines) + "\n")
        return
    Path(output_dir, "README.md").write_text(template_path.read_text().format_map(_Facts(facts)))


class _Facts(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def format_metrics(values: dict) -> str:
    if not values:
        return "(no validation split)"
    header = "| " + " | ".join(k.replace("val/", "").upper() for k in values) + " |"
    rule = "|" + "---|" * len(values)
    row = "| " + " | ".join(f"{v:.4f}" for v in values.values()) + " |"
    return "\n".join([header, rule, row])


def push_folder(args, output_dir: str | Path) -> None:
    from huggingface_hub import create_repo, upload_folder

    repo_id = create_repo(args.hub_model_id or Path(output_dir).name, exist_ok=True, token=args.hub_token).repo_id
    upload_folder(
        repo_id=repo_id,
        folder_path=output_dir,
        ignore_patterns=["checkpoint-*", "logs/*", "prepared_dataset/*"],
        token=args.hub_token,
    )


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
