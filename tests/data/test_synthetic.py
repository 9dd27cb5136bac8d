"""Synthetic cubes and datasets used by the tests and the training-script smoke tests."""

import datasets
import numpy as np

from hsr_diffusers.data import PatchDataset, load_cube_with_wavelengths, make_synthetic_cubes, make_synthetic_dataset


def test_synthetic_cubes_are_smooth_reflectances(tmp_path):
    paths = make_synthetic_cubes(tmp_path, num_scenes=3, height=24, width=20, seed=5)
    assert [path.name for path in paths] == ["scene_000.npy", "scene_001.npy", "scene_002.npy"]
    cube, wavelengths = load_cube_with_wavelengths(paths[0])
    assert cube.shape == (24, 20, 31) and cube.dtype == np.float32
    assert 0.0 < cube.min() and cube.max() < 1.0
    np.testing.assert_allclose(wavelengths, np.arange(400, 701, 10))
    # Smooth along space and wavelength: neighbours differ far less than the value range.
    assert np.abs(np.diff(cube, axis=0)).mean() < 0.1 * np.ptp(cube)
    assert np.abs(np.diff(cube, axis=-1)).mean() < 0.1 * np.ptp(cube)
    # Scenes differ, and the seed makes them reproducible.
    assert not np.allclose(cube, np.load(paths[1]))
    again = make_synthetic_cubes(tmp_path / "again", num_scenes=1, height=24, width=20, seed=5)
    np.testing.assert_array_equal(np.load(again[0]), cube)


def test_synthetic_cubes_in_other_formats(tmp_path):
    for format in ("mat", "h5", "envi", "tiff"):
        (path,) = make_synthetic_cubes(tmp_path / format, num_scenes=1, height=8, width=9, num_bands=5, format=format)
        cube, wavelengths = load_cube_with_wavelengths(path)
        assert cube.shape == (8, 9, 5)
        np.testing.assert_allclose(wavelengths, [400, 475, 550, 625, 700])


def test_synthetic_dataset(tmp_path):
    path = make_synthetic_dataset(tmp_path, num_train=3, num_validation=2, height=16, width=24)
    dataset = datasets.load_from_disk(str(path))
    assert dataset["train"].num_rows == 3 and dataset["validation"].num_rows == 2
    assert dataset["validation"][0]["shape"] == [16, 24, 31]
    item = PatchDataset(path, patch_size=16, split="validation")[1]
    assert item["cube"].shape == (31, 16, 16) and item["rgb"].shape == (3, 16, 16)
