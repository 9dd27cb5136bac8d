import numpy as np
import pytest
import torch

from hsr_diffusers.image_processor import HSRImageProcessor
from hsr_diffusers.spectral import DEFAULT_RESPONSE, WAVELENGTHS, render_rgb, rgb_gamut_mask

from ..testing_utils import CAVE_DIR, requires_cave


@pytest.fixture(scope="module")
def processor():
    return HSRImageProcessor(WAVELENGTHS, DEFAULT_RESPONSE)


def random_feasible_cube(seed: int, shape=(2, 31, 16, 16)) -> torch.Tensor:
    """Spectra in [0, 1] with many bands at 0 or 1 (dark, saturated colours: the hard cases of the bounded problem)."""
    generator = torch.Generator().manual_seed(seed)
    cube = torch.rand(shape, generator=generator) * torch.rand(shape[0], 1, *shape[2:], generator=generator)
    return (1.6 * cube - 0.3).clamp(0.0, 1.0)


def reprojection_error(processor, cube: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    return (processor.render(cube) - rgb).abs().amax(dim=1)


@pytest.mark.parametrize("seed", [0, 1])
def test_project_and_clip_is_exact_on_reachable_rgb(processor, seed):
    truth = torch.rand(2, 31, 16, 16, generator=torch.Generator().manual_seed(seed))
    truth[0, 20:, 8:12] = 1.0  # bands at 1
    rgb = processor.render(truth)  # a [0, 1] spectrum renders to it: the bounded projection must reach it
    guess = truth + 0.4 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(seed))
    projected = processor.project_and_clip(guess, rgb)
    assert projected.shape == truth.shape and projected.min() >= 0 and projected.max() <= 1
    assert reprojection_error(processor, projected, rgb).max() < 1e-5
    # A cube that is already consistent and in range is left as it is.
    torch.testing.assert_close(processor.project_and_clip(truth, rgb), truth, atol=1e-5, rtol=0)


def test_project_and_clip_is_within_one_level_on_8bit_renders(processor):
    truth = random_feasible_cube(2, (1, 31, 24, 24))
    rgb8 = render_rgb(truth[0].permute(1, 2, 0).numpy())  # NTIRE-clean: truncated to 8 bits
    rgb = torch.from_numpy(rgb8 / np.float32(255)).permute(2, 0, 1)[None]
    guess = torch.full_like(truth, 0.5)
    projected = processor.project_and_clip(guess, rgb)
    assert reprojection_error(processor, projected, rgb).max() <= 1 / 255


def test_out_of_gamut_rgb_is_reached_within_one_level(processor):
    # Red with no green: every wavelength the red channel sees is seen by the green one, so no [0, 1] spectrum renders
    # it; one level of slack does (the truncated 8-bit value of a real dark red).
    rgb8 = np.array([[[1, 0, 0], [3, 0, 2], [0, 0, 0], [40, 30, 20]]], dtype=np.uint8)
    assert rgb_gamut_mask(rgb8).tolist() == [[False, False, True, True]]
    assert rgb_gamut_mask(rgb8, tolerance=1 / 255).all()
    rgb = torch.from_numpy(rgb8 / np.float32(255)).permute(2, 0, 1)[None]
    projected = processor.project_and_clip(torch.full((1, 31, 1, 4), 0.3), rgb)
    assert reprojection_error(processor, projected, rgb).max() <= 1 / 255
    assert torch.equal(projected[..., 2], torch.zeros(1, 31, 1))  # black: only the zero spectrum renders to it
    assert reprojection_error(processor, projected, rgb)[..., 2:].max() < 1e-5  # in gamut: exact


def test_gamut_mask_holds_every_render_of_a_unit_spectrum():
    cube = random_feasible_cube(3, (1, 31, 32, 32))[0].permute(1, 2, 0).numpy()
    assert rgb_gamut_mask(render_rgb(cube, mode="linear")).all()
    assert not rgb_gamut_mask(np.array([1.0, 1.0, 1.0])).any()  # brighter than the perfect white (255/256)


@requires_cave
def test_project_and_clip_on_a_real_scene_crop(processor):
    from hsr_diffusers.data import load_cube

    # A dark corner of feathers: 8-bit values near 0, many of them out of the gamut after truncation.
    cube = load_cube(CAVE_DIR / "feathers_ms")[376:424, 376:424]
    rgb8 = render_rgb(cube)
    assert (~rgb_gamut_mask(rgb8)).sum() > 100
    rgb = torch.from_numpy(rgb8 / np.float32(255)).permute(2, 0, 1)[None]
    guess = torch.from_numpy(cube.mean(axis=(0, 1))).reshape(1, 31, 1, 1).expand(1, 31, 48, 48)
    projected = processor.project_and_clip(guess, rgb)
    assert reprojection_error(processor, projected, rgb).max() <= 1 / 255


def test_project_and_clip_leaves_saturated_pixels_clipped(processor):
    cube = torch.full((1, 31, 4, 4), 1.5)
    rgb = torch.ones(1, 3, 4, 4)  # saturated: the true spectrum is unknown
    assert torch.equal(processor.project_and_clip(cube, rgb), torch.ones(1, 31, 4, 4))


def test_estimate_folds_the_projection_into_the_root_polynomial_product(processor):
    from hsr_diffusers.models import RootPolynomialRegression

    regression = RootPolynomialRegression(degree=2)
    with torch.no_grad():
        regression.weight.copy_(torch.randn(regression.num_features, 31, generator=torch.Generator().manual_seed(0)))

    class Plain(torch.nn.Module):
        """The same regression without `consistent_estimate`: the generic path, `forward` then `project`."""

        def forward(self, sample):
            return regression(sample)

    rgb = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1)) * 0.99
    rgb[..., :2, :] = 1.0  # saturated rows: not projected
    folded = processor.estimate(regression, rgb)
    torch.testing.assert_close(folded, processor.estimate(Plain(), rgb), atol=1e-5, rtol=0)
    assert folded.min() >= 0 and folded.max() <= 1
    unprojected = processor.estimate(regression, rgb, project=False)
    assert not torch.allclose(folded, unprojected)
    torch.testing.assert_close(folded[..., :2, :], unprojected[..., :2, :])
