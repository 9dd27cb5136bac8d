"""Data layer: cube readers and writers, the photo reader, official split lists, 🤗 datasets builder and the patch dataset for training.

Names are imported on first use (PEP 562 `__getattr__`): the cube readers need only numpy, while the dataset builder
imports datasets and torch, which the `hsr` command should not pay for before it runs.
"""

from hsr_diffusers._lazy import lazy_exports


# Public name -> the module that defines it.
_EXPORTS = {
    "DATASET_FORMATS": "hsr_diffusers.data.dataset",
    "DatasetBuildError": "hsr_diffusers.data.dataset",
    "PatchDataset": "hsr_diffusers.data.dataset",
    "build_dataset": "hsr_diffusers.data.dataset",
    "dataset_features": "hsr_diffusers.data.dataset",
    "get_cube": "hsr_diffusers.data.dataset",
    "read_metadata": "hsr_diffusers.data.dataset",
    "CUBE_FORMATS": "hsr_diffusers.data.io",
    "CubeFormatError": "hsr_diffusers.data.io",
    "CubeWriter": "hsr_diffusers.data.io",
    "detect_format": "hsr_diffusers.data.io",
    "load_cube": "hsr_diffusers.data.io",
    "load_cube_with_wavelengths": "hsr_diffusers.data.io",
    "save_cube": "hsr_diffusers.data.io",
    "PhotoError": "hsr_diffusers.data.photos",
    "read_photo": "hsr_diffusers.data.photos",
    "get_split": "hsr_diffusers.data.splits",
    "list_splits": "hsr_diffusers.data.splits",
    "make_synthetic_cube": "hsr_diffusers.data.synthetic",
    "make_synthetic_cubes": "hsr_diffusers.data.synthetic",
    "make_synthetic_dataset": "hsr_diffusers.data.synthetic",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
