"""Validation of the training scripts: the released pipeline on whole validation scenes, tiled and sharded across
processes, with metrics to the console and the trackers.
"""

import logging
import math
import time

import datasets
import numpy as np
import script_data
import torch

from hsr_diffusers import metrics
from hsr_diffusers.data import get_cube
from hsr_diffusers.data.rendering import render_training_rgb


logger = logging.getLogger(__name__)


def validate(pipeline, split: datasets.Dataset | None, args, response, wavelengths, accelerator, call_kwargs: dict):
    """
    Runs the released pipeline on full validation scenes (tiled), sharded across processes, logging each scene as it
    goes; returns metrics gathered over all processes (mean over scenes) and, on the main process, a preview grid for
    the first scene.
    """
    order = script_data.validation_order(args, split)
    count = len(order)
    if count == 0:
        return {}, None
    mine = order[accelerator.process_index :: accelerator.num_processes]
    names = split.with_format(None, columns=["name"])["name"] if "name" in split.column_names else None
    tile_size, tile_overlap = args.validation_tile_size, args.validation_tile_size // 8
    rows, grid = [], None
    for index in mine:
        start = time.perf_counter()
        cube = np.asarray(get_cube(split, index), dtype=np.float32)
        if getattr(args, "exposure", "none") != "none":
            # A run that sets each patch's level from the data scores each scene at a fixed level: divided by its
            # maximum, as benchmarks/icvl_tables.py scores the ICVL strips (their stored levels span 0.1-0.85).
            cube = cube / max(float(cube.max()), 1e-6)
        height, width = cube.shape[:2]
        tiles = pipeline.image_processor.num_tiles(height, width, tile_size, tile_overlap)
        name = names[index] if names is not None else f"#{index}"
        logger.info(f"validation scene {name} ({height}x{width}, {tiles} tiles of {tile_size} px)")
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
            f"validation scene {name}: MRAE {rows[-1][0]:.4f}, RMSE {rows[-1][1]:.4f}, "
            f"PSNR {rows[-1][2]:.2f}, SAM {rows[-1][3]:.4f} in {time.perf_counter() - start:.1f} s"
        )
        if index == order[0]:
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


def validate_release(released, trained_model, split, args, accelerator, call_kwargs: dict):
    """`validate` on the pipeline a run would release now (built around `trained_model` or its EMA copy), with the
    trained model put back in training mode afterwards."""
    released = released.to(accelerator.device)
    released.set_progress_bar_config(disable=True)
    released.unet.eval()
    response, wavelengths = released.config.response, released.config.wavelengths
    values, grid = validate(released, split, args, response, wavelengths, accelerator, call_kwargs)
    trained_model.train()
    return values, grid


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
