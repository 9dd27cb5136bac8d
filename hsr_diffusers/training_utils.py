"""Training helpers that a user of the package needs outside the training scripts, as `diffusers.training_utils` is.

- [`render_training_rgb`]: the RGB that training renders from a cube, as the model sees it (linear, in [0, 1]).
- [`fit_root_polynomial`]: the closed-form root-polynomial estimator that residual models condition on.
- [`sam_loss`], [`mrae_loss`], [`spectral_loss`]: differentiable spectral loss terms on predicted cubes.
- [`list_checkpoints`], [`save_checkpoint`], [`read_checkpoint_meta`]: `checkpoint-N` folders written atomically, so
  that a crash while saving never leaves a folder that `--resume_from_checkpoint latest` would pick.
- [`format_metrics`], [`write_model_card`]: the README.md written beside a released pipeline.

The argument parsing and accelerator set-up of the training scripts stay beside them in `train_scripts/`.
"""

import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import datasets
import numpy as np
import torch

from hsr_diffusers.data import get_cube
from hsr_diffusers.models import RootPolynomialRegression
from hsr_diffusers.spectral import render_rgb


__all__ = [
    "CHECKPOINT_PATTERN",
    "fit_root_polynomial",
    "format_metrics",
    "list_checkpoints",
    "mrae_loss",
    "read_checkpoint_meta",
    "render_training_rgb",
    "sam_loss",
    "save_checkpoint",
    "spectral_loss",
    "write_model_card",
]

logger = logging.getLogger(__name__)

# `checkpoint-<global step>`; a folder being written is `checkpoint-<step>.tmp` and never matches.
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# Written into each checkpoint beside accelerate's state: values a resumed run needs (wall time so far, ...).
CHECKPOINT_META_FILE = "train_meta.json"


# ----------------------------------------------------------------------------------------------------------------------
# Data and the closed-form estimator
# ----------------------------------------------------------------------------------------------------------------------


def render_training_rgb(
    cube: np.ndarray, response: str | np.ndarray, wavelengths, rgb_mode: str = "ntire2020_clean"
) -> np.ndarray:
    r"""
    The RGB of a whole cube as the training scripts render it, in the value range the models see.

    Args:
        cube (`np.ndarray` of shape `(H, W, bands)`):
            Reflectance in [0, 1].
        response (`str` or `np.ndarray`):
            Camera response (see `hsr_diffusers.spectral.load_response`).
        wavelengths (`list[float]` or `np.ndarray`):
            Band centres of `cube` in nm.
        rgb_mode (`str`, *optional*, defaults to `"ntire2020_clean"`):
            `render_rgb` mode. The `"real_world"` noise is drawn with seed 0, so the same cube gives the same RGB.

    Returns:
        `np.ndarray`: `(H, W, 3)` linear RGB in [0, 1] (8-bit modes divided by 255, linear ones clipped).
    """
    rgb = render_rgb(cube, response, mode=rgb_mode, wavelengths=wavelengths, seed=0)
    return rgb / 255.0 if rgb.dtype == np.uint8 else np.clip(rgb, 0.0, 1.0)


def fit_root_polynomial(
    cubes: datasets.Dataset | Iterable[np.ndarray],
    response: str | np.ndarray,
    wavelengths,
    rgb_mode: str = "ntire2020_clean",
    degree: int = 2,
    pixels_per_scene: int = 20000,
    seed: int = 0,
) -> RootPolynomialRegression:
    r"""
    Fits a root-polynomial regression (Finlayson et al. 2015) from rendered RGB to the bands, in closed form.

    The same fit gives the regression floor (`train_scripts/train_regression.py`) and the estimator whose residual the
    DDPM and PixelGAN learn (`--residual root_poly`). Random pixels are drawn one scene at a time, so memory holds one
    cube plus the drawn pixels.

    Args:
        cubes (`datasets.Dataset` or iterable of `np.ndarray`):
            A split written by `hsr_diffusers.data.build_dataset`, or `(H, W, bands)` cubes.
        response (`str` or `np.ndarray`):
            Camera response that renders the RGB (see [`render_training_rgb`]).
        wavelengths (`list[float]`):
            Band centres of the cubes in nm.
        rgb_mode (`str`, *optional*, defaults to `"ntire2020_clean"`):
            How the RGB is rendered, as in training.
        degree (`int`, *optional*, defaults to 2):
            Root-polynomial degree: 1, 2 or 3 (3, 6 or 13 terms).
        pixels_per_scene (`int`, *optional*, defaults to 20000):
            Random pixels drawn from each scene (all pixels of smaller scenes).
        seed (`int`, *optional*, defaults to 0):
            Seed of the pixel draw.

    Returns:
        [`RootPolynomialRegression`]: the fitted model, `in_channels=3`, `out_channels=len(wavelengths)`.
    """
    if isinstance(cubes, datasets.Dataset):
        split = cubes
        cubes = (get_cube(split, index) for index in range(len(split)))
    rng = np.random.default_rng(seed)
    rgbs, pixels = [], []
    for cube in cubes:
        cube = np.asarray(cube, dtype=np.float32)
        rgb = render_training_rgb(cube, response, wavelengths, rgb_mode)
        num_pixels = cube.shape[0] * cube.shape[1]
        flat = rng.choice(num_pixels, size=min(pixels_per_scene, num_pixels), replace=False)
        pixels.append(cube.reshape(-1, cube.shape[-1])[flat])
        rgbs.append(rgb.reshape(-1, 3)[flat])
    if not pixels:
        raise ValueError("No cubes to fit the root polynomial on.")
    model = RootPolynomialRegression(degree=degree, in_channels=3, out_channels=len(wavelengths))
    return model.fit(np.concatenate(rgbs), np.concatenate(pixels))


# ----------------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------------


def sam_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""
    Mean spectral angle in radians between `[N, bands, H, W]` cubes.

    The cosine is clamped away from ±1 because the gradient of `arccos` is infinite there (identical spectra).
    """
    cosine = torch.nn.functional.cosine_similarity(pred, target, dim=1, eps=1e-6)
    return torch.arccos(cosine.clamp(-1 + 1e-6, 1 - 1e-6)).mean()


def mrae_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    r"""
    Mean relative absolute error `|pred - target| / (|target| + eps)`; `eps` keeps the exact zeros of CAVE finite.
    """
    return ((pred - target).abs() / (target.abs() + eps)).mean()


def spectral_loss(
    pred: torch.Tensor, target: torch.Tensor, sam_weight: float = 0.0, mrae_weight: float = 0.0
) -> torch.Tensor:
    r"""
    The weighted sum `sam_weight * sam_loss + mrae_weight * mrae_loss` (a zero weight skips its term).

    Args:
        pred (`torch.Tensor` of shape `[N, bands, H, W]`):
            Predicted cube in [0, 1].
        target (`torch.Tensor` of shape `[N, bands, H, W]`):
            True cube in [0, 1].
        sam_weight (`float`, *optional*, defaults to 0.0):
            Weight of [`sam_loss`].
        mrae_weight (`float`, *optional*, defaults to 0.0):
            Weight of [`mrae_loss`].

    Returns:
        `torch.Tensor`: a scalar (zero when both weights are zero).
    """
    loss = pred.new_zeros(())
    if sam_weight:
        loss = loss + sam_weight * sam_loss(pred, target)
    if mrae_weight:
        loss = loss + mrae_weight * mrae_loss(pred, target)
    return loss


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    r"""
    The complete `checkpoint-N` folders of a run, sorted by step (half-written `checkpoint-N.tmp` folders never match).

    Args:
        output_dir (`str` or `os.PathLike`):
            The run's output folder; a missing folder has no checkpoints.

    Returns:
        `list[Path]`: oldest first, so `list_checkpoints(run)[-1]` is the latest.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if path.is_dir() and CHECKPOINT_PATTERN.match(path.name)]
    return sorted(found, key=lambda path: int(CHECKPOINT_PATTERN.match(path.name).group(1)))


def read_checkpoint_meta(checkpoint: str | os.PathLike | None) -> dict:
    r"""
    The values saved beside a checkpoint's state by [`save_checkpoint`] (`{}` for None or a checkpoint without them).
    """
    if checkpoint is None or not (Path(checkpoint) / CHECKPOINT_META_FILE).is_file():
        return {}
    return json.loads((Path(checkpoint) / CHECKPOINT_META_FILE).read_text())


def save_checkpoint(
    accelerator,
    output_dir: str | os.PathLike,
    step: int,
    total_limit: int | None = None,
    meta: dict | None = None,
) -> Path:
    r"""
    Saves the full training state (`accelerator.save_state`) to `output_dir/checkpoint-<step>`, atomically.

    The state is written to `checkpoint-<step>.tmp` and renamed when complete, so a crash while saving never leaves a
    folder that [`list_checkpoints`] returns. Older checkpoints beyond `total_limit` are removed only after the new one
    is complete. Every process must call it (accelerate saves per-process RNG states).

    Args:
        accelerator (`accelerate.Accelerator`):
            The run's accelerator, with its save hooks registered.
        output_dir (`str` or `os.PathLike`):
            The run's output folder.
        step (`int`):
            The global step, which names the folder.
        total_limit (`int`, *optional*):
            Checkpoints to keep, this one included; all when None.
        meta (`dict`, *optional*):
            JSON values saved with the state, read back with [`read_checkpoint_meta`].

    Returns:
        `Path`: the `checkpoint-<step>` folder.
    """
    final = Path(output_dir) / f"checkpoint-{step}"
    partial = Path(output_dir) / f"checkpoint-{step}.tmp"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / CHECKPOINT_META_FILE).write_text(json.dumps(meta or {}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        if total_limit is not None:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old)
        logger.info(f"Saved state to {final}")
    accelerator.wait_for_everyone()
    return final


# ----------------------------------------------------------------------------------------------------------------------
# Model cards
# ----------------------------------------------------------------------------------------------------------------------


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
    Writes the `README.md` of a released pipeline folder: a template with `{field}` placeholders filled from `facts`.

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
    return card
