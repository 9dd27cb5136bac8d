import numpy as np
import pytest
import torch

from hsr_diffusers import spectral
from hsr_diffusers.spectral import (
    WAVELENGTHS,
    list_responses,
    load_response,
    render_rgb,
    rgb_consistent_projection,
    srgb_preview,
)

from ..testing_utils import SHARED_DATA, requires_shared_data, smooth_cube


def test_wavelengths():
    assert WAVELENGTHS[0] == 400 and WAVELENGTHS[-1] == 700 and len(WAVELENGTHS) == 31


@pytest.mark.parametrize("name", ["cie1964_ntire2020", "canon_40d", "ntire2022_camera", "nikon_d700"])
def test_named_responses_sum_to_255(name):
    response = load_response(name)
    assert response.shape == (31, 3)
    np.testing.assert_allclose(response.sum(axis=0), 255.0)
    assert np.all(response >= 0)


def test_all_28_cameras_listed():
    names = list_responses()
    assert len(names) == 3 + 28
    for name in names:
        assert load_response(name).shape == (31, 3)


def test_unknown_response_lists_known_names():
    with pytest.raises(ValueError, match="canon_40d"):
        load_response("no_such_camera")


def test_other_band_sets():
    wavelengths = list(range(420, 681, 20))
    response = load_response("cie1964_ntire2020", wavelengths)
    assert response.shape == (len(wavelengths), 3)
    cube = smooth_cube(4, 4, len(wavelengths))
    assert render_rgb(cube, wavelengths=wavelengths).shape == (4, 4, 3)
    with pytest.raises(ValueError, match="does not include"):
        load_response("canon_40d", [380, 390, 400])


@requires_shared_data
def test_cie1964_matches_ntire2020_file():
    reference = np.load(SHARED_DATA / "ntire2020_response_functions" / "cie_1964_w_gain.npz")["filters"]
    np.testing.assert_allclose(load_response("cie1964_ntire2020"), reference, atol=1e-9)


@requires_shared_data
def test_canon_40d_matches_ntire2020_example_camera():
    reference = np.load(SHARED_DATA / "ntire2020_response_functions" / "example_D40_camera_w_gain.npz")["filters"]
    np.testing.assert_allclose(load_response("canon_40d"), reference / 65535 * 255, atol=1e-9)


def test_user_array_and_csv(tmp_path):
    table = np.abs(np.random.default_rng(0).normal(size=(31, 3))) + 0.1
    np.testing.assert_allclose(load_response(table).sum(0), 255)
    path = tmp_path / "resp.csv"
    np.savetxt(path, np.column_stack([WAVELENGTHS, table]), delimiter=",", header="wavelength,R,G,B")
    np.testing.assert_allclose(load_response(path), load_response(table))
    with pytest.raises(ValueError, match="shape"):
        load_response(np.ones((30, 3)))


def test_render_ntire2020_clean_is_bit_exact():
    cube = smooth_cube(16, 16) * 1.3  # some pixels saturate
    filters = load_response("cie1964_ntire2020")
    # The challenge's own recipe (clean_example.ipynb), written out independently.
    expected = (np.clip(np.dot(cube, filters) / 256, 0, 1) * 255).astype(np.uint8)
    rendered = render_rgb(cube)
    assert rendered.dtype == np.uint8
    np.testing.assert_array_equal(rendered, expected)


def test_render_linear_and_batch():
    cube = smooth_cube(5, 6)
    linear = render_rgb(cube, mode="linear")
    assert linear.dtype == np.float32
    np.testing.assert_allclose(linear, cube @ (load_response("cie1964_ntire2020") / 256), rtol=1e-5)
    batch = render_rgb(np.stack([cube, cube]), mode="linear")
    assert batch.shape == (2, 5, 6, 3)


def test_render_real_world_is_seeded_and_noisy():
    # Spatially smooth content: demosaicing assumes neighbouring pixels are alike.
    cube = np.broadcast_to(smooth_cube(1, 1), (32, 32, 31)) * np.linspace(0.5, 1.0, 32)[None, :, None]
    first = render_rgb(cube, mode="real_world", seed=3)
    second = render_rgb(cube, mode="real_world", seed=3)
    other = render_rgb(cube, mode="real_world", seed=4)
    clean = render_rgb(cube)
    assert first.dtype == np.uint8 and first.shape == (32, 32, 3)
    np.testing.assert_array_equal(first, second)
    assert np.any(first != other)
    # Noise and JPEG change the image, but it stays close to the clean rendering.
    difference = np.abs(first.astype(int) - clean.astype(int))
    assert 0 < difference.mean() < 10


def test_render_rejects_bad_cubes():
    with pytest.raises(ValueError, match="31 bands"):
        render_rgb(np.ones((4, 4, 30)))
    cube = smooth_cube(4, 4)
    cube[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        render_rgb(cube)
    with pytest.raises(ValueError, match="mode"):
        render_rgb(smooth_cube(4, 4), mode="fancy")


def test_srgb_preview_white_and_grey():
    white = np.ones((2, 2, 31))
    np.testing.assert_array_equal(srgb_preview(white), 255)
    grey = np.full((2, 2, 31), 0.18)
    preview = srgb_preview(grey)
    # 18% reflectance under D65 is neutral: equal channels, sRGB-encoded 0.18 -> about 118.
    assert np.ptp(preview) <= 1 and 115 <= preview[0, 0, 0] <= 120
    tensor_preview = srgb_preview(torch.full((1, 31, 2, 2), 0.18))
    np.testing.assert_array_equal(tensor_preview[0], preview)
    reddish = np.zeros((1, 1, 31))
    reddish[..., 25:] = 1.0
    assert srgb_preview(reddish)[0, 0, 0] > srgb_preview(reddish)[0, 0, 2]


def test_projection_reproduces_rgb_and_keeps_null_space():
    cube = smooth_cube(8, 8, seed=1).astype(np.float64)
    target = smooth_cube(8, 8, seed=2).astype(np.float64)
    rgb = render_rgb(target, mode="linear")
    projected = rgb_consistent_projection(cube, rgb, saturation_level=None)
    np.testing.assert_allclose(render_rgb(projected, mode="linear"), rgb, atol=1e-6)
    # The correction lies in the range of A: projecting a consistent cube changes nothing,
    # and the correction is the least-norm one (orthogonal to the null space of A^T).
    np.testing.assert_allclose(rgb_consistent_projection(target, rgb, saturation_level=None), target, atol=1e-6)
    matrix = spectral.rendering_matrix()
    null_space = np.linalg.svd(matrix.T)[2][3:]  # (28, 31) basis of vectors invisible to the camera
    np.testing.assert_allclose((projected - cube) @ null_space.T, 0.0, atol=1e-9)


def test_projection_torch_matches_numpy_and_skips_saturated():
    cube = smooth_cube(4, 4, seed=1)
    rgb = render_rgb(smooth_cube(4, 4, seed=2), mode="linear")
    rgb[0, 0] = 1.0  # saturated pixel
    expected = rgb_consistent_projection(cube, rgb)
    np.testing.assert_array_equal(expected[0, 0], cube[0, 0])
    result = rgb_consistent_projection(
        torch.from_numpy(cube).permute(2, 0, 1)[None], torch.from_numpy(rgb).permute(2, 0, 1)[None]
    )
    np.testing.assert_allclose(result[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_srgb_to_camera_rgb_keeps_neutrals_and_fits_the_checker():
    import colour

    white = spectral.srgb_to_camera_rgb(np.ones((1, 1, 3)))
    np.testing.assert_allclose(white, 1.0, atol=0.02)
    grey = spectral.srgb_to_camera_rgb(np.full((1, 1, 3), 0.5))
    assert np.ptp(grey) < 0.01
    # The ColorChecker patches, photographed in sRGB, land near the camera RGB of their true spectra.
    checker = colour.SDS_COLOURCHECKERS["ColorChecker N Ohta"]
    spectra = np.stack([np.interp(WAVELENGTHS, sd.wavelengths, sd.values) for sd in checker.values()])[None]
    camera = render_rgb(spectra, mode="linear")[0]
    photographed = spectral.srgb_to_camera_rgb(srgb_preview(spectra)[0] / 255.0)
    naive = spectral.srgb_to_linear(srgb_preview(spectra)[0] / 255.0)
    assert np.abs(photographed - camera).max() < 0.03 < np.abs(naive - camera).max()
