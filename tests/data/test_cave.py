"""The CAVE split prepared from the real scenes in shared/data/cave (skipped when the folder is missing)."""

import contextlib
import io

import datasets
import numpy as np
import pytest

from hsr_diffusers.cli import main
from hsr_diffusers.data import PatchDataset, get_cube, get_split, load_cube
from tests.testing_utils import CAVE_DIR, requires_cave


pytestmark = requires_cave


@pytest.fixture(scope="module")
def cave_dataset(tmp_path_factory):
    """Reading all 12 scenes (372 16-bit PNGs) takes seconds: prepare once per module, through the CLI."""
    out = tmp_path_factory.mktemp("cave") / "dataset"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["data", "prepare", "--format", "cave", str(CAVE_DIR), str(out), "--split", "cave"])
    assert status == 0
    return out, stdout.getvalue()


def test_cave_split_rows_shapes_and_range(cave_dataset):
    out, summary = cave_dataset
    dataset = datasets.load_from_disk(str(out))
    assert dataset["train"].num_rows == 10 and dataset["validation"].num_rows == 2
    assert dataset["train"]["name"][:] == get_split("cave")["train"]
    assert dataset["validation"]["name"][:] == ["feathers", "glass_tiles"]
    for split in ("train", "validation"):
        shapes = dataset[split].with_format("numpy", columns=["shape"])[:]["shape"]
        assert np.all(np.asarray(shapes.tolist()) == [512, 512, 31])
    cube = get_cube(dataset["validation"], 0)
    assert cube.dtype == np.float32 and 0.0 <= cube.min() and cube.max() <= 1.0
    np.testing.assert_allclose(dataset["validation"][1]["wavelengths"], np.arange(400, 701, 10))
    assert "train       10      512x512x31" in summary and "validation  2" in summary


def test_cave_rows_equal_the_png_bands(cave_dataset):
    out, _ = cave_dataset
    validation = datasets.load_from_disk(str(out))["validation"]
    from PIL import Image

    band = np.asarray(Image.open(CAVE_DIR / "feathers_ms" / "feathers_ms_16.png"), dtype=np.float64) / 65535
    np.testing.assert_allclose(get_cube(validation, 0)[..., 15], band, rtol=1e-6)  # band 16 = 550 nm
    np.testing.assert_array_equal(get_cube(validation, 1), load_cube(CAVE_DIR / "glass_tiles_ms"))


def test_cave_patches_stream(cave_dataset):
    out, _ = cave_dataset
    patches = PatchDataset(out, patch_size=64, patches_per_scene=2, split="train", seed=0)
    assert len(patches) == 20
    for index in (0, 7, 19):
        item = patches[index]
        assert item["rgb"].shape == (3, 64, 64) and item["cube"].shape == (31, 64, 64)
        assert -1 <= item["cube"].min() <= item["cube"].max() <= 1
