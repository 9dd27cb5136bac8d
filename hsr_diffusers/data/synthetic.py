"""Small synthetic cubes and datasets for tests and smoke runs of the training scripts, with no download."""

import os
from pathlib import Path

import numpy as np
from scipy.ndimage import zoom

from hsr_diffusers.data.dataset import build_dataset
from hsr_diffusers.data.io import save_cube


__all__ = ["make_synthetic_cube", "make_synthetic_cubes", "make_synthetic_dataset"]


def make_synthetic_cube(
    height: int, width: int, num_bands: int = 31, num_materials: int = 4, rng: np.random.Generator | None = None
) -> np.ndarray:
    r"""
    A reflectance-like cube: a smooth spatial mixture of a few materials with smooth spectra, in [0.02, 0.98].

    Each material's spectrum is a sum of two Gaussians over the band axis; the abundance maps are low-resolution noise
    upsampled with cubic splines and normalised to sum to one, so that neighbouring pixels and bands are correlated as
    in natural scenes.

    Returns:
        `np.ndarray`: `(height, width, num_bands)` float32.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    bands = np.linspace(0.0, 1.0, num_bands)
    centres = rng.uniform(-0.1, 1.1, size=(num_materials, 2, 1))
    widths = rng.uniform(0.1, 0.4, size=(num_materials, 2, 1))
    heights = rng.uniform(0.1, 0.8, size=(num_materials, 2, 1))
    spectra = 0.05 + (heights * np.exp(-((bands - centres) ** 2) / (2 * widths**2))).sum(axis=1)  # [K, bands]
    coarse = rng.uniform(0.0, 1.0, size=(4, 4, num_materials)) ** 3
    abundances = zoom(coarse, (height / 4, width / 4, 1), order=3, mode="nearest", grid_mode=True)  # [H, W, K]
    abundances = np.clip(abundances, 1e-3, None)
    abundances /= abundances.sum(axis=-1, keepdims=True)
    cube = abundances @ spectra  # [H, W, bands]
    return np.clip(cube, 0.02, 0.98).astype(np.float32)


def make_synthetic_cubes(
    out_dir: str | os.PathLike,
    num_scenes: int,
    height: int,
    width: int,
    num_bands: int = 31,
    seed: int = 0,
    format: str = "npy",
) -> list[Path]:
    r"""
    Writes `num_scenes` synthetic cubes (see [`make_synthetic_cube`]) as `scene_000.<format>`, ... with wavelengths.

    Args:
        out_dir (`str` or `os.PathLike`):
            Output folder, created if needed.
        num_scenes (`int`), height (`int`), width (`int`), num_bands (`int`, defaults to 31):
            How many cubes, and their shape.
        seed (`int`, *optional*, defaults to 0):
            Seed of the generator; the same seed writes the same cubes.
        format (`str`, *optional*, defaults to `"npy"`):
            Any format of [`save_cube`] (`"npy"`, `"npz"`, `"h5"`, `"mat"`, `"envi"`, `"tiff"`).

    Returns:
        `list[Path]`: the written files.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    wavelengths = np.linspace(400.0, 700.0, num_bands) if num_bands > 1 else np.array([550.0])
    suffix = {"envi": "hdr", "tiff": "tif"}.get(format, format)
    paths = []
    for index in range(num_scenes):
        cube = make_synthetic_cube(height, width, num_bands, rng=rng)
        paths.append(save_cube(out_dir / f"scene_{index:03d}.{suffix}", cube, wavelengths, format=format))
    return paths


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_train: int = 4,
    num_validation: int = 2,
    height: int = 32,
    width: int = 32,
    num_bands: int = 31,
    seed: int = 0,
) -> Path:
    r"""
    Writes synthetic cubes to `out_dir/cubes` and builds a `DatasetDict` with `train` and `validation` splits in
    `out_dir/dataset`, as [`build_dataset`] does for real data.

    Returns:
        `Path`: the dataset folder, for `datasets.load_from_disk` or [`PatchDataset`].
    """
    out_dir = Path(out_dir)
    paths = make_synthetic_cubes(out_dir / "cubes", num_train + num_validation, height, width, num_bands, seed)
    names = [path.stem for path in paths]
    split = {"train": names[:num_train], "validation": names[num_train:]}
    if not split["validation"]:
        del split["validation"]
    build_dataset(out_dir / "cubes", out_dir / "dataset", format="folder", split=split)
    return out_dir / "dataset"
