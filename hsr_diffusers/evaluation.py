"""Evaluation harness: every method on the same scenes, from the same RGB, scored with the same metrics.

[`evaluate`] runs saved pipelines (or pipelines in memory) on one split of a dataset written by `hsr data prepare` and
scores each scene with [`hsr_diffusers.metrics`]: MRAE, RMSE, PSNR, SAM (radians and degrees), SSIM and the
back-projection MRAE, plus the wall time of the pipeline call. For a diffusion pipeline run with `num_samples > 1` the
metrics are those of the sample mean, and the predicted standard deviation is checked against the actual error
([`uncertainty_calibration`]). [`EvaluationResult`] holds the per-image rows and writes Markdown, CSV and JSON.

Protocol choices, stated in every table:

- The input RGB is the dataset's paired RGB when a scene has one, else the cube rendered through the pipeline's own
  camera response (`pipe.config.response`) in the training scripts' mode (`"ntire2020_clean"`: 8 bits). The pipelines
  all see exactly that RGB, divided by 255.
- MRAE divides by `target + mrae_eps` (default 1/65535, one 16-bit level) because CAVE has exact zeros, where the
  official definition is undefined.
- The back-projection MRAE compares the predicted cube rendered through the response with the linear RGB the pipeline
  saw (the quantised values, not the unquantised rendering), dividing by `rgb + backprojection_eps` (default 1/255, one
  8-bit level: black pixels are exact zeros there too).
- Nothing is dropped: a prediction with NaN or Inf gets NaN metrics and a count in `nonfinite_values`, and means are
  plain means, so one NaN scene makes the method's mean NaN.
"""

import csv
import dataclasses
import io
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from diffusers import DiffusionPipeline

from hsr_diffusers import metrics
from hsr_diffusers.data.dataset import get_cube, get_paired_rgb
from hsr_diffusers.data.degradation import PhotoSettings, render_photo
from hsr_diffusers.data.rendering import render_training_rgb
from hsr_diffusers.pipelines import HSRPipeline
from hsr_diffusers.spectral import RENDER_MODES


__all__ = [
    "CALIBRATION_COLUMNS",
    "METRIC_COLUMNS",
    "CalibrationStats",
    "EvaluationResult",
    "evaluate",
    "uncertainty_calibration",
]

logger = logging.getLogger(__name__)

# Per-image metrics in table order, and the calibration columns of sampled diffusion pipelines.
METRIC_COLUMNS = ("mrae", "rmse", "psnr", "sam", "sam_deg", "ssim", "backprojection_mrae")
CALIBRATION_COLUMNS = ("sigma_error_pearson", "within_1sigma", "within_2sigma")
# Markdown header and number format of each column.
_HEADERS = {
    "mrae": ("MRAE ↓", ".4f"),
    "rmse": ("RMSE ↓", ".4f"),
    "psnr": ("PSNR (dB) ↑", ".2f"),
    "sam": ("SAM (rad) ↓", ".4f"),
    "sam_deg": ("SAM (°) ↓", ".2f"),
    "ssim": ("SSIM ↑", ".4f"),
    "backprojection_mrae": ("Back-proj. MRAE ↓", ".3g"),  # ~1e-7 with the RGB-consistency projection
    "time_s": ("s / image", ".2f"),
    "sigma_error_pearson": ("Pearson(σ, abs. error)", ".3f"),
    "within_1sigma": ("inside ±1σ (Gaussian 0.683)", ".3f"),
    "within_2sigma": ("inside ±2σ (Gaussian 0.954)", ".3f"),
}


def _format(value: float | None, spec: str) -> str:
    if value is None:
        return "–"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


# ----------------------------------------------------------------------------------------------------------------------
# Uncertainty calibration
# ----------------------------------------------------------------------------------------------------------------------


class CalibrationStats:
    r"""
    Streaming calibration statistics of a predicted standard deviation `sigma` against the actual error of the
    prediction, pooled over every pixel and band of every image given to [`~CalibrationStats.update`].

    The Pearson correlation is accumulated with the pairwise update of Chan, Golub and LeVeque (1979), so pooling
    many megapixel images in float64 loses no precision and needs no copy of the data.

    `result()` returns:

    - `sigma_error_pearson`: Pearson correlation between `sigma` and `|pred - target|` (NaN when either is constant,
      for instance all-zero `sigma`);
    - `within_1sigma`, `within_2sigma`: the fraction of true values with `|pred - target| <= k * sigma` (0.683 and 0.954
      for a calibrated Gaussian);
    - `num_values`: how many values were pooled.
    """

    def __init__(self):
        self.count = 0
        self.mean_sigma = self.mean_error = 0.0
        self.m2_sigma = self.m2_error = self.co_moment = 0.0
        self.inside = {1: 0, 2: 0}
        self.invalid = False

    def update(self, pred: np.ndarray, sigma: np.ndarray, target: np.ndarray) -> None:
        """Adds one image (any shape, the three arrays alike). Non-finite input makes every result NaN."""
        pred, sigma, target = (np.asarray(x, dtype=np.float64).ravel() for x in (pred, sigma, target))
        if not pred.shape == sigma.shape == target.shape:
            raise ValueError(f"pred, sigma and target sizes differ: {pred.size}, {sigma.size}, {target.size}.")
        if not (np.isfinite(pred).all() and np.isfinite(sigma).all() and np.isfinite(target).all()):
            self.invalid = True
            return
        error = np.abs(pred - target)
        count = error.size
        if count == 0:
            return
        mean_sigma, mean_error = sigma.mean(), error.mean()
        d_sigma, d_error = sigma - mean_sigma, error - mean_error
        m2_sigma, m2_error, co_moment = d_sigma @ d_sigma, d_error @ d_error, d_sigma @ d_error
        total = self.count + count
        delta_sigma, delta_error = mean_sigma - self.mean_sigma, mean_error - self.mean_error
        weight = self.count * count / total
        self.m2_sigma += m2_sigma + delta_sigma**2 * weight
        self.m2_error += m2_error + delta_error**2 * weight
        self.co_moment += co_moment + delta_sigma * delta_error * weight
        self.mean_sigma += delta_sigma * count / total
        self.mean_error += delta_error * count / total
        self.count = total
        for k in self.inside:
            self.inside[k] += int(np.count_nonzero(error <= k * sigma))

    def result(self) -> dict[str, float]:
        if self.invalid or self.count == 0:
            nan = float("nan")
            return {"sigma_error_pearson": nan, "within_1sigma": nan, "within_2sigma": nan, "num_values": self.count}
        # A constant sigma or error (up to rounding of its mean) has no correlation: NaN, not a rounding-noise value.
        constant = any(
            m2 <= self.count * (1e-10 * abs(mean)) ** 2
            for m2, mean in ((self.m2_sigma, self.mean_sigma), (self.m2_error, self.mean_error))
        )
        pearson = float("nan") if constant else self.co_moment / math.sqrt(self.m2_sigma * self.m2_error)
        return {
            "sigma_error_pearson": float(pearson),
            "within_1sigma": self.inside[1] / self.count,
            "within_2sigma": self.inside[2] / self.count,
            "num_values": self.count,
        }


def uncertainty_calibration(
    pred: np.ndarray, sigma: np.ndarray, target: np.ndarray, crop: int = 0
) -> dict[str, float]:
    r"""
    Calibration of a predicted per-value standard deviation on one or more images (see [`CalibrationStats`]).

    Args:
        pred (`np.ndarray`): predicted cube(s), channel-last `(H, W, bands)` or `(N, H, W, bands)`.
        sigma (`np.ndarray`): predicted standard deviation, same shape.
        target (`np.ndarray`): true cube(s), same shape.
        crop (`int`, *optional*, defaults to 0): pixels removed from every border first, as in the metrics.

    Returns:
        `dict`: `sigma_error_pearson`, `within_1sigma`, `within_2sigma` and `num_values`.
    """
    stats = CalibrationStats()
    if crop:
        pred, sigma, target = (np.asarray(x)[..., crop:-crop, crop:-crop, :] for x in (pred, sigma, target))
    stats.update(pred, sigma, target)
    return stats.result()


# ----------------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    r"""
    The outcome of [`evaluate`].

    Args:
        rows (`list[dict]`):
            One row per (method, scene): `method`, `scene`, `height`, `width`, the [`METRIC_COLUMNS`], `time_s` (wall
            time of the pipeline call), `nonfinite_values` (NaN/Inf values in the prediction; the metrics are NaN when
            it is not 0) and, for diffusion pipelines with several samples, the [`CALIBRATION_COLUMNS`] of that scene.
        methods (`dict[str, dict]`):
            Per method, in evaluation order: `pipeline` (class name), `model` (network class, with the estimator),
            `num_parameters`, `source` (folder or `"in memory"`), `response` and `run_with` (tiling and, for
            diffusion pipelines, steps as actually used).
        calibration (`dict[str, dict]`):
            Per diffusion method run with `num_samples > 1`: the calibration pooled over every value of every scene.
        settings (`dict`):
            The protocol: dataset, split, scenes, crop, sampling, tiling, RGB and epsilon choices.
    """

    rows: list[dict]
    methods: dict[str, dict]
    calibration: dict[str, dict] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def scenes(self) -> list[str]:
        """Scene names in evaluation order."""
        return list(dict.fromkeys(row["scene"] for row in self.rows))

    def means(self) -> dict[str, dict[str, float]]:
        """Plain mean over scenes of every metric and of `time_s`, per method (NaN and inf propagate)."""
        means = {}
        for method in self.methods:
            rows = [row for row in self.rows if row["method"] == method]
            means[method] = {
                column: float(np.mean([row[column] for row in rows])) if rows else float("nan")
                for column in (*METRIC_COLUMNS, "time_s")
            }
        return means

    # ------------------------------------------------------------------------------------------------ Markdown
    def protocol_text(self) -> str:
        """One paragraph stating how the numbers were made."""
        s = self.settings
        crop = f"a border crop of {s['crop']} px" if s["crop"] else "full images (no border crop)"
        tiles = (
            f"tiles of {s['tile_size']} px with {s['tile_overlap']} px overlap"
            if s["tile_size"]
            else "each pipeline's own default tiling (column *Run with*)"
        )
        rgb = (
            f"`{s['rgb_mode']}` rendering of the cube through each pipeline's response (the dataset's paired RGB where a "
            "scene has one)"
        )
        if s.get("photo"):
            rgb = (
                f"a photo of the cube as `render_photo` takes it, with {s['photo']}, in each pipeline's response space"
            )
        steps = s["num_inference_steps"] or "their default number of"
        sampling = (
            f"diffusion pipelines: {steps} steps, {s['num_samples']} sample(s) per image "
            f"({'metrics of the sample mean' if s['num_samples'] > 1 else 'one sample'}), seed {s['seed']}"
        )
        return (
            f"Split `{s['split']}` of `{s['dataset']}` ({s['num_scenes']} scenes), {crop}, {tiles}. Input: {rgb}. "
            f"RGB-consistency projection {'on' if s['rgb_consistency'] else 'off'}; {sampling}. MRAE divides by "
            f"`target + {_eps_text(s['mrae_eps'])}` (exact zeros make the plain MRAE undefined); back-projection MRAE "
            f"compares the cube rendered through the response with the RGB the pipeline saw, dividing by "
            f"`rgb + {_eps_text(s['backprojection_eps'])}`. Time: wall-clock seconds of the pipeline call per image "
            f"on {s.get('device', 'cpu')}."
        )

    def mean_table(self) -> str:
        """One row per method: the mean over scenes of every metric, the parameter count and the time per image."""
        columns = (*METRIC_COLUMNS, "time_s")
        header = ["Method", "Model", "Params (M)", "Run with", *(_HEADERS[c][0] for c in columns)]
        lines = _table_head(header)
        for method, values in self.means().items():
            info = self.methods[method]
            cells = [method, info["model"], f"{info['num_parameters'] / 1e6:.3g}", info.get("run_with", "")]
            cells += [_format(values[c], _HEADERS[c][1]) for c in columns]
            lines.append(_table_row(cells))
        return "\n".join(lines)

    def per_scene_table(self, metrics: tuple[str, ...] = ("mrae", "rmse", "sam_deg")) -> str:
        """One row per scene and a final mean row; one column group (`metrics`) per method."""
        unknown = [m for m in metrics if m not in _HEADERS]
        if unknown:
            raise ValueError(f"Unknown metrics {unknown}; choose from {list(_HEADERS)}.")
        header = ["Scene"] + [f"{method} {_HEADERS[m][0]}" for method in self.methods for m in metrics]
        lines = _table_head(header)
        by_key = {(row["method"], row["scene"]): row for row in self.rows}
        for scene in self.scenes:
            cells = [scene]
            for method in self.methods:
                row = by_key.get((method, scene))
                cells += [_format(None if row is None else row[m], _HEADERS[m][1]) for m in metrics]
            lines.append(_table_row(cells))
        means = self.means()
        cells = ["**Mean**"] + [_format(means[method][m], _HEADERS[m][1]) for method in self.methods for m in metrics]
        lines.append(_table_row(cells))
        return "\n".join(lines)

    def calibration_table(self) -> str:
        """Pooled uncertainty calibration of the diffusion methods run with several samples ("" when there is none)."""
        if not self.calibration:
            return ""
        header = ["Method", "Samples", *(_HEADERS[c][0] for c in CALIBRATION_COLUMNS), "Values pooled"]
        lines = _table_head(header)
        for method, values in self.calibration.items():
            cells = [method, str(self.settings["num_samples"])]
            cells += [_format(values[c], _HEADERS[c][1]) for c in CALIBRATION_COLUMNS]
            lines.append(_table_row(cells + [f"{values['num_values']:,}"]))
        return "\n".join(lines)

    def to_markdown(self, per_scene_metrics: tuple[str, ...] = ("mrae", "rmse", "sam_deg"), level: int = 2) -> str:
        r"""
        The protocol paragraph, the mean table, the per-scene table (one row per scene, one column group of
        `per_scene_metrics` per method) and, for sampled diffusion pipelines, the calibration table.

        Args:
            per_scene_metrics (`tuple[str, ...]`, *optional*, defaults to `("mrae", "rmse", "sam_deg")`):
                Metrics of each method's column group in the per-scene table.
            level (`int`, *optional*, defaults to 2):
                Markdown heading level of the sections.
        """
        hashes = "#" * level
        parts = [self.protocol_text(), f"{hashes} Mean over scenes", self.mean_table()]
        parts += [f"{hashes} Per scene", self.per_scene_table(per_scene_metrics)]
        if self.calibration:
            parts += [
                f"{hashes} Uncertainty calibration",
                "Pooled over every pixel and band of every scene: correlation between the predicted standard "
                "deviation σ (spread of the samples) and the absolute error of their mean, and the fraction of true "
                "values within ±1σ and ±2σ of the mean.",
                self.calibration_table(),
            ]
        bad = [row for row in self.rows if row["nonfinite_values"]]
        if bad:
            listed = ", ".join(f"{row['method']}/{row['scene']} ({row['nonfinite_values']})" for row in bad)
            parts.append(f"**Warning:** predictions with NaN or Inf values, scored as NaN: {listed}.")
        return "\n\n".join(parts) + "\n"

    # ------------------------------------------------------------------------------------------------ files
    def to_csv(self, path: str | os.PathLike) -> Path:
        """Writes the per-image rows (one per method and scene); calibration cells are empty where not applicable."""
        columns = ["method", "scene", "height", "width", *METRIC_COLUMNS, "time_s", "nonfinite_values"]
        if any(c in row for row in self.rows for c in CALIBRATION_COLUMNS):
            columns += list(CALIBRATION_COLUMNS)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({key: row[key] for key in columns if key in row})
        path = Path(path)
        path.write_text(buffer.getvalue())
        return path

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "methods": self.methods,
            "scenes": self.scenes,
            "mean": self.means(),
            "calibration": self.calibration,
            "per_image": self.rows,
        }

    def to_json(self, path: str | os.PathLike) -> Path:
        """
        Writes settings, methods, means, calibration and per-image rows. NaN and inf are kept as the `NaN` and
        `Infinity` literals that Python's `json` (and pandas) read back, never turned into `null`.
        """
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def save(self, output_dir: str | os.PathLike, stem: str = "results") -> dict[str, Path]:
        """Writes `<stem>.md`, `<stem>.csv` and `<stem>.json` into `output_dir` (created if needed)."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        markdown = output_dir / f"{stem}.md"
        markdown.write_text(self.to_markdown())
        return {
            "md": markdown,
            "csv": self.to_csv(output_dir / f"{stem}.csv"),
            "json": self.to_json(output_dir / f"{stem}.json"),
        }


def _eps_text(eps: float) -> str:
    if eps == 0:
        return "0"
    inverse = 1 / eps
    return f"1/{round(inverse)}" if abs(inverse - round(inverse)) < 1e-6 * inverse else f"{eps:g}"


def _table_head(header: list[str]) -> list[str]:
    return [_table_row(header), "|" + "|".join("---" for _ in header) + "|"]


def _table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------------


def _load_split(dataset_path: str | os.PathLike, split: str) -> datasets.Dataset:
    path = Path(dataset_path)
    if not path.exists():
        raise FileNotFoundError(f"Dataset folder not found: {path}")
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"{path} has no split {split!r}; it has {list(loaded)}.")
        loaded = loaded[split]
    if len(loaded) == 0:
        raise ValueError(f"Split {split!r} of {path} is empty.")
    return loaded


def _input_rgb(split, index: int, cube: np.ndarray, response, wavelengths, rgb_mode: str, photo, seed: int):
    """The linear RGB in [0, 1] (float32) that the pipelines see for scene `index`."""
    if photo is not None:
        # Seeded per scene: every method sees the same noisy photo of a scene.
        return render_photo(cube, photo, response, wavelengths, np.random.default_rng((seed, index)))
    paired = get_paired_rgb(split, index)
    if paired is not None:
        return (paired / 255.0).astype(np.float32)
    return render_training_rgb(cube, response, wavelengths, rgb_mode).astype(np.float32)


def _describe(pipe: DiffusionPipeline, source: str) -> dict:
    modules = [pipe.unet] + ([pipe.estimator] if getattr(pipe, "estimator", None) is not None else [])
    model = type(pipe.unet).__name__
    if len(modules) > 1:
        model += f" + {type(modules[1]).__name__} estimator"
    return {
        "pipeline": type(pipe).__name__,
        "model": model,
        "num_parameters": int(sum(p.numel() for module in modules for p in module.parameters())),
        "source": source,
        "response": pipe.config.response,
    }


def _run_with(pipe: DiffusionPipeline, steps: int | None, tile_size: int | None, tile_overlap: int | None) -> str:
    """The sampling steps and tiling a pipeline runs with, read from its config as its `__call__` reads it."""
    config = pipe.config
    if tile_size is None:
        tile_size, tile_overlap = config.get("default_tile_size"), config.get("default_tile_overlap")
    text = f"tiles {tile_size}/{tile_overlap}" if tile_size else "whole image"
    if pipe.is_sampler:
        steps = steps or config.get("default_num_inference_steps")
        text = f"{steps or 'default'} steps, {text}"
    return text


def _score(pred, target, rgb, response, wavelengths, crop: int, mrae_eps: float, backprojection_eps: float) -> dict:
    """Every metric of one image, each from `hsr_diffusers.metrics`."""
    return {
        "mrae": metrics.mrae(pred, target, crop=crop, eps=mrae_eps),
        "rmse": metrics.rmse(pred, target, crop=crop),
        "psnr": metrics.psnr(pred, target, crop=crop),
        "sam": metrics.sam(pred, target, crop=crop),
        "sam_deg": metrics.sam_degrees(pred, target, crop=crop),
        "ssim": metrics.ssim(pred, target, crop=crop),
        "backprojection_mrae": metrics.backprojection_mrae(
            pred, rgb, response, crop=crop, eps=backprojection_eps, wavelengths=wavelengths
        ),
    }


def evaluate(
    pipelines: Mapping[str, DiffusionPipeline | str | os.PathLike],
    dataset_path: str | os.PathLike,
    split: str = "validation",
    crop: int = 0,
    num_inference_steps: int | None = None,
    num_samples: int = 1,
    seed: int = 0,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    max_scenes: int | None = None,
    rgb_consistency: bool = True,
    rgb_mode: str = "ntire2020_clean",
    photo: PhotoSettings | None = None,
    mrae_eps: float = 1 / 65535,
    backprojection_eps: float = 1 / 255,
    device: str | torch.device | None = None,
) -> EvaluationResult:
    r"""
    Runs every pipeline on every scene of a split and scores the predictions with [`hsr_diffusers.metrics`].

    Scenes are read one at a time (one cube in memory); for each, the RGB is made once per distinct camera response and
    given to every pipeline. Per-image rows keep the scene order of the split.

    Args:
        pipelines (`Mapping[str, DiffusionPipeline | str | os.PathLike]`):
            Method name to a loaded HSR pipeline, or to anything `HSRPipeline.from_pretrained` accepts (a folder, a
            bundled name such as `"hsr-diffusers/ddpm-cave"`, a Hub id).
        dataset_path (`str` or `os.PathLike`):
            A dataset folder written by `hsr data prepare` (or `hsr_diffusers.data.build_dataset`).
        split (`str`, *optional*, defaults to `"validation"`):
            Split to evaluate.
        crop (`int`, *optional*, defaults to 0):
            Pixels removed from every border before scoring (the ARAD_1K protocol uses 128).
        num_inference_steps (`int`, *optional*):
            Denoising steps of diffusion pipelines (ignored by feed-forward ones); defaults to each pipeline's own
            `default_num_inference_steps`.
        num_samples (`int`, *optional*, defaults to 1):
            Samples per image for diffusion pipelines: their mean is scored and, when more than one, their spread is
            checked with [`uncertainty_calibration`].
        seed (`int`, *optional*, defaults to 0):
            Seed of the sampling noise; each image gets a fresh `torch.Generator().manual_seed(seed)`, so a scene's
            result does not depend on the scenes evaluated before it.
        tile_size (`int`, *optional*):
            Run every pipeline tile by tile; defaults to each pipeline's own `default_tile_size` and overlap (whole
            images for pipelines without one), as `HSRPipeline.from_pretrained(...)(rgb)` runs them.
        tile_overlap (`int`, *optional*):
            Overlap of the tiles; defaults to `tile_size // 8`, as the training scripts' validation.
        max_scenes (`int`, *optional*):
            Evaluate only the first `max_scenes` scenes of the split.
        rgb_consistency (`bool`, *optional*, defaults to `True`):
            Passed to the pipelines.
        rgb_mode (`str`, *optional*, defaults to `"ntire2020_clean"`):
            How RGB is rendered for scenes without a paired RGB (`hsr_diffusers.spectral.render_rgb` mode); use the
            training scripts' `--rgb_mode`.
        photo (`PhotoSettings`, *optional*):
            Render every scene as a photo taken with these settings instead (camera, noise, mosaic, JPEG; see
            `hsr_diffusers.data.degradation.render_photo`), with noise seeded by `(seed, scene index)` so that every
            method sees the same photo. Paired RGB images are then not used.
        mrae_eps (`float`, *optional*, defaults to 1/65535):
            Added to the target in the MRAE denominator (one 16-bit level; 0 raises on exact zeros).
        backprojection_eps (`float`, *optional*, defaults to 1/255):
            Added to the RGB in the back-projection MRAE denominator (one 8-bit level of the input).
        device (`str` or `torch.device`, *optional*):
            Device to move the pipelines loaded here to (pipelines passed in are used where they are).

    Returns:
        [`EvaluationResult`]
    """
    if not pipelines:
        raise ValueError("No pipeline to evaluate.")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}.")
    if max_scenes is not None and max_scenes < 1:
        raise ValueError(f"max_scenes must be at least 1, got {max_scenes}.")
    if crop < 0:
        raise ValueError(f"crop must be non-negative, got {crop}.")
    if rgb_mode not in RENDER_MODES:
        raise ValueError(f"Unknown rgb_mode {rgb_mode!r}; choose one of {RENDER_MODES}.")
    if tile_size is not None and tile_overlap is None:
        tile_overlap = tile_size // 8

    # 1. Data: the split, its band centres, the scenes to use
    data = _load_split(dataset_path, split)
    wavelengths = [float(w) for w in data.with_format("numpy", columns=["wavelengths"])[0]["wavelengths"]]
    names = list(data.with_format(None)["name"])
    count = len(names) if max_scenes is None else min(max_scenes, len(names))

    # 2. Pipelines: load paths, check that each predicts the dataset's bands
    loaded, methods = {}, {}
    for name, pipe in pipelines.items():
        source = "in memory"
        if not isinstance(pipe, DiffusionPipeline):
            source = str(pipe)
            pipe = HSRPipeline.from_pretrained(pipe)
            pipe.set_progress_bar_config(disable=True)
            if device is not None:
                pipe.to(device)
        pipe_wavelengths = list(pipe.config.wavelengths)
        if len(pipe_wavelengths) != len(wavelengths) or not np.allclose(pipe_wavelengths, wavelengths, atol=0.5):
            raise ValueError(f"{name} predicts bands at {pipe_wavelengths} nm but the dataset has {wavelengths} nm.")
        loaded[name] = pipe
        methods[name] = _describe(pipe, source)
        methods[name]["run_with"] = _run_with(pipe, num_inference_steps, tile_size, tile_overlap)

    # 3. Score every scene with every pipeline
    rows, calibration = [], {}
    for index in range(count):
        cube = np.array(get_cube(data, index), dtype=np.float32)  # [H, W, bands], a copy of the memory map
        rgbs = {}
        for name, pipe in loaded.items():
            response = pipe.config.response
            key = json.dumps(response)
            if key not in rgbs:
                rgbs[key] = _input_rgb(data, index, cube, response, wavelengths, rgb_mode, photo, seed)
            rgb = rgbs[key]  # [H, W, 3] in [0, 1]

            kwargs = {"rgb_consistency": rgb_consistency, "tile_size": tile_size, "tile_overlap": tile_overlap}
            if pipe.is_sampler:
                kwargs.update(
                    num_inference_steps=num_inference_steps,
                    num_samples=num_samples,
                    generator=torch.Generator().manual_seed(seed),
                )
            start = time.perf_counter()
            output = pipe(rgb, **kwargs)
            elapsed = time.perf_counter() - start
            pred = np.asarray(output.cubes[0], dtype=np.float32)  # [H, W, bands]
            sigma = None if output.uncertainty is None else np.asarray(output.uncertainty[0], dtype=np.float32)

            row = {"method": name, "scene": names[index], "height": cube.shape[0], "width": cube.shape[1]}
            nonfinite = int(np.size(pred) - np.count_nonzero(np.isfinite(pred)))
            if nonfinite:
                logger.warning("%s on %s: %d NaN/Inf values; its metrics are NaN.", name, names[index], nonfinite)
                row.update({column: float("nan") for column in METRIC_COLUMNS})
            else:
                row.update(_score(pred, cube, rgb, response, wavelengths, crop, mrae_eps, backprojection_eps))
            row.update(time_s=elapsed, nonfinite_values=nonfinite)
            if sigma is not None:
                stats = calibration.setdefault(name, CalibrationStats())
                cropped = [x[crop:-crop, crop:-crop] if crop else x for x in (pred, sigma, cube)]
                stats.update(*cropped)
                row.update({c: v for c, v in uncertainty_calibration(*cropped).items() if c in CALIBRATION_COLUMNS})
            rows.append(row)
            logger.info(
                "%s %s: MRAE %.4f, RMSE %.4f, SAM %.2f°, %.1f s",
                name,
                names[index],
                row["mrae"],
                row["rmse"],
                row["sam_deg"],
                elapsed,
            )

    settings = {
        "dataset": str(dataset_path),
        "split": split,
        "num_scenes": count,
        "crop": crop,
        "num_inference_steps": num_inference_steps,
        "num_samples": num_samples,
        "seed": seed,
        "tile_size": tile_size,
        "tile_overlap": tile_overlap,
        "rgb_consistency": rgb_consistency,
        "rgb_mode": rgb_mode,
        "photo": None if photo is None else dataclasses.asdict(photo),
        "mrae_eps": mrae_eps,
        "backprojection_eps": backprojection_eps,
        "device": str(device) if device is not None else str(next(iter(loaded.values())).device),
    }
    return EvaluationResult(
        rows=rows,
        methods=methods,
        calibration={name: stats.result() for name, stats in calibration.items()},
        settings=settings,
    )
