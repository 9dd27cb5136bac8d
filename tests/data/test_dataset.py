"""`build_dataset` (folders of cubes -> 🤗 datasets on disk) and `PatchDataset` (bounded-memory training patches)."""

import json
import pickle

import datasets
import numpy as np
import psutil
import pytest
import scipy.io
import torch
from PIL import Image

from hsr_diffusers.data import (
    DatasetBuildError,
    PatchDataset,
    build_dataset,
    get_cube,
    load_cube,
    read_metadata,
    save_cube,
)
from hsr_diffusers.spectral import load_response
from tests.testing_utils import smooth_cube


WAVELENGTHS = np.arange(400.0, 701.0, 10.0)
SIZES = [(20, 24), (24, 18), (16, 16), (18, 30), (22, 20)]


def to_model_range(array: np.ndarray) -> np.ndarray:
    """The test's own version of the [-1, 1] mapping, channel-last."""
    return np.clip(array.astype(np.float32), 0.0, 1.0) * 2 - 1


def dihedral(array: np.ndarray):
    for rotations in range(4):
        rotated = np.rot90(array, rotations, axes=(0, 1))
        yield rotated
        yield rotated[:, ::-1]


def crop_origin(patch: np.ndarray, cube: np.ndarray, augmented: bool = True) -> tuple[int, int] | None:
    """Where in `cube` the `(P, P, bands)` patch (in model range) was cut, trying every rotation/flip."""
    size = patch.shape[0]
    for top in range(cube.shape[0] - size + 1):
        for left in range(cube.shape[1] - size + 1):
            crop = to_model_range(cube[top : top + size, left : left + size])
            for candidate in dihedral(crop) if augmented else [crop]:
                if np.array_equal(candidate, patch):
                    return top, left
    return None


def channel_last(tensor: torch.Tensor) -> np.ndarray:
    return tensor.numpy().transpose(1, 2, 0)


@pytest.fixture
def cube_folder(tmp_path):
    folder = tmp_path / "cubes"
    for index, (height, width) in enumerate(SIZES):
        save_cube(folder / f"scene_{index}.npy", smooth_cube(height, width, 31, seed=index), WAVELENGTHS)
    return folder


@pytest.fixture
def built(tmp_path, cube_folder):
    split = {"train": ["scene_0", "scene_1", "scene_2"], "validation": ["scene_3", "scene_4"]}
    return build_dataset(cube_folder, tmp_path / "dataset", split=split), tmp_path / "dataset"


# ----------------------------------------------------------------------------------------------------------------------
# build_dataset
# ----------------------------------------------------------------------------------------------------------------------


def test_build_dataset_round_trip(built, cube_folder):
    dataset_dict, path = built
    reloaded = datasets.load_from_disk(str(path))
    assert set(reloaded) == {"train", "validation"}
    assert reloaded["train"]["name"][:] == ["scene_0", "scene_1", "scene_2"]
    assert reloaded["validation"].num_rows == 2
    for split in ("train", "validation"):
        for index, row in enumerate(reloaded[split]):
            expected = np.load(cube_folder / f"{row['name']}.npy")
            assert row["shape"] == list(expected.shape)
            # The documented way to read a row with plain datasets, and the zero-copy helper.
            np.testing.assert_array_equal(np.asarray(row["cube"], dtype=np.float32).reshape(row["shape"]), expected)
            np.testing.assert_array_equal(get_cube(reloaded[split], index), expected)
            np.testing.assert_allclose(row["wavelengths"], WAVELENGTHS)
            assert row["source"] == f"{row['name']}.npy"
    metadata = read_metadata(path)
    assert metadata["splits"]["train"]["num_scenes"] == 3
    assert metadata["splits"]["train"]["shapes"] == [[20, 24, 31], [24, 18, 31], [16, 16, 31]]
    train_cubes = [np.load(cube_folder / f"scene_{i}.npy") for i in range(3)]
    assert metadata["splits"]["train"]["max"] == pytest.approx(max(float(c.max()) for c in train_cubes))
    assert metadata["skipped"] == [] and metadata["missing"] == {} and metadata["unlisted"] == []
    assert not (path / ".build").exists()


def test_get_cube_is_a_zero_copy_view(built):
    _, path = built
    train = datasets.load_from_disk(str(path))["train"]
    first, again = get_cube(train, 1), get_cube(train, 1)
    assert not first.flags.writeable and not first.flags.owndata
    assert np.shares_memory(first, again)  # both views point into the same memory-mapped Arrow buffer


def test_default_split_and_missing_unlisted_scenes(tmp_path, cube_folder):
    (cube_folder / "._scene_0.npy").write_bytes(b"macOS resource fork")  # hidden files are not scenes
    build_dataset(cube_folder, tmp_path / "all")
    assert read_metadata(tmp_path / "all")["splits"]["train"]["num_scenes"] == 5
    split = {"train": ["scene_0", "scene_9"], "validation": ["scene_1"]}
    built = build_dataset(cube_folder, tmp_path / "some", split=split)
    assert built["train"].num_rows == 1
    metadata = read_metadata(tmp_path / "some")
    assert metadata["missing"] == {"train": ["scene_9"]}
    assert metadata["unlisted"] == ["scene_2", "scene_3", "scene_4"]


def test_bad_scenes_fail_the_build_unless_skip_bad(tmp_path, cube_folder):
    cube = smooth_cube(20, 20, 31, seed=7)
    cube[3, 3, 3] = np.nan
    save_cube(cube_folder / "scene_nan.npy", cube, WAVELENGTHS)
    save_cube(cube_folder / "scene_ten.npy", smooth_cube(20, 20, 10), np.linspace(400, 700, 10))
    scipy.io.savemat(cube_folder / "scene_cut.mat", {"cube": smooth_cube(20, 20, 31)})
    data = (cube_folder / "scene_cut.mat").read_bytes()
    (cube_folder / "scene_cut.mat").write_bytes(data[: len(data) // 2])

    with pytest.raises(DatasetBuildError) as info:
        build_dataset(cube_folder, tmp_path / "out", expected_bands=31)
    reasons = dict(info.value.failures)
    assert set(reasons) == {str(cube_folder / name) for name in ("scene_nan.npy", "scene_ten.npy", "scene_cut.mat")}
    assert "NaN" in reasons[str(cube_folder / "scene_nan.npy")]
    assert "10 bands" in reasons[str(cube_folder / "scene_ten.npy")]
    assert "truncated" in reasons[str(cube_folder / "scene_cut.mat")]
    assert not (tmp_path / "out").exists()  # nothing written

    built = build_dataset(cube_folder, tmp_path / "out", expected_bands=31, skip_bad=True)
    assert built["train"]["name"][:] == [f"scene_{i}" for i in range(5)]
    skipped = {item["path"] for item in read_metadata(tmp_path / "out")["skipped"]}
    assert skipped == set(reasons)


def test_output_folder_protection(tmp_path, cube_folder):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError):
            build_dataset(cube_folder, tmp_path / "busy", overwrite=overwrite)
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "precious"
    build_dataset(cube_folder, tmp_path / "out")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_dataset(cube_folder, tmp_path / "out")
    rebuilt = build_dataset(cube_folder, tmp_path / "out", split={"train": ["scene_1"]}, overwrite=True)
    assert rebuilt["train"].num_rows == 1


def test_arad_mat_files_with_paired_rgb(tmp_path):
    src, rgb_dir = tmp_path / "NTIRE2020" / "Train_Spectral", tmp_path / "NTIRE2020" / "Train_Clean"
    src.mkdir(parents=True)
    rgb_dir.mkdir(parents=True)
    rgbs = {}
    for number in (1, 2, 3):
        name = f"ARAD_HS_{number:04d}"
        cube = smooth_cube(12, 16, 31, seed=number)
        scipy.io.savemat(src / f"{name}.mat", {"cube": cube, "bands": WAVELENGTHS[None, :], "norm_factor": 1.0})
        rgbs[name] = np.random.default_rng(number).integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        Image.fromarray(rgbs[name]).save(rgb_dir / f"{name}_clean.png")
    (src / "notes.txt").write_text("not a cube")

    split = {"train": ["ARAD_HS_0001", "ARAD_HS_0002"], "validation": ["ARAD_HS_0003"]}
    built = build_dataset(src, tmp_path / "out", format="arad", split=split, rgb_dir=rgb_dir)
    row = built["validation"][0]
    assert row["name"] == "ARAD_HS_0003"
    np.testing.assert_array_equal(np.asarray(row["rgb"]), rgbs["ARAD_HS_0003"])

    # The paired RGB, not a rendered one, is what PatchDataset returns (whole-image patch, no augmentation).
    patches = PatchDataset(tmp_path / "out", patch_size=12, augment=False, split="train")
    for index, name in enumerate(["ARAD_HS_0001", "ARAD_HS_0002"]):
        item = patches[index]
        top, left = crop_origin(channel_last(item["cube"]), load_cube(src / f"{name}.mat"), augmented=False)
        expected = to_model_range(rgbs[name][top : top + 12, left : left + 12] / 255.0)
        np.testing.assert_allclose(channel_last(item["rgb"]), expected, atol=1e-6)

    (rgb_dir / "ARAD_HS_0002_clean.png").unlink()
    with pytest.raises(DatasetBuildError, match="no RGB image named ARAD_HS_0002"):
        build_dataset(src, tmp_path / "out2", format="arad", split=split, rgb_dir=rgb_dir)


def test_cave_layouts_and_icvl_keys(tmp_path):
    src = tmp_path / "cave"
    bands16 = np.random.default_rng(0).integers(1, 65536, size=(8, 10, 31), dtype=np.uint16)
    for folder, prefix in ((src / "beads_ms", "beads_ms"), (src / "clay_ms" / "clay_ms", "clay_ms")):
        folder.mkdir(parents=True)
        for band in range(31):
            Image.fromarray(bands16[..., band]).save(folder / f"{prefix}_{band + 1:02d}.png")
    built = build_dataset(src, tmp_path / "out", format="cave")
    assert built["train"]["name"][:] == ["beads", "clay"]
    np.testing.assert_allclose(get_cube(built["train"], 1), bands16 / 65535.0, rtol=1e-6)

    # `icvl` reads `rad` (scaled by 1/4095): an ARAD file without it fails with the keys listed.
    icvl = tmp_path / "icvl"
    icvl.mkdir()
    scipy.io.savemat(icvl / "a.mat", {"rad": np.full((8, 8, 31), 4095.0), "bands": WAVELENGTHS[None, :]})
    scipy.io.savemat(icvl / "b.mat", {"cube": np.ones((8, 8, 31))})
    with pytest.raises(DatasetBuildError, match="'cube'"):
        build_dataset(icvl, tmp_path / "icvl_out", format="icvl")
    built = build_dataset(icvl, tmp_path / "icvl_out", format="icvl", skip_bad=True)
    np.testing.assert_allclose(get_cube(built["train"], 0), 1.0)


def test_response_is_checked_and_recorded(tmp_path, cube_folder):
    with pytest.raises(ValueError, match="Unknown response"):
        build_dataset(cube_folder, tmp_path / "bad", response="not_a_camera")
    assert not (tmp_path / "bad").exists()
    build_dataset(cube_folder, tmp_path / "out", response="canon_40d")
    assert read_metadata(tmp_path / "out")["response"] == "canon_40d"
    recorded = PatchDataset(tmp_path / "out", patch_size=8, augment=False)
    explicit = PatchDataset(tmp_path / "out", patch_size=8, augment=False, response="canon_40d")
    default = PatchDataset(datasets.load_from_disk(str(tmp_path / "out"))["train"], patch_size=8, augment=False)
    assert torch.equal(recorded[0]["rgb"], explicit[0]["rgb"])
    assert not torch.equal(recorded[0]["rgb"], default[0]["rgb"])  # cie1964_ntire2020


def test_dataset_info_describes_the_layout(built):
    _, path = built
    info = json.loads((path / "train" / "dataset_info.json").read_text())
    assert "reshape(row['shape'])" in info["description"]
    assert info["features"]["cube"]["_type"] == "LargeList"


# ----------------------------------------------------------------------------------------------------------------------
# PatchDataset
# ----------------------------------------------------------------------------------------------------------------------


def test_patches_come_from_their_scene(built, cube_folder):
    _, path = built
    patches = PatchDataset(path, patch_size=8, patches_per_scene=3, seed=3)
    assert len(patches) == 9
    for index in range(len(patches)):
        item = patches[index]
        assert item["cube"].shape == (31, 8, 8) and item["rgb"].shape == (3, 8, 8)
        assert item["cube"].dtype == torch.float32 and item["rgb"].dtype == torch.float32
        assert -1 <= item["cube"].min() and item["cube"].max() <= 1
        source = np.load(cube_folder / f"scene_{index // 3}.npy")
        assert crop_origin(channel_last(item["cube"]), source) is not None, index


def test_rendered_rgb_matches_the_ntire_formula(built, cube_folder):
    _, path = built
    patches = PatchDataset(path, patch_size=8, augment=False, split="validation")
    response = load_response("cie1964_ntire2020", WAVELENGTHS)
    for index in range(len(patches)):
        item = patches[index]
        source = np.load(cube_folder / f"scene_{3 + index}.npy")
        top, left = crop_origin(channel_last(item["cube"]), source, augmented=False)
        crop = source[top : top + 8, left : left + 8].astype(np.float64)
        clean = np.floor(np.clip(crop @ response / 256, 0, 1) * 255) / 255  # NTIRE 2020 clean track
        np.testing.assert_allclose(channel_last(item["rgb"]), to_model_range(clean), atol=1e-6)


def test_items_depend_on_seed_epoch_and_index_only(built):
    _, path = built
    first, second = PatchDataset(path, patch_size=8, seed=1), PatchDataset(path, patch_size=8, seed=1)
    for index in (2, 0, 1):  # order does not matter
        assert torch.equal(first[index]["cube"], second[index]["cube"])
    other_seed = PatchDataset(path, patch_size=8, seed=2)
    assert any(not torch.equal(first[i]["cube"], other_seed[i]["cube"]) for i in range(3))
    before = [first[i]["cube"] for i in range(3)]
    first.set_epoch(1)
    assert any(not torch.equal(before[i], first[i]["cube"]) for i in range(3))
    first.set_epoch(0)
    assert all(torch.equal(before[i], first[i]["cube"]) for i in range(3))


def test_in_memory_streaming_and_view_paths_agree(built, cube_folder):
    _, path = built
    train = datasets.load_from_disk(str(path))["train"]
    streaming = PatchDataset(train, patch_size=8, patches_per_scene=2)
    in_memory = PatchDataset(train, patch_size=8, patches_per_scene=2, in_memory=True)
    assert streaming._index is not None  # reads crops from the Arrow file, not through a memory map
    for index in range(len(streaming)):
        for key in ("rgb", "cube"):
            assert torch.equal(streaming[index][key], in_memory[index][key])
    # A select() with an indices mapping is read through zero-copy views, in the selected order.
    reordered = PatchDataset(train.select([2, 0]), patch_size=8, patches_per_scene=2)
    assert len(reordered) == 4
    for index, scene in enumerate([2, 2, 0, 0]):
        source = np.load(cube_folder / f"scene_{scene}.npy")
        assert crop_origin(channel_last(reordered[index]["cube"]), source) is not None


def test_dataloader_workers_and_pickle(built):
    _, path = built
    patches = PatchDataset(path, patch_size=8, patches_per_scene=4)
    expected = torch.stack([patches[i]["cube"] for i in range(len(patches))])  # opens the Arrow file
    restored = pickle.loads(pickle.dumps(patches))
    assert torch.equal(restored[5]["cube"], expected[5])
    loader = torch.utils.data.DataLoader(patches, batch_size=4, num_workers=2)
    assert torch.equal(torch.cat([batch["cube"] for batch in loader]), expected)


def test_real_world_and_linear_modes(built):
    _, path = built
    real_world = PatchDataset(path, patch_size=16, rgb_mode="real_world", seed=0)
    assert torch.equal(real_world[1]["rgb"], PatchDataset(path, patch_size=16, rgb_mode="real_world")[1]["rgb"])
    linear = PatchDataset(path, patch_size=16, rgb_mode="linear")
    clean = PatchDataset(path, patch_size=16)
    assert torch.equal(linear[0]["cube"], clean[0]["cube"])
    assert (linear[0]["rgb"] - clean[0]["rgb"]).abs().max() <= 2 / 255 + 1e-6  # quantisation only


def test_patch_dataset_argument_errors(built):
    _, path = built
    with pytest.raises(ValueError, match="smallest scene side"):
        PatchDataset(path, patch_size=17)  # scene_2 is 16 x 16
    with pytest.raises(ValueError, match="rgb_mode"):
        PatchDataset(path, patch_size=8, rgb_mode="srgb")
    with pytest.raises(IndexError):
        PatchDataset(path, patch_size=8)[3]


def test_patch_memory_does_not_grow_with_the_number_of_scenes(tmp_path):
    folder = tmp_path / "cubes"
    for index in range(12):
        save_cube(folder / f"s{index:02d}.npy", smooth_cube(256, 256, 31, seed=index), WAVELENGTHS)
    build_dataset(folder, tmp_path / "dataset")
    total = 12 * 256 * 256 * 31 * 4  # 97.5 MiB of cubes
    process = psutil.Process()
    PatchDataset(tmp_path / "dataset", patch_size=64)[0]  # warm up: imports and caches are not patch memory

    def rss_growth(in_memory: bool) -> int:
        start = peak = process.memory_info().rss
        patches = PatchDataset(tmp_path / "dataset", patch_size=64, patches_per_scene=3, in_memory=in_memory)
        for index in range(len(patches)):
            patches[index]
            peak = max(peak, process.memory_info().rss)
        return peak - start

    streaming = rss_growth(in_memory=False)
    assert streaming < total / 8, f"RSS grew by {streaming / 2**20:.1f} MiB for {total / 2**20:.1f} MiB of cubes"
    # The measurement can fail: holding every cube shows up as the whole dataset.
    assert rss_growth(in_memory=True) > 0.8 * total


@pytest.fixture
def thin_and_square(tmp_path):
    """A dataset of one 20 x 20 scene and one thin 4 x 40 strip (in that row order)."""
    folder = tmp_path / "cubes"
    square, strip = smooth_cube(20, 20, 31, seed=1), smooth_cube(4, 40, 31, seed=2) * 0.1
    save_cube(folder / "a_square.npy", square, WAVELENGTHS)
    save_cube(folder / "b_strip.npy", strip, WAVELENGTHS)
    build_dataset(folder, tmp_path / "dataset")
    return tmp_path / "dataset", square, strip


def test_thin_scenes_fill_patches_with_several_real_crops(thin_and_square):
    path, _, strip = thin_and_square
    with pytest.raises(ValueError, match="stack_thin_scenes"):
        PatchDataset(path, patch_size=8)
    patches = PatchDataset(path, patch_size=8, augment=False, stack_thin_scenes=True, patches_per_scene=[0, 3])
    assert len(patches) == 3
    for item in patches:
        cube = channel_last(item["cube"])
        assert cube.shape == (8, 8, 31) and item["rgb"].shape == (3, 8, 8)
        for rows in (cube[:4], cube[4:]):  # two crops of the strip's full height, each found in the strip
            assert crop_origin_rect(rows, strip) is not None
    first = channel_last(patches[0]["cube"])
    assert not np.array_equal(first[:4], first[4:])  # drawn independently


def crop_origin_rect(patch: np.ndarray, cube: np.ndarray) -> int | None:
    height, width = patch.shape[:2]
    for left in range(cube.shape[1] - width + 1):
        if np.array_equal(to_model_range(cube[:height, left : left + width]), patch):
            return left
    return None


def test_patches_per_scene_weights_the_sources(thin_and_square):
    path, square, _ = thin_and_square
    patches = PatchDataset(path, patch_size=4, augment=False, patches_per_scene=[3, 1])
    assert len(patches) == 4
    for index in range(3):
        assert crop_origin(channel_last(patches[index]["cube"]), square, augmented=False) is not None
    assert crop_origin(channel_last(patches[3]["cube"]), square, augmented=False) is None
    with pytest.raises(ValueError, match="patches_per_scene"):
        PatchDataset(path, patch_size=4, patches_per_scene=[0, 0])


def test_relighting_applies_to_the_flagged_scenes_only(thin_and_square):
    from hsr_diffusers.data.degradation import Relighting

    path, square, strip = thin_and_square
    options = dict(patch_size=4, augment=False, patches_per_scene=2)
    plain = PatchDataset(path, **options)
    relit = PatchDataset(path, relighting=Relighting(), relight_scenes=[True, False], **options)
    assert not torch.equal(relit[0]["cube"], plain[0]["cube"])  # the reflectance scene, relit
    assert not torch.equal(relit[0]["rgb"], plain[0]["rgb"])
    assert torch.equal(relit[2]["cube"], plain[2]["cube"])  # the radiance scene, as stored
    again = PatchDataset(path, relighting=Relighting(), relight_scenes=[True, False], **options)
    assert torch.equal(relit[1]["cube"], again[1]["cube"]) and torch.equal(relit[1]["rgb"], again[1]["rgb"])
    with pytest.raises(ValueError, match="relight_scenes"):
        PatchDataset(path, relighting=Relighting(), relight_scenes=[True], **options)


def test_rgb_max_exposure_scales_cube_and_rgb_from_the_rgb(thin_and_square):
    path, _, strip = thin_and_square
    options = dict(patch_size=4, augment=False, patches_per_scene=[0, 8], rgb_mode="linear")
    plain = PatchDataset(path, **options)
    exposed = PatchDataset(path, exposure="rgb_max", exposure_range=(0.5, 0.5), **options)
    matrix = load_response("cie1964_ntire2020", WAVELENGTHS) / 256
    for index in range(8):
        cube = (channel_last(exposed[index]["cube"]) + 1) / 2
        original = (channel_last(plain[index]["cube"]) + 1) / 2  # the dark strip's crop, as stored
        assert np.isclose((cube @ matrix).max(), 0.5, atol=1e-4)  # the RGB peaks at the drawn level
        scale = cube.sum() / original.sum()
        assert scale > 1.5 and np.allclose(cube, original * scale, atol=1e-5)  # one factor for the whole patch
        rgb = (channel_last(exposed[index]["rgb"]) + 1) / 2
        assert np.allclose(rgb, cube @ matrix, atol=1e-4)
    with pytest.raises(ValueError, match="exposure"):
        PatchDataset(path, patch_size=4, exposure="auto")


def test_scene_rgb_max_exposure_keeps_each_patch_brightness_within_its_scene(tmp_path):
    # One scene whose left half is 20x darker than its right half: per patch both halves reach the drawn level, per
    # scene the dark half stays 20x darker.
    rng = np.random.default_rng(0)
    cube = rng.uniform(0.2, 0.4, (8, 8, 31)).astype(np.float32)
    cube[:, :4] /= 20
    save_cube(tmp_path / "cubes" / "half_dark.npy", cube, WAVELENGTHS)
    path = tmp_path / "dataset"
    build_dataset(tmp_path / "cubes", path)
    options = dict(patch_size=4, augment=False, patches_per_scene=16, rgb_mode="linear", exposure_range=(0.5, 0.5))
    matrix = load_response("cie1964_ntire2020", WAVELENGTHS) / 256
    peak = float((cube @ matrix).max())
    per_patch = PatchDataset(path, exposure="rgb_max", **options)
    per_scene = PatchDataset(path, exposure="scene_rgb_max", **options)
    peaks = {"rgb_max": [], "scene_rgb_max": []}
    for name, dataset in (("rgb_max", per_patch), ("scene_rgb_max", per_scene)):
        for index in range(len(dataset)):
            patch = (channel_last(dataset[index]["cube"]) + 1) / 2
            peaks[name].append(float((patch @ matrix).max()))
    assert np.allclose(peaks["rgb_max"], 0.5, atol=1e-4)  # every patch at the drawn level
    scene_peaks = np.asarray(peaks["scene_rgb_max"])
    assert scene_peaks.max() <= 0.5 + 1e-4 and scene_peaks.min() < 0.05  # dark patches stay dark
    # One factor for the whole scene: the drawn level over the stored scene's RGB peak.
    plain = PatchDataset(path, **{k: v for k, v in options.items() if k != "exposure_range"})
    for index in range(len(per_scene)):
        scaled = (channel_last(per_scene[index]["cube"]) + 1) / 2
        stored = (channel_last(plain[index]["cube"]) + 1) / 2
        np.testing.assert_allclose(scaled, stored * 0.5 / peak, atol=1e-5)
