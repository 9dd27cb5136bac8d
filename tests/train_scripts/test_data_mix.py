"""Training on several sources at once: CAVE reflectance (relit) with ICVL-like radiance strips, per-source weights."""

import json

import numpy as np
import pytest

from hsr_diffusers import HSRPipeline, PixelMLP, save_cube
from hsr_diffusers.data import get_cube
from hsr_diffusers.spectral import WAVELENGTHS
from tests.testing_utils import smooth_cube
from tests.train_scripts.conftest import common_args


@pytest.fixture
def raw_icvl_strips(tmp_path):
    """Thin 8 x 48 radiance strips named as ICVL scenes: two training sites and one validation site (`eve`)."""
    folder = tmp_path / "icvl_strips"
    for index, name in enumerate(["BGU_0522-1127", "omer_0331-1102", "eve_0331-1601"]):
        save_cube(folder / f"{name}.npy", smooth_cube(8, 48, seed=10 + index) * 0.2, WAVELENGTHS)
    return folder


def test_source_patch_counts_follow_the_weights():
    import script_data

    assert script_data.source_patch_counts([2, 3], 4, None) == [4] * 5
    counts = script_data.source_patch_counts([2, 3], 4, [3.0, 1.0])  # 20 patches: 15 and 5
    assert counts == [8, 7, 2, 2, 1] and sum(counts) == 20
    assert script_data.source_patch_counts([2, 1], 2, [1.0, 0.0]) == [3, 3, 0]


def test_icvl_strips_get_the_site_split(raw_icvl_strips):
    import script_data

    layout, split = script_data.raw_folder_layout(raw_icvl_strips)
    assert layout == "folder"
    assert split == {"train": ["BGU_0522-1127", "omer_0331-1102"], "validation": ["eve_0331-1601"]}
    _, chosen = script_data.raw_folder_layout(raw_icvl_strips, "cave")  # an explicit split wins (none of its scenes)
    assert chosen == {"train": [], "validation": []}


def test_train_pixel_mlp_on_relit_cave_and_strips(raw_cave_folder, raw_icvl_strips, tmp_path):
    import train_pixelgan

    out = tmp_path / "mlp"
    extra = ["--train_data_weights", "1", "3", "--relight", "cave", "--exposure", "rgb_max", "--resolution", "16"]
    argv = common_args(raw_cave_folder, out, 2, *extra, "--max_validation_scenes", "2")
    argv[argv.index("tiny")] = "pixel_mlp"
    argv.insert(argv.index(str(raw_cave_folder)) + 1, str(raw_icvl_strips))
    args = train_pixelgan.parse_args(argv)
    assert args.generator == "pixel_mlp" and args.gan_weight == 0 and args.residual == "none"
    train_pixelgan.main(args)
    assert args.source_sizes == [2, 2] and args.source_formats == ["cave", "folder"]

    pipe = HSRPipeline.from_pretrained(out)
    assert isinstance(pipe.unet, PixelMLP) and pipe.estimator is None
    pipe.set_progress_bar_config(disable=True)
    cube = pipe(np.full((4, 5, 3), 0.3, dtype=np.float32)).cubes
    assert cube.shape == (1, 4, 5, 31) and np.isfinite(cube).all()
    facts = json.loads((out / "train_meta.json").read_text())
    assert "weight 3" in facts["data_mix"] and "split auto" in facts["data_mix"]
    # The card's `datasets:` metadata names both sources (by a word of their folder), each with its scene count.
    assert facts["dataset_list"].splitlines() == [
        "  - CAVE multispectral image database (2 training scenes)",
        "  - ICVL hyperspectral image database (2 training scenes)",
    ]
    assert "relighting of the CAVE" in facts["illumination"] and "peaks at a level" in facts["illumination"]
    # Two validation scenes cover both sources: the first CAVE one, then the ICVL strip (not the second CAVE scene).
    assert facts["validation_scene_names"] == "feathers, eve_0331-1601"


def test_validation_takes_the_sources_in_turn():
    import argparse

    import datasets
    import script_data

    split = datasets.Dataset.from_dict({"name": list("abcdef")})
    args = argparse.Namespace(validation_source_sizes=[2, 3, 1], max_validation_scenes=5)
    # Sources a b | c d e | f: first scenes a c f, then b d, then e.
    assert script_data.validation_order(args, split) == [0, 2, 5, 1, 3]
    args.max_validation_scenes = 0
    assert script_data.validation_order(args, split) == []
    one_source = argparse.Namespace(max_validation_scenes=2)  # runs of one source, or before the sizes were recorded
    assert script_data.validation_order(one_source, split) == [0, 1]
    assert script_data.validation_order(args, None) == []


def test_one_value_per_source(raw_cave_folder, raw_icvl_strips, tmp_path):
    import train_pixelgan

    flags = ["--train_data_dir", str(raw_cave_folder), str(raw_icvl_strips), "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="one value per --train_data_dir"):
        train_pixelgan.parse_args([*flags, "--train_data_weights", "1"])
    with pytest.raises(ValueError, match="non-negative"):
        train_pixelgan.parse_args([*flags, "--train_data_weights", "1", "-1"])


def test_the_estimator_is_fitted_on_relit_patches(raw_cave_folder, raw_icvl_strips, tmp_path):
    import script_data
    import train_pixelgan

    argv = common_args(raw_cave_folder, tmp_path / "run", 1, "--resolution", "16")
    argv.insert(argv.index(str(raw_cave_folder)) + 1, str(raw_icvl_strips))
    args = train_pixelgan.parse_args(argv)
    from accelerate import Accelerator

    train, _, response, _ = script_data.load_splits(args, Accelerator(cpu=True))
    # Without relighting: every stored scene, divided by its maximum (per-patch levels never reach the fit).
    for exposure in ("none", "rgb_max"):
        args.exposure = exposure
        cubes = list(script_data.estimator_cubes(args, train, response))
        assert len(cubes) == len(train) and all(cube.max() == pytest.approx(1.0) for cube in cubes)
        stored = np.asarray(get_cube(train, len(train) - 1))  # an ICVL-like strip stored at 0.2 of full scale
        np.testing.assert_allclose(cubes[-1], stored / stored.max(), rtol=1e-6)
    args.relight = "cave"
    cubes = list(script_data.estimator_cubes(args, train, response, num_patches=5))
    assert len(cubes) == 5 and all(cube.shape == (16, 16, 31) for cube in cubes)
    assert all(0.0 <= cube.min() and cube.max() <= 1.0 for cube in cubes)
    # Relit patches at their stored level: the exposure range of the run changes nothing.
    args.exposure_level_range = (0.9, 1.0)
    again = list(script_data.estimator_cubes(args, train, response, num_patches=5))
    assert all(np.array_equal(a, b) for a, b in zip(cubes, again))
