"""Data layer: cube readers and writers, official split lists, 🤗 datasets builder and the patch dataset for training."""

from hsr_diffusers.data.dataset import (
    DATASET_FORMATS,
    DatasetBuildError,
    PatchDataset,
    build_dataset,
    dataset_features,
    get_cube,
    read_metadata,
)
from hsr_diffusers.data.io import (
    CubeFormatError,
    detect_format,
    load_cube,
    load_cube_with_wavelengths,
    save_cube,
)
from hsr_diffusers.data.splits import get_split, list_splits
from hsr_diffusers.data.synthetic import make_synthetic_cube, make_synthetic_cubes, make_synthetic_dataset


__all__ = [
    "DATASET_FORMATS",
    "CubeFormatError",
    "DatasetBuildError",
    "PatchDataset",
    "build_dataset",
    "dataset_features",
    "detect_format",
    "get_cube",
    "get_split",
    "list_splits",
    "load_cube",
    "load_cube_with_wavelengths",
    "make_synthetic_cube",
    "make_synthetic_cubes",
    "make_synthetic_dataset",
    "read_metadata",
    "save_cube",
]
