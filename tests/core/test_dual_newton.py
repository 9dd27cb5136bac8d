"""The compiled pieces of the bounded projection against plain numpy and against each other."""

import numba
import numpy as np

from hsr_diffusers import dual_newton
from hsr_diffusers.dual_newton import OUTSIDE, SOLVED, UNSOLVED, constants, inside_faces, project_image, solve_pixels
from hsr_diffusers.spectral import rendering_matrix


MATRIX = rendering_matrix()  # [31, 3] float64


def test_inside_faces_matches_the_full_product():
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(40, 3))
    support = rng.random(40)
    points = rng.normal(size=(500, 3)) * 0.3
    inside = np.empty(len(points), dtype=bool)
    inside_faces(points, normals, support, inside)
    expected = (points @ normals.T <= support).all(axis=1)
    assert 0 < expected.sum() < len(points) and np.array_equal(inside, expected)


def random_image(seed: int, count: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """`[31, count]` float32 unbounded projections (spectra in [0, 1] plus noise, corrected to render exactly) and their
    `[3, count]` RGB, some of it saturated."""
    rng = np.random.default_rng(seed)
    truth = rng.random((count, 31)) ** 3
    rgb = truth @ MATRIX
    rgb[: count // 20] *= 3  # saturated
    start = truth + 0.2 * rng.normal(size=truth.shape)
    closed = start + (rgb - start @ MATRIX) @ np.linalg.pinv(MATRIX)
    return np.ascontiguousarray(closed.T, dtype=np.float32), np.ascontiguousarray(rgb.T, dtype=np.float32)


def test_project_image_solves_in_place_what_solve_pixels_solves():
    closed, rgb = random_image(1)
    before = closed.copy()
    level = np.float32(254.5 / 255)
    left, left_status = np.empty(closed.shape[1], np.int64), np.empty(closed.shape[1], np.int8)
    numbers = constants(np.float32)
    count = project_image(closed, rgb, MATRIX.astype(np.float32), level, 6, numbers, left, left_status)
    listed = left[:count]
    assert set(left_status[:count]) <= {OUTSIDE, UNSOLVED}

    # The same pixels, one by one, with the per-pixel entry point.
    saturated = (rgb >= level).any(axis=0)
    in_range = ((before >= 0) & (before <= 1)).all(axis=0)
    iterated = np.flatnonzero(~saturated & ~in_range)
    assert len(iterated) > 1000
    out = np.empty((len(iterated), 31), np.float32)
    status = np.empty(len(iterated), np.int8)
    steps = np.empty(len(iterated), np.int16)
    start, target = np.ascontiguousarray(before[:, iterated].T), np.ascontiguousarray(rgb[:, iterated].T)
    solve_pixels(start, target, MATRIX.astype(np.float32), 6, False, numbers, out, status, steps)
    assert np.array_equal(np.sort(listed), iterated[status != SOLVED])
    solved = iterated[status == SOLVED]
    np.testing.assert_allclose(closed[:, solved], out[status == SOLVED].T, atol=1e-6)
    assert np.abs(MATRIX.T @ closed[:, solved] - rgb[:, solved]).max() < 1e-5
    # Unsolved pixels keep their start; the rest are clipped (in [0, 1] already, or saturated).
    np.testing.assert_array_equal(closed[:, listed], before[:, listed])
    np.testing.assert_array_equal(closed[:, in_range], before[:, in_range])
    np.testing.assert_array_equal(closed[:, saturated & ~in_range], np.clip(before[:, saturated & ~in_range], 0, 1))


def test_line_search_steps_run_in_float64():
    closed, rgb = random_image(2, count=200)
    start, target = np.ascontiguousarray(closed.T, np.float64), np.ascontiguousarray(rgb.T, np.float64)
    unsaturated = (target < 254.5 / 255).all(axis=1)
    start, target = start[unsaturated], target[unsaturated]
    out = np.empty_like(start)
    status, steps = np.empty(len(start), np.int8), np.empty(len(start), np.int16)
    solve_pixels(start, target, MATRIX, 60, True, constants(np.float64), out, status, steps)
    solved = status == SOLVED
    assert solved.mean() > 0.9 and steps.max() <= 60
    assert np.abs(out[solved] @ MATRIX - target[solved]).max() <= 1e-6
    assert out.min() >= 0 and out.max() <= 1


def test_compile_falls_back_to_no_cache_where_it_cannot_write(monkeypatch):
    njit, calls = numba.njit, []

    def refusing(*args, cache=False, **kwargs):
        calls.append(cache)
        if cache:
            raise RuntimeError("cannot cache function: no locator available")
        return njit(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", refusing)
    compiled = dual_newton._compile(lambda x: x + 1)
    assert calls == [True, False] and compiled(1) == 2
