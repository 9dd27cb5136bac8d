"""Helpers shared by the tests: tiny data, paths to the optional shared data, the `slow` marker."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch


slow = pytest.mark.slow

# The optional real data (CAVE scenes, response curves): `HSR_SHARED_DATA` if set, else `../shared/data` beside the
# repository. Tests that need it skip without it.
SHARED_DATA = Path(os.environ.get("HSR_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
CAVE_DIR = SHARED_DATA / "cave"
requires_cave = pytest.mark.skipif(not CAVE_DIR.is_dir(), reason=f"CAVE data not found at {CAVE_DIR}")
ICVL_DIR = SHARED_DATA / "icvl_strips"
requires_icvl = pytest.mark.skipif(not ICVL_DIR.is_dir(), reason=f"ICVL strips not found at {ICVL_DIR}")
requires_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data not found at {SHARED_DATA}")


def smooth_cube(height: int = 16, width: int = 16, num_bands: int = 31, seed: int = 0) -> np.ndarray:
    """A reflectance-like cube in [0.05, 0.95] with smooth spectra, `(H, W, bands)` float32."""
    rng = np.random.default_rng(seed)
    wl = np.linspace(0.0, 1.0, num_bands)
    centers = rng.uniform(0, 1, size=(height, width, 1))
    widths = rng.uniform(0.2, 0.6, size=(height, width, 1))
    levels = rng.uniform(0.2, 0.9, size=(height, width, 1))
    cube = 0.05 + levels * np.exp(-((wl - centers) ** 2) / (2 * widths**2))
    return np.clip(cube, 0.0, 0.95).astype(np.float32)


def floats_tensor(shape, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator)


def tiny_ddpm_unet(in_channels: int = 34, attention: bool = True):
    """A seeded two-level `UNet2DModel` for 31 bands (RGB + noisy cube in), with attention at its lower level."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=31,
        block_out_channels=(4, 8),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D"),
        up_block_types=("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D"),
    )
