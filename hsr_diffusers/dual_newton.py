"""The per-pixel solver of the [0, 1]-bounded RGB projection, compiled with numba.

Each pixel's problem is `min |s - s0|²` subject to `0 <= s <= 1` and `Aᵀs = y`, solved on its dual (three multipliers)
by a semismooth Newton iteration; see [`~hsr_diffusers.spectral.bounded_rgb_projection`] for the method. A compiled
loop does every step of a pixel in the cache, where the same iteration written with torch operations streamed 15 to 20
passes over `[bands, pixels]` arrays per step, and [`project_image`] picks out, solves and clips an image's pixels in
one pass. On the bundled PixelGAN's outputs for the 19 CAVE scenes the torch version took 1.15 to 2.4 times as long
(median 1.7, the most where the projection iterates most; `benchmarks/projection_speed.py`, one thread). Arithmetic is
in the dtype of the arrays given (float32 for the plain steps, float64 for the line-searched ones, as the callers
choose).
"""

import numba
import numpy as np


SOLVED, OUTSIDE, UNSOLVED = 0, 1, 2
SOLVED_ERROR = 1e-6
"""A pixel counts as solved when its render is this close to the target in every channel: float32 rounding of a render
is about 1e-7, and an 8-bit level is 4e-3."""

_REGULARISATION = 1e-5
_ARMIJO = 1e-4
_HALVINGS = 30
# Pixels read, solved and written back together: `[_BLOCK, bands]` stays in the first-level cache.
_BLOCK = 128
# Every fast-math flag except those that assume no infinities or NaNs: pinned bands start at -inf.
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def _compile(function=None, **options):
    """`numba.njit` with fast math, cached beside this file or in the user's cache folder; where neither can be written,
    compiled at every start instead of failing."""
    if function is None:
        return lambda function: _compile(function, **options)
    try:
        return numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, **options)(function)
    except RuntimeError:
        return numba.njit(nogil=True, fastmath=_FASTMATH, **options)(function)


def constants(dtype: type) -> np.ndarray:
    """The solver's constants in the arithmetic dtype of a call: ridge scale (the dtype's precision), error ridge,
    Armijo fraction and the objective's rounding slack. Every number in the loop comes from the arrays or from these,
    so that no literal promotes a float32 iteration to float64."""
    eps = np.finfo(dtype).eps
    return np.array([eps, _REGULARISATION, _ARMIJO, 8 * np.finfo(np.float64).eps], dtype=dtype)


@_compile(inline="always")
def _clip_integral(z, zero, one):
    """The integral of the clip to [0, 1] at `z`: 0 below 0, z²/2 inside, z - 1/2 above 1."""
    s = min(max(z, zero), one)
    return s * (max(z, zero) - s / (one + one))


@_compile
def _prepare(matrix, numbers):
    """What every pixel's iteration shares, for the `(bands, 3)` rendering matrix `A` in the arithmetic's dtype: its
    three columns, the inverse of `AᵀA` (by the adjugate, written out: numba's `@` and `np.linalg.inv` would compile
    BLAS and LAPACK bindings, seconds at the first call), the smallest ridge of the Newton systems (the dtype's
    precision times the trace of `AᵀA`: it keeps the systems of pixels with fewer than three free bands solvable) and
    four `[bands]` work arrays."""
    gram = np.zeros((3, 3), matrix.dtype)
    for k in range(matrix.shape[0]):
        for i in range(3):
            for j in range(3):
                gram[i, j] += matrix[k, i] * matrix[k, j]
    (a, b, c), (_, e, f), (_, _, i) = gram
    adjugate = np.empty((3, 3), matrix.dtype)
    adjugate[0, 0], adjugate[0, 1], adjugate[0, 2] = e * i - f * f, c * f - b * i, b * f - c * e
    adjugate[1, 1], adjugate[1, 2], adjugate[2, 2] = a * i - c * c, b * c - a * f, a * e - b * b
    adjugate[1, 0], adjugate[2, 0], adjugate[2, 1] = adjugate[0, 1], adjugate[0, 2], adjugate[1, 2]
    determinant = a * adjugate[0, 0] + b * adjugate[0, 1] + c * adjugate[0, 2]
    columns = (matrix[:, 0].copy(), matrix[:, 1].copy(), matrix[:, 2].copy())
    work = np.empty((4, matrix.shape[0]), matrix.dtype)
    return columns, adjugate / determinant, numbers[0] * (a + e + i), work


@_compile
def _newton(start, y0, y1, y2, solver, iterations, line_search, numbers):
    """Solves one pixel from its `start` spectrum (`[bands]`) onto the RGB `(y0, y1, y2)`, with what [`_prepare`]
    returns as `solver`; the solution (or the last iterate) is left in its first work array. Returns the status and the
    number of steps."""
    (a0, a1, a2), inverse_gram, ridge, work = solver
    spectrum, z, direction, base = work[0], work[1], work[2], work[3]
    one = numbers[0] / numbers[0]
    zero = one - one
    bands = a0.shape[0]
    # A channel whose target is 0 puts the pixel on a face of the gamut, which only spectra with every band that
    # channel sees at 0 reach: those bands are pinned to 0 (the dual optimum lies at infinity there), by a
    # start of -inf that keeps them clipped and never free.
    r0, r1, r2 = y0, y1, y2
    for k in range(bands):
        pinned = (y0 <= 0 and a0[k] > 0) or (y1 <= 0 and a1[k] > 0) or (y2 <= 0 and a2[k] > 0)
        base[k] = -np.inf if pinned else start[k]
        clamped = max(base[k], zero)
        r0 -= a0[k] * clamped
        r1 -= a1[k] * clamped
        r2 -= a2[k] * clamped
    # Warm start: the multipliers of the unbounded projection from the start clipped below.
    l0 = inverse_gram[0, 0] * r0 + inverse_gram[0, 1] * r1 + inverse_gram[0, 2] * r2
    l1 = inverse_gram[1, 0] * r0 + inverse_gram[1, 1] * r1 + inverse_gram[1, 2] * r2
    l2 = inverse_gram[2, 0] * r0 + inverse_gram[2, 1] * r1 + inverse_gram[2, 2] * r2
    d0 = d1 = d2 = zero
    for iteration in range(iterations + 1):
        e0, e1, e2 = -y0, -y1, -y2
        j00 = j01 = j02 = j11 = j12 = j22 = zero
        for k in range(bands):
            z[k] = base[k] + a0[k] * l0 + a1[k] * l1 + a2[k] * l2
            spectrum[k] = min(max(z[k], zero), one)
            e0 += a0[k] * spectrum[k]
            e1 += a1[k] * spectrum[k]
            e2 += a2[k] * spectrum[k]
            # The exact generalised Jacobian A_fᵀA_f, over the bands f strictly inside (0, 1).
            free = one if zero < z[k] < one else zero
            j00 += free * a0[k] * a0[k]
            j01 += free * a0[k] * a1[k]
            j02 += free * a0[k] * a2[k]
            j11 += free * a1[k] * a1[k]
            j12 += free * a1[k] * a2[k]
            j22 += free * a2[k] * a2[k]
        error = max(abs(e0), abs(e1), abs(e2))
        if error <= SOLVED_ERROR:
            return SOLVED, iteration
        if iteration >= 1 and iteration != 2:
            # The iterates of an RGB that no spectrum reaches run off along a direction d that separates it from every
            # reachable render: d·y > Σ_k max(0, d·a_k) over the bands not pinned. The last step proves it.
            support = zero
            for k in range(bands):
                if base[k] > -np.inf:
                    support += max(a0[k] * d0 + a1[k] * d1 + a2[k] * d2, zero)
            if d0 * y0 + d1 * y1 + d2 * y2 > support + SOLVED_ERROR * (abs(d0) + abs(d1) + abs(d2)):
                return OUTSIDE, iteration
        if iteration == iterations:
            break
        j00 += ridge
        j11 += ridge
        j22 += ridge
        if line_search:
            # A ridge in proportion to the error bounds the steps where fewer than three bands are free (a singular
            # Jacobian) and vanishes at the solution, where the steps become Newton's again.
            j00 += numbers[1] * error
            j11 += numbers[1] * error
            j22 += numbers[1] * error
        # The 3x3 symmetric system, solved by its adjugate.
        c00, c01, c02 = j11 * j22 - j12 * j12, j02 * j12 - j01 * j22, j01 * j12 - j02 * j11
        c11, c12, c22 = j00 * j22 - j02 * j02, j01 * j02 - j00 * j12, j00 * j11 - j01 * j01
        inverse_det = one / (j00 * c00 + j01 * c01 + j02 * c02)
        d0 = -(c00 * e0 + c01 * e1 + c02 * e2) * inverse_det
        d1 = -(c01 * e0 + c11 * e1 + c12 * e2) * inverse_det
        d2 = -(c02 * e0 + c12 * e1 + c22 * e2) * inverse_det
        if line_search:
            # Halve the step until the dual objective Σ ψ(z_k) - λ·y (convex, with the render error as its gradient)
            # decreases by 1e-4 of what its slope predicts; this keeps the iteration from cycling between sets of
            # clipped bands. The objective's rounding error counts as a decrease.
            current = zero
            for k in range(bands):
                direction[k] = a0[k] * d0 + a1[k] * d1 + a2[k] * d2
                current += _clip_integral(z[k], zero, one)  # 0 for pinned bands
            slope = e0 * d0 + e1 * d1 + e2 * d2
            along = y0 * d0 + y1 * d1 + y2 * d2
            slack = numbers[3] * (abs(current) + one)
            fraction = one
            for _ in range(_HALVINGS):
                trial = -fraction * along
                for k in range(bands):
                    trial += _clip_integral(z[k] + fraction * direction[k], zero, one)
                if trial <= current + numbers[2] * fraction * slope + slack:
                    break
                fraction /= one + one
            d0 *= fraction
            d1 *= fraction
            d2 *= fraction
        l0 += d0
        l1 += d1
        l2 += d2
    return UNSOLVED, iterations


@_compile
def solve_pixels(start, target, matrix, iterations, line_search, numbers, out, status, steps):
    """
    Solves the bounded projection of `P` pixels: `start` (`[P, bands]`, the closest spectra wanted) onto `target`
    (`[P, 3]`) with the rendering `matrix` (`(bands, 3)`), by at most `iterations` Newton steps from the multipliers of
    the unbounded projection: plain steps, or with `line_search` steps with a ridge in proportion to the error and an
    Armijo line search on the dual objective. All arrays share one float dtype, that of the arithmetic, and `numbers`
    holds its [`constants`].

    Writes the first `out.shape[1]` bands of each pixel's solution (or last iterate) into `out` (`[P, bands_out]`), its
    status (`SOLVED`; `OUTSIDE`, proved out of the reachable RGB by a separating direction; or `UNSOLVED`) into
    `status` (int8 `[P]`) and its number of steps into `steps` (int16 `[P]`).
    """
    solver = _prepare(matrix, numbers)
    for p in range(start.shape[0]):
        y0, y1, y2 = target[p, 0], target[p, 1], target[p, 2]
        status[p], steps[p] = _newton(start[p], y0, y1, y2, solver, iterations, line_search, numbers)
        out[p, :] = solver[3][0, : out.shape[1]]


@_compile
def project_image(closed, target, matrix, saturation_level, iterations, numbers, left, left_status):
    """
    The bounded projection of one image's pixels, in place: `closed` (`[bands, N]`, the unbounded projection, exact
    solutions of `Aᵀs = target`) becomes its clip to [0, 1] where that is the answer (a pixel in [0, 1] already, or a
    saturated one: a channel of `target` (`[3, N]`) at or above `saturation_level`) and the bounded solution where at
    most `iterations` plain Newton steps find it. The pixels they do not solve keep their column (the start of the
    slower stages) and are listed in `left` (int64 `[N]`), with their status in `left_status` (int8 `[N]`).

    Returns the number of pixels listed. The arrays are float32 (the arithmetic's dtype, with `numbers` its
    [`constants`]) and the iteration is [`solve_pixels`]'s.
    """
    bands, count = closed.shape
    solver = _prepare(matrix, numbers)
    block = np.empty((_BLOCK, bands), closed.dtype)
    listed = 0
    one = numbers[0] / numbers[0]
    zero = one - one
    for first in range(0, count, _BLOCK):
        size = min(_BLOCK, count - first)
        # Rows of the channel-first image are read and written whole; the pixels are solved from the transposed block.
        for k in range(bands):
            for j in range(size):
                block[j, k] = closed[k, first + j]
        changed = False
        for j in range(size):
            low, high = block[j, 0], block[j, 0]
            for k in range(1, bands):
                low, high = min(low, block[j, k]), max(high, block[j, k])
            if low >= 0 and high <= 1:
                continue
            changed = True
            column = first + j
            y0, y1, y2 = target[0, column], target[1, column], target[2, column]
            if max(y0, y1, y2) >= saturation_level:
                for k in range(bands):
                    block[j, k] = min(max(block[j, k], zero), one)
                continue
            result, _ = _newton(block[j], y0, y1, y2, solver, iterations, False, numbers)
            if result == SOLVED:
                block[j, :] = solver[3][0]
            else:
                left[listed], left_status[listed] = column, result
                listed += 1
        if changed:
            for k in range(bands):
                for j in range(size):
                    closed[k, first + j] = block[j, k]
    return listed


@_compile
def inside_faces(points, normals, support, inside):
    """Whether each of the `(P, 3)` float64 `points` satisfies `n·y <= support` for every face normal `n` of `(F, 3)`
    `normals` with its `(F,)` `support`, written into the boolean `inside` (`[P]`). A point stops at the first face
    it lies beyond: most RGB outside a gamut do so within a few faces, where the product with every face took a
    `(P, F)` array."""
    for p in range(points.shape[0]):
        y0, y1, y2 = points[p, 0], points[p, 1], points[p, 2]
        inside[p] = True
        for f in range(normals.shape[0]):
            if normals[f, 0] * y0 + normals[f, 1] * y1 + normals[f, 2] * y2 > support[f]:
                inside[p] = False
                break
