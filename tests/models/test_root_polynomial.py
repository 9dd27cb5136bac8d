import numpy as np
import pytest
import torch

from hsr_diffusers.models import RootPolynomialRegression, fit_root_polynomial
from hsr_diffusers.spectral import DEFAULT_RESPONSE, WAVELENGTHS, rendering_matrix
from tests.testing_utils import smooth_cube


def _features_numpy(rgb, degree):
    # The terms of Finlayson et al. (2015), Table 1, written out independently of the library.
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    terms = [r, g, b]
    if degree >= 2:
        terms += [np.sqrt(r * g), np.sqrt(g * b), np.sqrt(r * b)]
    if degree >= 3:
        terms += [np.cbrt(x) for x in (r * g**2, r * b**2, g * b**2, g * r**2, b * r**2, b * g**2, r * g * b)]
    return np.stack(terms, axis=-1)


def _predict(model, rgb):
    # linear RGB [0, 1] (P, 3) -> reflectance (P, bands), through the [-1, 1] model contract
    sample = torch.as_tensor(rgb, dtype=torch.float32).T.reshape(1, 3, -1, 1) * 2 - 1
    with torch.no_grad():
        cube = model(sample).sample
    return ((cube[0, :, :, 0].T + 1) / 2).double().numpy()


@pytest.mark.parametrize("degree, num_features", [(1, 3), (2, 6), (3, 13)])
def test_fit_recovers_known_weights(degree, num_features):
    rng = np.random.default_rng(degree)
    rgb = rng.uniform(0.02, 1.0, size=(500, 3))
    weight = rng.normal(size=(num_features, 31))
    cube = _features_numpy(rgb, degree) @ weight

    model = RootPolynomialRegression(degree=degree, ridge=0.0)
    assert model.fit(rgb, cube) is model
    assert model.weight.shape == (num_features, 31)
    np.testing.assert_allclose(model.weight.detach().double().numpy(), weight, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_predict(model, rgb), cube, atol=1e-4)


def test_fit_matches_numpy_least_squares_and_ridge_on_images():
    # Images in (H, W, 3) layout and torch inputs are accepted. ridge=0 is ordinary least squares; the default ridge
    # is Tikhonov on the per-pixel normal matrix: (X^T X / P + ridge * I) W = X^T Y / P.
    cube = smooth_cube(12, 10, num_bands=31, seed=0).astype(np.float64)
    sensitivities = np.random.default_rng(0).uniform(0, 1, size=(31, 3)) / 10
    rgb = cube @ sensitivities  # (12, 10, 3), in [0, 1]
    features, targets = _features_numpy(rgb.reshape(-1, 3), 2), cube.reshape(-1, 31)

    least_squares = RootPolynomialRegression(degree=2, ridge=0.0).fit(torch.from_numpy(rgb), torch.from_numpy(cube))
    expected, *_ = np.linalg.lstsq(features, targets, rcond=None)
    # float32 storage of the large, ill-conditioned least-squares weights costs ~1e-4 in the prediction
    np.testing.assert_allclose(_predict(least_squares, rgb.reshape(-1, 3)), features @ expected, atol=1e-3)

    ridge = RootPolynomialRegression(degree=2).fit(rgb, cube)
    num_pixels = features.shape[0]
    gram = features.T @ features / num_pixels + 1e-6 * np.eye(6)
    expected_ridge = np.linalg.solve(gram, features.T @ targets / num_pixels)
    np.testing.assert_allclose(ridge.weight.detach().double().numpy(), expected_ridge, rtol=1e-4, atol=1e-4)


def test_ridge_keeps_degenerate_data_solvable():
    # Grey pixels (r = g = b) make every feature column equal: plain least squares is singular.
    grey = np.repeat(np.linspace(0.1, 0.9, 50)[:, None], 3, axis=1)
    cube = np.repeat(grey[:, :1], 31, axis=1)
    model = RootPolynomialRegression(degree=3).fit(grey, cube)
    assert torch.isfinite(model.weight).all()
    np.testing.assert_allclose(_predict(model, grey), cube, atol=1e-3)


@pytest.mark.parametrize("degree", [1, 2, 3])
@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_exposure_invariance(degree, scale):
    # No constant term and k-th roots of degree-k monomials: scaling the RGB scales the estimated spectrum.
    rng = np.random.default_rng(0)
    model = RootPolynomialRegression(degree=degree)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(rng.normal(size=tuple(model.weight.shape))))
    rgb = rng.uniform(0.0, 0.45, size=(64, 3))
    np.testing.assert_allclose(_predict(model, scale * rgb), scale * _predict(model, rgb), rtol=1e-4, atol=1e-4)


def test_forward_uses_only_rgb_and_clamps_negative_light():
    torch.manual_seed(0)
    model = RootPolynomialRegression(degree=3, in_channels=5, out_channels=4)
    with torch.no_grad():
        model.weight.normal_()
    sample = torch.rand(2, 5, 3, 3) * 2 - 1
    changed = sample.clone()
    changed[:, 3:] = torch.randn(2, 2, 3, 3)
    torch.testing.assert_close(model(sample).sample, model(changed).sample)
    # RGB below 0 (input below -1) is treated as 0: finite output, equal to that of black.
    below = model(torch.full((1, 5, 2, 2), -1.5)).sample
    black = model(torch.full((1, 5, 2, 2), -1.0)).sample
    assert torch.isfinite(below).all()
    torch.testing.assert_close(below, black)
    torch.testing.assert_close(black, torch.full_like(black, -1.0))  # zero light -> zero reflectance


def test_fit_input_validation():
    model = RootPolynomialRegression(out_channels=31)
    with pytest.raises(ValueError, match="3 channels"):
        model.fit(np.zeros((10, 4)), np.zeros((10, 31)))
    with pytest.raises(ValueError, match="31 bands"):
        model.fit(np.zeros((10, 3)), np.zeros((10, 16)))
    with pytest.raises(ValueError, match="leading dims"):
        model.fit(np.zeros((10, 3)), np.zeros((11, 31)))
    with pytest.raises(ValueError, match="degree"):
        RootPolynomialRegression(degree=4)
    with pytest.raises(ValueError, match="in_channels"):
        RootPolynomialRegression(in_channels=1)


# ---------------------------------------------------------------------------------------------------- fit_root_polynomial
def mixed_cubes(count=3, size=12):
    """Cubes `c @ B` of three fixed spectra, whose linear RGB determines them exactly (a degree-1 root polynomial)."""
    bands = np.linspace(0.0, 1.0, 31)
    basis = np.stack([0.05 + 0.4 * np.exp(-((bands - centre) ** 2) / 0.05) for centre in (0.15, 0.5, 0.85)])
    rng = np.random.default_rng(0)
    cubes = [(rng.uniform(0.2, 1.0, size=(size, size, 3)) @ basis).astype(np.float32) for _ in range(count)]
    return cubes, np.linalg.solve(basis @ rendering_matrix(DEFAULT_RESPONSE), basis)


def test_fit_root_polynomial_recovers_an_exact_linear_relation():
    cubes, truth = mixed_cubes()
    model = fit_root_polynomial(cubes, DEFAULT_RESPONSE, WAVELENGTHS, rgb_mode="linear", degree=1, pixels_per_scene=50)
    assert model.config.degree == 1 and model.config.out_channels == 31
    weight = model.weight.detach().double().numpy()  # [3, 31]
    assert np.abs(weight - truth).max() < 1e-2 * np.abs(truth).max()
    # The same seed draws the same pixels; another seed other pixels (the fit is exact either way here).
    again = fit_root_polynomial(cubes, DEFAULT_RESPONSE, WAVELENGTHS, rgb_mode="linear", degree=1, pixels_per_scene=50)
    assert torch.equal(again.weight, model.weight)
    with pytest.raises(ValueError, match="No cubes"):
        fit_root_polynomial([], DEFAULT_RESPONSE, WAVELENGTHS)


def test_fit_root_polynomial_reads_a_dataset_split_like_a_list_of_cubes(tmp_path):
    import datasets

    from hsr_diffusers.data import make_synthetic_dataset

    dataset = make_synthetic_dataset(tmp_path, num_train=2, num_validation=0, height=16, width=16)
    split = datasets.load_from_disk(str(dataset))["train"]
    cubes = [np.load(path) for path in sorted((tmp_path / "cubes").glob("scene_*[0-9].npy"))]
    assert len(cubes) == len(split) == 2
    from_split = fit_root_polynomial(split, DEFAULT_RESPONSE, WAVELENGTHS, pixels_per_scene=100, seed=3)
    from_list = fit_root_polynomial(cubes, DEFAULT_RESPONSE, WAVELENGTHS, pixels_per_scene=100, seed=3)
    torch.testing.assert_close(from_split.weight, from_list.weight)
    assert from_split.weight.abs().sum() > 0


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_consistent_estimate_is_the_forward_pass_then_the_closed_form_projection(degree):
    from hsr_diffusers.spectral import project_tensor

    matrix = rendering_matrix(DEFAULT_RESPONSE, WAVELENGTHS)
    pinv = np.linalg.solve(matrix.T @ matrix, matrix.T)
    model = RootPolynomialRegression(degree=degree)
    with torch.no_grad():
        model.weight.copy_(torch.randn(model.num_features, 31) * 0.3)
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(degree)) * 0.99
    rgb[0, :, :3] = 1.0  # saturated pixels keep the estimate as it is
    rgb[1, 1, 5:8] = 0.0  # a channel at 0
    rendering = torch.as_tensor(matrix, dtype=torch.float32)
    pinv = torch.as_tensor(pinv, dtype=torch.float32)

    expected = project_tensor((model(rgb * 2 - 1).sample + 1) / 2, rgb, rendering, pinv)
    actual = model.consistent_estimate(rgb, rendering, pinv)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    # It renders to the RGB wherever no channel is saturated, and is the plain estimate where one is.
    rendered = torch.einsum("nchw,cr->nrhw", actual, rendering)
    torch.testing.assert_close(rendered[1], rgb[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(actual[0, :, :3], expected[0, :, :3])
    assert not torch.allclose(actual[0, :, :3], model.consistent_estimate(rgb, rendering, pinv, None)[0, :, :3])
