from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hsr_diffusers.data import make_synthetic_dataset


TRAIN_SCRIPTS = Path(__file__).resolve().parents[2] / "train_scripts"
# Python puts a script's own folder first on `sys.path` when it runs the script, which is how the scripts find
# `script_args`, `script_data`, ...; pyproject.toml puts train_scripts/ on the test path for the same imports.


def common_args(dataset, output_dir, steps=2, *extra):
    """Flags of a tiny, fast run: the `tiny` preset, 32-px patches, a checkpoint every step, no trackers."""
    return [
        "--train_data_dir", str(dataset),
        "--output_dir", str(output_dir),
        "--model_config", "tiny",
        "--max_train_steps", str(steps),
        "--patches_per_scene", "4",
        "--train_batch_size", "2",
        "--checkpointing_steps", "1",
        "--checkpoints_total_limit", "1",
        "--validation_steps", "100",
        "--validation_tile_size", "32",
        "--max_validation_scenes", "1",
        "--report_to", "none",
        *extra,
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path_factory, monkeypatch) -> Path:
    """A raw `--train_data_dir` is prepared into the 🤗 datasets cache by default: a temporary one in these tests."""
    import datasets

    cache = tmp_path_factory.mktemp("hf_datasets_cache")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A prepared dataset with 3 training and 1 validation scene of 32x32x31."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), num_train=3, num_validation=1, height=32, width=32)


def write_cave_scene(folder: Path, cube: np.ndarray, prefix: str) -> None:
    """One scene as the CAVE download ships it: 16-bit grayscale PNGs `<prefix>_01.png` ... `<prefix>_31.png`."""
    folder.mkdir(parents=True, exist_ok=True)
    bands = np.round(np.clip(cube, 0, 1) * 65535).astype(np.uint16)
    for index in range(bands.shape[-1]):
        Image.fromarray(bands[..., index]).save(folder / f"{prefix}_{index + 1:02d}.png")


@pytest.fixture(scope="session")
def raw_cave_folder(tiny_dataset, tmp_path_factory) -> Path:
    """
    A raw CAVE-style download of four 32x32 scenes in the nested layout `<scene>_ms/<scene>_ms/<scene>_ms_NN.png`,
    two of them named as the built-in split's validation scenes.
    """
    root = tmp_path_factory.mktemp("cave_raw")
    cubes = sorted((tiny_dataset.parent / "cubes").glob("scene_*[0-9].npy"))
    for name, path in zip(["balloons", "beads", "feathers", "glass_tiles"], cubes + cubes[:1]):
        write_cave_scene(root / f"{name}_ms" / f"{name}_ms", np.load(path), f"{name}_ms")
    return root


def tiny_estimator(dataset: Path):
    from datasets import load_from_disk

    from hsr_diffusers.models import fit_root_polynomial
    from hsr_diffusers.spectral import DEFAULT_RESPONSE, WAVELENGTHS

    return fit_root_polynomial(load_from_disk(str(dataset))["train"], DEFAULT_RESPONSE, WAVELENGTHS, degree=1)


@pytest.fixture(scope="session")
def tiny_ddpm_release(tiny_dataset, tmp_path_factory) -> Path:
    """A saved residual `HSRDiffusionPipeline` (tiny preset UNet, sample prediction) with non-default settings."""
    from diffusers import DDIMScheduler, UNet2DModel

    from hsr_diffusers import HSRDiffusionPipeline

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=32,
        in_channels=3 + 31 + 31,
        out_channels=31,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )
    scheduler = DDIMScheduler(prediction_type="sample", clip_sample=False, timestep_spacing="trailing")
    pipeline = HSRDiffusionPipeline(
        unet=unet,
        scheduler=scheduler,
        estimator=tiny_estimator(tiny_dataset),
        residual_scale=3.0,
        default_num_inference_steps=2,
        default_tile_size=32,
        default_tile_overlap=4,
    )
    folder = tmp_path_factory.mktemp("ddpm_release")
    pipeline.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_pixelgan_release(tiny_dataset, tmp_path_factory) -> Path:
    """A saved residual `HSRFeedForwardPipeline` with the tiny preset's generator."""
    from hsr_diffusers import HSRFeedForwardPipeline, HSRPixelGANGenerator

    torch.manual_seed(0)
    generator = HSRPixelGANGenerator(in_channels=3 + 31, out_channels=31, num_downs=3, ngf=8, norm_type="instance")
    pipeline = HSRFeedForwardPipeline(unet=generator, estimator=tiny_estimator(tiny_dataset), default_tile_size=32)
    folder = tmp_path_factory.mktemp("pixelgan_release")
    pipeline.save_pretrained(folder)
    return folder
