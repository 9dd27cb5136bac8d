"""The [0, 1]-bounded RGB projection against a reference QP solver, on the pixels that make it hard."""

import numpy as np
import pytest
import torch

from hsr_diffusers import spectral
from hsr_diffusers.dual_newton import SOLVED
from hsr_diffusers.spectral import bounded_rgb_projection, rendering_matrix, rgb_gamut_mask

from ..testing_utils import CAVE_DIR, requires_cave


quadprog = pytest.importorskip("quadprog")

MATRIX = rendering_matrix()  # [31, 3] float64


def reference_projection(start: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """`min |s - start|²` s.t. `Aᵀs = rgb`, `0 <= s <= 1` for one pixel, by quadprog's dual active-set method. A channel
    at exactly 0 is met only by every band it sees at 0: those bands are fixed and its (then redundant) equality
    dropped, which quadprog needs (it rejects the degenerate face as inconsistent)."""
    channels = rgb > 0
    if not channels.any():
        return np.zeros(len(start))
    free = ~(MATRIX[:, ~channels] > 0).any(axis=1)
    matrix, bands = MATRIX[free][:, channels], int(free.sum())
    constraints = np.concatenate([matrix, np.eye(bands), -np.eye(bands)], axis=1)
    bounds = np.concatenate([rgb[channels], np.zeros(bands), -np.ones(bands)])
    solution = np.zeros(len(start))
    solution[free] = quadprog.solve_qp(np.eye(bands), start[free], constraints, bounds, meq=int(channels.sum()))[0]
    return solution


def hard_spectra(seed: int) -> np.ndarray:
    """`(P, 31)` spectra in [0, 1] whose renders are the worst cases: saturated primaries (blocks of bands at 1, the rest
    at 0), points near the gamut's edge (the spectra that maximise a direction's render, moved 0.5 % inwards) and
    near-black ones."""
    rng = np.random.default_rng(seed)
    bands = MATRIX.shape[0]
    blocks = []
    for width in (3, 6, 10):
        for first in range(0, bands - width + 1, 2):
            block = np.zeros(bands)
            block[first : first + width] = 1.0
            blocks.append(block)
    blocks = np.array(blocks)
    saturated = 0.98 * blocks + 0.02 * rng.random(blocks.shape)
    directions = rng.normal(size=(200, 3))
    edge = (directions @ MATRIX.T > 0).astype(float)  # the zonotope's support points
    edge = 0.995 * edge + 0.005 * 0.5
    dark = 0.004 * rng.random((100, bands)) * (rng.random((100, bands)) < 0.3)
    dark_saturated = 0.02 * blocks
    return np.concatenate([saturated, edge, dark, dark_saturated])


def strictly_reachable(rgb: np.ndarray) -> np.ndarray:
    """RGB that [0, 1] spectra render, at least 1e-6 inside the gamut's boundary (on it, the dual optimum lies at
    infinity and the projection aims at the 1/255 box instead)."""
    return spectral._in_zonotope(rgb, MATRIX, margin=-1e-6)


def as_image(columns: np.ndarray) -> torch.Tensor:
    """`(P, C)` -> `[1, C, 1, P]` float32."""
    return torch.from_numpy(columns.T[None, :, None, :].astype(np.float32))


def network_like_starts(truth: np.ndarray, seed: int) -> np.ndarray:
    """What a network returns for these pixels: the truth plus noise that pushes some bands outside [0, 1]."""
    return truth + 0.3 * np.random.default_rng(seed).normal(size=truth.shape)


@pytest.mark.parametrize("seed", [0, 1])
def test_hard_pixels_match_the_reference_qp(seed):
    truth = hard_spectra(seed)
    rgb = truth @ MATRIX
    rgb32 = rgb.astype(np.float32).astype(np.float64)  # the target the float32 pipeline sees
    assert rgb_gamut_mask(rgb32, tolerance=1 / 255).all()
    start = network_like_starts(truth, seed)
    projected = bounded_rgb_projection(as_image(start), as_image(rgb32), MATRIX)[0, :, 0].T.double().numpy()
    assert projected.min() >= 0 and projected.max() <= 1
    reachable = strictly_reachable(rgb32)
    assert reachable.mean() > 0.9
    reference = np.array([reference_projection(s, y) for s, y in zip(start[reachable], rgb32[reachable])])
    # Exact where a [0, 1] spectrum renders to the RGB: its render, and the reference's answer. A pixel counts as
    # solved when it renders within 1e-6; for dark, saturated RGB (a badly conditioned dual) that leaves the spectrum
    # up to a few 1e-3 from the reference's, for the others far less.
    assert np.abs(projected[reachable] @ MATRIX - rgb32[reachable]).max() < 1e-5
    distance = np.abs(projected[reachable] - reference).max(axis=1)
    assert distance.max() < 5e-3 and np.median(distance) < 1e-5 and np.mean(distance < 1e-4) > 0.9
    # Within one 8-bit level everywhere else.
    assert np.abs(projected @ MATRIX - rgb32).max() <= 1 / 255


def test_newton_steps_are_few_and_bounded():
    truth = hard_spectra(2)
    rgb = (truth @ MATRIX).astype(np.float32)
    matrix = torch.as_tensor(MATRIX, dtype=torch.float32)
    # The closed-form projection is the iteration's start, as in `bounded_rgb_projection`.
    start, target = as_image(network_like_starts(truth, 2)), as_image(rgb)
    closed = spectral.project_tensor(start, target, matrix, torch.linalg.pinv(matrix))[0, :, 0].numpy()
    rgb = target[0, :, 0].numpy()
    inside = strictly_reachable(rgb.T.astype(np.float64))
    _, status, steps = spectral._solve_pixels(
        closed[:, inside].T, rgb[:, inside].T, MATRIX, spectral._FAST_STEPS, False
    )
    # On these worst cases the float32 steps solve most pixels in a few steps (on real scenes, 99 % and more).
    solved = status == SOLVED
    assert solved.mean() > 0.6
    assert np.median(steps[solved]) <= 4
    # What the float32 steps leave is finished in float64 within the iteration limit.
    _, status, steps = spectral._solve_pixels(
        closed[:, inside][:, ~solved].T, rgb[:, inside][:, ~solved].T, MATRIX, 60, True
    )
    assert (status == SOLVED).all() and steps.max() <= 60


def test_out_of_gamut_rgb_is_proved_out_and_boxed():
    # Dark colours truncated to 8 bits: red without green is out of the gamut; one level of slack reaches it.
    rgb = np.array([[1, 0, 0], [3, 0, 2], [0, 2, 0], [4, 1, 0], [1, 0, 5]], dtype=np.float64) / 255
    assert not rgb_gamut_mask(rgb).any() and rgb_gamut_mask(rgb, tolerance=1 / 255).all()
    start = np.full((len(rgb), 31), 0.3)
    projected = bounded_rgb_projection(as_image(start), as_image(rgb), MATRIX)[0, :, 0].T.double().numpy()
    assert np.abs(projected @ MATRIX - rgb).max() <= 1 / 255
    assert projected.min() >= 0 and projected.max() <= 1


def test_near_black_and_zero_channels_are_exact():
    # A channel at 0 pins every band it sees to 0; the rest must still be met exactly.
    truth = np.zeros((4, 31))
    truth[0, 24:] = 0.01  # deep red, no blue
    truth[1, :4] = 0.02  # deep violet
    truth[2, 10:14] = 0.003
    rgb = (truth @ MATRIX).astype(np.float32).astype(np.float64)
    reachable = strictly_reachable(rgb)
    start = np.full_like(truth, 0.5)
    projected = bounded_rgb_projection(as_image(start), as_image(rgb), MATRIX)[0, :, 0].T.double().numpy()
    reference = np.array([reference_projection(s, y) for s, y in zip(start[reachable], rgb[reachable])])
    assert np.abs(projected[reachable] @ MATRIX - rgb[reachable]).max() < 1e-5
    assert np.abs(projected[reachable] - reference).max() < 5e-3  # badly conditioned: see the test above
    assert np.abs(projected @ MATRIX - rgb).max() <= 1 / 255
    assert np.array_equal(projected[3], np.zeros(31))  # black


@requires_cave
def test_a_colourful_scene_is_exact_where_reachable():
    from hsr_diffusers.data import load_cube
    from hsr_diffusers.spectral import render_rgb

    cube = load_cube(CAVE_DIR / "superballs_ms")[128:256, 128:256]
    rgb8 = render_rgb(cube)
    rgb = torch.from_numpy(rgb8 / np.float32(255)).permute(2, 0, 1)[None]
    truth = torch.from_numpy(cube).permute(2, 0, 1)[None]
    guess = truth + 0.1 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    projected = bounded_rgb_projection(guess, rgb, MATRIX)
    error = (torch.einsum("nchw,cr->nrhw", projected.double(), torch.from_numpy(MATRIX)) - rgb).abs().amax(dim=1)[0]
    unsaturated = torch.from_numpy((rgb8 < 254.5).all(axis=-1))
    assert error[unsaturated].max() <= 1 / 255
    reachable = torch.from_numpy(rgb_gamut_mask(rgb8)) & unsaturated
    assert error[reachable].max() < 1e-5
    # Written into a given tensor, whatever it held, the result is the same.
    into = torch.full_like(guess, float("nan"))
    assert bounded_rgb_projection(guess, rgb, MATRIX, projected=into) is into and torch.equal(into, projected)
    # The plain float32 Newton steps solve nearly every pixel that needs them, in a few steps.
    matrix = torch.as_tensor(MATRIX, dtype=torch.float32)
    closed = spectral.project_tensor(guess, rgb, matrix, torch.linalg.pinv(matrix)).reshape(31, -1)
    target = rgb.reshape(3, -1)
    off = ((closed < 0) | (closed > 1)).any(dim=0) & (target < 254.5 / 255).all(dim=0)
    off &= torch.from_numpy(rgb_gamut_mask(rgb8).reshape(-1))
    _, status, steps = spectral._solve_pixels(closed[:, off].T, target[:, off].T, MATRIX, spectral._FAST_STEPS, False)
    solved = status == SOLVED
    assert off.sum() > 1000 and solved.mean() > 0.99
    assert steps[solved].mean() < 3


def test_a_batch_is_projected_image_by_image():
    # Two images with different pixels to iterate (the second has none): the batch gives what each gives alone, up to
    # the float32 rounding of the closed form (batched matmuls round differently), which moves the spectra of badly
    # conditioned pixels within the solver's tolerance (see the first test).
    truth = hard_spectra(3)
    rgb = (truth @ MATRIX).astype(np.float32).astype(np.float64)
    hard = as_image(network_like_starts(truth, 3)), as_image(rgb)
    easy = torch.full_like(hard[0], 0.5), as_image(np.tile(np.full(31, 0.5) @ MATRIX, (len(rgb), 1)))
    batch = bounded_rgb_projection(torch.cat([hard[0], easy[0]]), torch.cat([hard[1], easy[1]]), MATRIX)
    alone = torch.cat([bounded_rgb_projection(*hard, MATRIX), bounded_rgb_projection(*easy, MATRIX)])
    distance = (batch - alone).abs().amax(dim=1).flatten()
    assert distance.max() < 5e-3 and distance.median() < 1e-6
    torch.testing.assert_close(batch[1:], easy[0], rtol=0, atol=1e-6)  # renders exactly already: left as it is
    renders = torch.einsum("nchw,cr->nrhw", batch.double(), torch.from_numpy(MATRIX))
    reachable = torch.from_numpy(strictly_reachable(rgb))
    assert (renders[0, :, 0, reachable] - hard[1][0, :, 0, reachable]).abs().max() < 1e-5
