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


# Three real scenes (one training, the two validation ones) keep the module fast; the rest of the split is reported
# as missing, which the summary must say.
SCENES = ["beads", "feathers", "glass_tiles"]


@pytest.fixture(scope="module")
def cave_dataset(tmp_path_factory):
    """Reading 3 scenes (93 16-bit PNGs) takes seconds: prepare once per module, through the CLI."""
    root = tmp_path_factory.mktemp("cave")
    source = root / "source"
    source.mkdir()
    for name in SCENES:  # the scanner does not follow folder symlinks: link the band files instead
        (source / f"{name}_ms").mkdir()
        for band in (CAVE_DIR / f"{name}_ms").rglob("*.png"):
            (source / f"{name}_ms" / band.name).symlink_to(band)
    out = root / "dataset"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["data", "prepare", "--format", "cave", str(source), str(out), "--split", "cave"])
    assert status == 0
    return out, stdout.getvalue()


def test_cave_split_rows_shapes_and_range(cave_dataset):
    out, summary = cave_dataset
    dataset = datasets.load_from_disk(str(out))
    split = get_split("cave")
    assert dataset["train"]["name"][:] == [name for name in split["train"] if name in SCENES] == ["beads"]
    assert dataset["validation"]["name"][:] == split["validation"] == ["feathers", "glass_tiles"]
    for name in ("train", "validation"):
        shapes = dataset[name].with_format("numpy", columns=["shape"])[:]["shape"]
        assert np.all(np.asarray(shapes.tolist()) == [512, 512, 31])
    cube = get_cube(dataset["validation"], 0)
    assert cube.dtype == np.float32 and 0.0 <= cube.min() and cube.max() <= 1.0
    np.testing.assert_allclose(dataset["validation"][1]["wavelengths"], np.arange(400, 701, 10))
    assert "train       1       512x512x31" in summary and "validation  2" in summary
    assert f"not found in the source (train split): {len(split['train']) - 1}" in summary


def test_cave_rows_equal_the_png_bands(cave_dataset):
    out, _ = cave_dataset
    validation = datasets.load_from_disk(str(out))["validation"]
    from PIL import Image

    band = np.asarray(Image.open(CAVE_DIR / "feathers_ms" / "feathers_ms_16.png"), dtype=np.float64) / 65535
    np.testing.assert_allclose(get_cube(validation, 0)[..., 15], band, rtol=1e-6)  # band 16 = 550 nm
    np.testing.assert_array_equal(get_cube(validation, 1), load_cube(CAVE_DIR / "glass_tiles_ms"))


def test_cave_patches_stream(cave_dataset):
    out, _ = cave_dataset
    patches = PatchDataset(out, patch_size=64, patches_per_scene=4, split="validation", seed=0)
    assert len(patches) == 8
    for index in (0, 5, 7):
        item = patches[index]
        assert item["rgb"].shape == (3, 64, 64) and item["cube"].shape == (31, 64, 64)
        assert -1 <= item["cube"].min() <= item["cube"].max() <= 1
