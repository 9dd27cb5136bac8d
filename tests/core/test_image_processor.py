import pytest
import torch

from hsr_diffusers.image_processor import HSRImageProcessor, _solve3x3
from hsr_diffusers.spectral import DEFAULT_RESPONSE, WAVELENGTHS


@pytest.fixture(scope="module")
def processor():
    return HSRImageProcessor(WAVELENGTHS, DEFAULT_RESPONSE)


def test_solve3x3_matches_lapack_and_gives_zero_for_singular_systems():
    generator = torch.Generator().manual_seed(0)
    factors = torch.randn(64, 3, 5, generator=generator, dtype=torch.float64)
    matrices = factors @ factors.transpose(1, 2)  # symmetric positive definite, like the Gram matrices
    vectors = torch.randn(64, 3, generator=generator, dtype=torch.float64)
    expected = torch.linalg.solve(matrices, vectors.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(_solve3x3(matrices, vectors), expected)

    rank_two = factors[:, :, :2] @ factors[:, :, :2].transpose(1, 2)  # two free bands cannot reach three targets
    assert torch.equal(_solve3x3(rank_two.float(), vectors.float()), torch.zeros(64, 3))


def test_project_and_clip_reaches_reachable_rgb_inside_the_unit_range(processor):
    generator = torch.Generator().manual_seed(0)
    truth = torch.rand(2, 31, 16, 16, generator=generator)
    rgb = processor.render(truth)
    guess = truth + 0.4 * torch.randn(truth.shape, generator=generator)  # far off, and outside [0, 1]
    projected = processor.project_and_clip(guess, rgb)
    assert projected.shape == truth.shape and projected.min() >= 0 and projected.max() <= 1
    error = (processor.render(projected) - rgb).abs().amax(dim=1)
    assert (error < 1 / 255).float().mean() > 0.99, error.max()
    # A cube that is already consistent and in range is left as it is.
    torch.testing.assert_close(processor.project_and_clip(truth, rgb), truth, atol=1e-5, rtol=0)


def test_project_and_clip_leaves_saturated_pixels_clipped(processor):
    cube = torch.full((1, 31, 4, 4), 1.5)
    rgb = torch.ones(1, 3, 4, 4)  # saturated: the true spectrum is unknown
    assert torch.equal(processor.project_and_clip(cube, rgb), torch.ones(1, 31, 4, 4))
