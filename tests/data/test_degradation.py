"""Photo degradations: each stage on a known input, reproducibility from a seed, and draws per patch and worker."""

import numpy as np
import pytest
import torch

from hsr_diffusers.data import PatchDataset, make_synthetic_dataset
from hsr_diffusers.data.degradation import (
    HELD_OUT_CAMERAS,
    PhotoDegradation,
    PhotoSettings,
    bayer_demosaic,
    camera_correction,
    render_photo,
    training_cameras,
)
from hsr_diffusers.spectral import (
    DEFAULT_RESPONSE,
    WAVELENGTHS,
    jpeg_roundtrip,
    list_responses,
    render_rgb,
    rendering_matrix,
)
from tests.testing_utils import smooth_cube


TARGET = DEFAULT_RESPONSE


def flat_cube(value: float, size: int = 64) -> np.ndarray:
    return np.full((size, size, 31), value, dtype=np.float32)


def test_training_cameras_hold_out_the_held_out_ones():
    cameras = training_cameras()
    assert cameras[0] == TARGET
    assert not set(cameras) & set(HELD_OUT_CAMERAS)
    assert set(HELD_OUT_CAMERAS) <= set(list_responses())
    assert len(cameras) == 1 + 28 - len(HELD_OUT_CAMERAS)


def test_camera_correction_maps_a_camera_towards_the_target():
    assert np.allclose(camera_correction(TARGET, TARGET, WAVELENGTHS), np.eye(3), atol=1e-9)
    cube = smooth_cube(16, 16, seed=1).reshape(-1, 31)
    target = cube @ rendering_matrix(TARGET)
    camera = cube @ rendering_matrix("nokia_n900")
    corrected = camera @ camera_correction("nokia_n900", TARGET, WAVELENGTHS)
    assert np.abs(corrected - target).mean() < 0.5 * np.abs(camera - target).mean()
    # An array target gives the same matrix as its name.
    by_array = camera_correction("nokia_n900", rendering_matrix(TARGET) * 256, WAVELENGTHS)
    assert np.allclose(by_array, camera_correction("nokia_n900", TARGET, WAVELENGTHS))


def test_bayer_demosaic_keeps_constant_and_linear_images():
    constant = np.full((8, 10, 3), [0.2, 0.5, 0.7])
    assert np.allclose(bayer_demosaic(constant), constant)
    ramp = np.linspace(0, 1, 12)[None, :, None] * np.ones((12, 1, 3))
    interior = (slice(2, -2), slice(2, -2))
    assert np.allclose(bayer_demosaic(ramp)[interior], ramp[interior], atol=1e-12)
    # A colour edge is smeared across channels: the mosaic loses information.
    edge = np.zeros((8, 8, 3))
    edge[:, 4:, 0] = 1.0
    assert np.abs(bayer_demosaic(edge) - edge).max() > 0.1


def test_jpeg_roundtrip_loses_more_at_low_quality():
    y, x = np.mgrid[:32, :32]
    texture = (127.5 + 100 * np.sin(x / 2.0)[..., None] * np.cos(y / 3.0)[..., None] * np.ones(3)).astype(np.uint8)
    flat = np.full((16, 16, 3), 128, dtype=np.uint8)
    assert np.abs(jpeg_roundtrip(flat, 90).astype(int) - 128).max() <= 1
    low = np.abs(jpeg_roundtrip(texture, 10).astype(float) - texture).mean()
    high = np.abs(jpeg_roundtrip(texture, 95).astype(float) - texture).mean()
    assert low > 2 * high > 0


def test_render_photo_without_degradations_is_the_linear_render_in_8_bit_srgb():
    cube = smooth_cube(16, 16)
    photo = render_photo(cube, PhotoSettings(camera=TARGET), TARGET, WAVELENGTHS, np.random.default_rng(0))
    linear = np.clip(cube.astype(np.float64) @ rendering_matrix(TARGET), 0, 1)
    assert photo.dtype == np.float32 and photo.shape == (16, 16, 3)
    # 8-bit sRGB steps are at most about 1/255 * 12.92^-1 at black and 1/255 * 2.4 / 1.055 near white in linear terms.
    assert np.abs(photo - linear).max() < 0.006
    assert np.abs(photo - linear).max() > 0  # but it was quantised


def test_shot_noise_follows_the_photo_electron_count():
    cube = flat_cube(0.5)
    settings = PhotoSettings(camera=TARGET, photo_electrons=200.0)
    photo = render_photo(cube, settings, TARGET, WAVELENGTHS, np.random.default_rng(0))
    clean = render_photo(cube, PhotoSettings(camera=TARGET), TARGET, WAVELENGTHS, np.random.default_rng(0))
    green = photo[..., 1]
    # Poisson: relative standard deviation 1 / sqrt(electrons) at the mean green level (sRGB quantisation is small).
    assert green.std() / clean[..., 1].mean() == pytest.approx(1 / np.sqrt(200), rel=0.15)
    assert green.mean() == pytest.approx(clean[..., 1].mean(), rel=0.02)
    more_light = render_photo(
        cube, PhotoSettings(camera=TARGET, photo_electrons=5000.0), TARGET, WAVELENGTHS, np.random.default_rng(0)
    )
    assert more_light[..., 1].std() < 0.3 * green.std()


def test_read_noise_shows_in_the_dark():
    cube = flat_cube(0.02)
    quiet = PhotoSettings(camera=TARGET, photo_electrons=1e6, read_noise_electrons=0.0)
    noisy = PhotoSettings(camera=TARGET, photo_electrons=1e6, read_noise_electrons=5000.0)
    rng = np.random.default_rng(0)
    assert (
        render_photo(cube, noisy, TARGET, WAVELENGTHS, rng).std()
        > 5 * render_photo(cube, quiet, TARGET, WAVELENGTHS, rng).std()
    )


def test_exposure_clips_highlights_and_keeps_the_level():
    cube = flat_cube(0.5)
    nominal = render_photo(cube, PhotoSettings(camera=TARGET), TARGET, WAVELENGTHS, None)
    dim = render_photo(cube, PhotoSettings(camera=TARGET, exposure=0.7), TARGET, WAVELENGTHS, None)
    assert np.allclose(dim, nominal, atol=0.004)  # brought back to the nominal level
    bright_cube = flat_cube(0.9)
    clipped = render_photo(bright_cube, PhotoSettings(camera=TARGET, exposure=3.0), TARGET, WAVELENGTHS, None)
    unclipped = render_photo(bright_cube, PhotoSettings(camera=TARGET), TARGET, WAVELENGTHS, None)
    assert clipped.max() <= 1 / 3.0 + 0.01 < unclipped.max()


def test_degradation_is_reproducible_from_its_seed():
    degradation = PhotoDegradation(clean_probability=0.0)
    cube = smooth_cube(32, 32)
    first = degradation(cube, TARGET, WAVELENGTHS, np.random.default_rng(7))
    again = degradation(cube, TARGET, WAVELENGTHS, np.random.default_rng(7))
    other = degradation(cube, TARGET, WAVELENGTHS, np.random.default_rng(8))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_clean_draws_are_the_ntire_render():
    cube = smooth_cube(16, 16)
    clean = PhotoDegradation(clean_probability=1.0)(cube, TARGET, WAVELENGTHS, np.random.default_rng(0))
    assert np.array_equal(clean, render_rgb(cube) / np.float32(255.0))


def test_draws_cover_the_ranges():
    degradation = PhotoDegradation()
    rng = np.random.default_rng(0)
    draws = [degradation.sample(rng) for _ in range(400)]
    photos = [d for d in draws if d is not None]
    assert 0.15 < 1 - len(photos) / len(draws) < 0.35
    assert {d.camera for d in photos} <= set(training_cameras()) and len({d.camera for d in photos}) > 15
    assert 0.35 < np.mean([d.mosaic for d in photos]) < 0.65
    qualities = [d.jpeg_quality for d in photos if d.jpeg_quality is not None]
    assert min(qualities) >= 60 and max(qualities) <= 95 and 0.65 < len(qualities) / len(photos) < 0.85
    electrons = [d.photo_electrons for d in photos]
    assert 500 <= min(electrons) and max(electrons) <= 20000


@pytest.mark.parametrize(
    "changes",
    [{"cameras": ()}, {"clean_probability": 1.5}, {"jpeg_quality": (50, 120)}, {"exposure": (0.0, 1.0)}],
)
def test_bad_settings_are_refused(changes):
    with pytest.raises(ValueError):
        PhotoDegradation(**changes)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    # Scenes as large as the patches: with `augment=False` every item of a scene is the same crop (the whole scene), so
    # two items of one scene can differ only by the degradation each one draws.
    folder = tmp_path_factory.mktemp("degradation")
    return make_synthetic_dataset(folder, num_train=2, num_validation=1, height=16, width=16)


def test_patch_dataset_draws_a_degradation_per_item(tiny_dataset):
    degradation = PhotoDegradation(clean_probability=0.0, jpeg_probability=0.0)
    options = {"patch_size": 16, "patches_per_scene": 4, "augment": False, "seed": 3}
    patches = PatchDataset(tiny_dataset, degradation=degradation, **options)
    clean = PatchDataset(tiny_dataset, **options)
    items = [patches[i] for i in range(4)]  # the items of scene 0
    assert all(torch.equal(item["cube"], items[0]["cube"]) for item in items)  # one crop
    assert torch.equal(items[1]["cube"], clean[1]["cube"])  # the degradation touches the RGB only
    assert not torch.equal(items[1]["rgb"], clean[1]["rgb"])
    assert torch.equal(patches[1]["rgb"], items[1]["rgb"])  # an item is the same whenever it is read
    # The same cube under four different RGBs: each item drew its own degradation.
    rgbs = [item["rgb"] for item in items]
    assert all(not torch.equal(rgbs[i], rgbs[j]) for i in range(4) for j in range(i + 1, 4))
    patches.set_epoch(1)
    again = patches[1]
    assert torch.equal(again["cube"], items[1]["cube"]) and not torch.equal(again["rgb"], rgbs[1])  # and each epoch


def test_data_loader_workers_draw_different_degradations(tiny_dataset):
    degradation = PhotoDegradation(clean_probability=0.0)
    patches = PatchDataset(
        tiny_dataset, patch_size=16, patches_per_scene=2, degradation=degradation, seed=0, augment=False
    )
    loader = torch.utils.data.DataLoader(patches, batch_size=1, num_workers=2, shuffle=False)
    batches = list(loader)
    # Items 0 and 1 are the same crop of scene 0, read by different workers: their RGBs differ only by the draw. Every
    # item matches what the main process reads, so the draws follow the item, not the worker's RNG state.
    for index, batch in enumerate(batches):
        item = patches[index]
        assert torch.equal(batch["rgb"][0], item["rgb"]) and torch.equal(batch["cube"][0], item["cube"])
    assert torch.equal(batches[0]["cube"], batches[1]["cube"])
    assert not torch.equal(batches[0]["rgb"], batches[1]["rgb"])
