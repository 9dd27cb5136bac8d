"""Spectral core: band sets, camera response functions, RGB rendering, sRGB previews and the RGB-consistent projection.

Conventions used across the package:

- A cube is channel-last `(H, W, bands)` (or `(N, H, W, bands)`) in numpy and channel-first `(N, bands, H, W)` in torch,
  with values in the units of the data (reflectance in [0, 1] for CAVE, normalised radiance for ARAD-HS).
- A response function is a `(bands, 3)` array whose columns (R, G, B) each sum to 255 over the cube's bands: the gain of the
  NTIRE 2020 challenge, which white-balances every camera for an equal-energy illuminant. Linear RGB is then
  `cube @ response / 256`, so a perfect white reflector renders to 255/256 in every channel, and the NTIRE 2020 clean
  track stores `floor(clip(cube @ response / 256, 0, 1) * 255)` as an 8-bit PNG.
"""

import io
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch


WAVELENGTHS: tuple[int, ...] = tuple(range(400, 701, 10))
"""The default band set: 400, 410, ..., 700 nm (31 bands), as in NTIRE 2020/2022, CAVE and ICVL."""

DEFAULT_RESPONSE = "cie1964_ntire2020"
RESPONSE_SUM = 255.0
RGB_SCALE = 256.0
RENDER_MODES = ("ntire2020_clean", "linear", "real_world")


@lru_cache(maxsize=1)
def _camspec_table() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Jiang et al. 2013 camera sensitivities as {camera name: (wavelengths, (33, 3) curves)}."""
    text = resources.files("hsr_diffusers").joinpath("resources/camspec_jiang2013.csv").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    wavelengths = np.array([float(value) for value in lines[0].split(",")[2:]])
    curves: dict[str, list[np.ndarray]] = {}
    for line in lines[1:]:
        name, _channel, *values = line.split(",")
        curves.setdefault(name, []).append(np.array(values, dtype=np.float64))
    return {name: (wavelengths, np.stack(rows, axis=1)) for name, rows in curves.items()}


def _camera_key(name: str) -> str:
    return name.lower().replace(" ", "_").replace("-", "_")


def _native_response(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The named response at its native sampling, as (wavelengths, (n, 3) curves)."""
    key = _camera_key(name)
    if key == "cie1964_ntire2020":
        import colour

        cmfs = colour.MSDS_CMFS["CIE 1964 10 Degree Standard Observer"]
        return np.asarray(cmfs.wavelengths, dtype=np.float64), np.asarray(cmfs.values, dtype=np.float64)
    if key == "ntire2022_camera":
        path = resources.files("hsr_diffusers").joinpath("resources/ntire2022_camera.csv")
        table = np.loadtxt(io.StringIO(path.read_text()), delimiter=",", comments="#", skiprows=3)
        return table[:, 0], table[:, 1:4]
    cameras = {_camera_key(camera): camera for camera in _camspec_table()}
    if key in cameras:
        return _camspec_table()[cameras[key]]
    raise ValueError(f"Unknown response function {name!r}. Known names: {', '.join(list_responses())}.")


def _is_numeric_row(line: str) -> bool:
    try:
        [float(value) for value in line.split(",")]
    except ValueError:
        return False
    return True


def list_responses() -> list[str]:
    """Names accepted by [`load_response`]: the NTIRE curves and every camera of the Jiang et al. 2013 database."""
    return ["cie1964_ntire2020", "canon_40d", "ntire2022_camera"] + [_camera_key(c) for c in _camspec_table()]


def normalize_response(response: np.ndarray) -> np.ndarray:
    """Scales each column of a `(bands, 3)` response so that it sums to 255 (the NTIRE 2020 gain)."""
    response = np.asarray(response, dtype=np.float64)
    sums = response.sum(axis=0)
    if response.ndim != 2 or response.shape[1] != 3:
        raise ValueError(f"A response function must have shape (bands, 3), got {response.shape}.")
    if not np.all(np.isfinite(response)) or np.any(sums <= 0):
        raise ValueError("A response function must be finite with a positive sum in every channel.")
    return response / sums * RESPONSE_SUM


def load_response(
    name_or_array: str | Path | np.ndarray | list, wavelengths: list[float] | tuple[float, ...] | None = None
) -> np.ndarray:
    r"""
    Loads a camera response function sampled at `wavelengths`, normalised so that each column sums to 255.

    Args:
        name_or_array (`str`, `Path` or `np.ndarray`):
            A name from [`list_responses`] (`"cie1964_ntire2020"`: the CIE 1964 10° colour-matching functions with the
            NTIRE 2020 gain, built from colour-science; `"canon_40d"` and the other cameras of Jiang et al. 2013;
            `"ntire2022_camera"`: the NTIRE 2022 camera with its analog gain), a path to a CSV file, or an array.
            A CSV holds either 3 columns (one row per band of `wavelengths`) or 4 columns `wavelength, R, G, B`, which
            are interpolated onto `wavelengths`. Lines starting with `#` and a header line are ignored.
        wavelengths (`list[float]`, *optional*, defaults to [`WAVELENGTHS`]):
            Band centres in nm. Named curves are linearly interpolated onto them.

    Returns:
        `np.ndarray`: float64 array of shape `(len(wavelengths), 3)`, columns R, G, B.
    """
    wavelengths = np.asarray(WAVELENGTHS if wavelengths is None else wavelengths, dtype=np.float64)
    if isinstance(name_or_array, (np.ndarray, list, tuple, torch.Tensor)):
        table = np.asarray(name_or_array, dtype=np.float64)
        native = None
    elif isinstance(name_or_array, Path) or str(name_or_array).lower().endswith(".csv"):
        path = Path(name_or_array)
        if not path.is_file():
            raise FileNotFoundError(f"Response CSV not found: {path}")
        lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        if lines and not _is_numeric_row(lines[0]):
            lines = lines[1:]  # a header such as "wavelength,R,G,B"
        table = np.loadtxt(io.StringIO("\n".join(lines)), delimiter=",", ndmin=2)
        native = None
    else:
        native, table = _native_response(str(name_or_array))

    if native is None and table.ndim == 2 and table.shape[1] == 4:
        native, table = table[:, 0], table[:, 1:]
    if native is not None:
        if wavelengths.min() < native.min() or wavelengths.max() > native.max():
            raise ValueError(
                f"Response {name_or_array!r} covers {native.min():g}-{native.max():g} nm, "
                f"which does not include the requested {wavelengths.min():g}-{wavelengths.max():g} nm."
            )
        table = np.stack([np.interp(wavelengths, native, table[:, c]) for c in range(3)], axis=1)
    elif table.shape != (len(wavelengths), 3):
        raise ValueError(
            f"A response array must have shape (bands, 3) = ({len(wavelengths)}, 3) for {len(wavelengths)} bands, "
            f"got {table.shape}."
        )
    return normalize_response(table)


def rendering_matrix(
    response: str | np.ndarray | list = DEFAULT_RESPONSE, wavelengths: list[float] | tuple[float, ...] | None = None
) -> np.ndarray:
    """The `(bands, 3)` matrix `A` with linear RGB `= cube @ A` (the response divided by 256)."""
    return load_response(response, wavelengths) / RGB_SCALE


def _check_cube(cube: np.ndarray, num_bands: int) -> np.ndarray:
    cube = np.asarray(cube)
    if cube.ndim < 2 or cube.shape[-1] != num_bands:
        raise ValueError(f"Expected a channel-last cube with {num_bands} bands, got shape {cube.shape}.")
    if not np.all(np.isfinite(cube)):
        raise ValueError("The cube contains NaN or Inf values.")
    return cube


def render_rgb(
    cube: np.ndarray,
    response: str | np.ndarray | list = DEFAULT_RESPONSE,
    mode: str = "ntire2020_clean",
    wavelengths: list[float] | tuple[float, ...] | None = None,
    seed: int | None = None,
    shot_noise: float = 1e-3,
    read_noise: float = 2e-3,
    jpeg_quality: int = 90,
) -> np.ndarray:
    r"""
    Renders a channel-last cube to RGB through a camera response.

    Args:
        cube (`np.ndarray`):
            `(H, W, bands)` or `(N, H, W, bands)` cube ("real_world" needs `(H, W, bands)`).
        response (`str` or `np.ndarray`, *optional*, defaults to `"cie1964_ntire2020"`):
            Anything [`load_response`] accepts.
        mode (`str`, *optional*, defaults to `"ntire2020_clean"`):
            - `"ntire2020_clean"`: the NTIRE 2020 clean track, bit-exact: `uint8(floor(clip(cube @ response / 256, 0, 1)
              * 255))`.
            - `"linear"`: float32 `cube @ response / 256`, neither clipped nor quantised.
            - `"real_world"`: a simulated raw capture, in the spirit of the NTIRE 2020 real-world track: the linear RGB is
              sampled on an RGGB Bayer mosaic, gets signal-dependent shot noise (variance `shot_noise * signal`) and
              Gaussian read noise (standard deviation `read_noise`), is clipped to [0, 1], demosaiced bilinearly and
              saved as an 8-bit JPEG of quality `jpeg_quality`; returns the decoded `uint8` image. Seeded by `seed`.
        wavelengths (`list[float]`, *optional*):
            Band centres of the cube, defaults to [`WAVELENGTHS`] (or must match the band count).
        seed (`int`, *optional*):
            Seed of the noise in `"real_world"` mode.

    Returns:
        `np.ndarray`: `uint8` (`"ntire2020_clean"`, `"real_world"`) or float32 (`"linear"`) with a last axis of 3.
    """
    if mode not in RENDER_MODES:
        raise ValueError(f"Unknown render mode {mode!r}; choose one of {RENDER_MODES}.")
    matrix = rendering_matrix(response, wavelengths)
    cube = _check_cube(cube, matrix.shape[0])
    linear = cube.astype(np.float64) @ matrix
    if mode == "linear":
        return linear.astype(np.float32)
    if mode == "ntire2020_clean":
        # Truncation, not rounding: the challenge code casts with `.astype(np.uint8)`.
        return (np.clip(linear, 0.0, 1.0) * 255).astype(np.uint8)
    return _simulate_capture(linear, seed, shot_noise, read_noise, jpeg_quality)


def bayer_mosaic(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples `(H, W, 3)` RGB on an RGGB Bayer mosaic: returns the `(H, W)` raw image and the `(H, W, 3)` masks."""
    height, width, _ = rgb.shape
    masks = np.zeros((height, width, 3), dtype=bool)
    masks[0::2, 0::2, 0] = True
    masks[0::2, 1::2, 1] = True
    masks[1::2, 0::2, 1] = True
    masks[1::2, 1::2, 2] = True
    return (rgb * masks).sum(axis=-1), masks


def bilinear_demosaic(raw: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Bilinear demosaicing of a [`bayer_mosaic`] raw image: normalised convolution of each colour plane's samples."""
    from scipy.ndimage import convolve

    kernel = np.array([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    planes = []
    for channel in range(3):
        mask = masks[..., channel].astype(np.float64)
        planes.append(convolve(raw * mask, kernel, mode="mirror") / convolve(mask, kernel, mode="mirror"))
    return np.stack(planes, axis=-1)


def jpeg_roundtrip(rgb8: np.ndarray, quality: int) -> np.ndarray:
    """Encodes `(H, W, 3)` uint8 as a JPEG of `quality` (4:2:0 chroma, PIL's default) and decodes it."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb8).save(buffer, format="JPEG", quality=int(quality))
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        return np.asarray(image.convert("RGB"))


def _simulate_capture(linear: np.ndarray, seed, shot_noise: float, read_noise: float, jpeg_quality: int) -> np.ndarray:
    if linear.ndim != 3:
        raise ValueError(f"'real_world' rendering takes one (H, W, bands) cube, got an RGB of shape {linear.shape}.")
    rng = np.random.default_rng(seed)
    raw, masks = bayer_mosaic(linear)  # one colour sample per photosite
    raw = raw + rng.normal(size=raw.shape) * np.sqrt(shot_noise * np.clip(raw, 0, None) + read_noise**2)
    raw = np.clip(raw, 0.0, 1.0)
    rgb8 = (np.clip(bilinear_demosaic(raw, masks), 0, 1) * 255 + 0.5).astype(np.uint8)
    return jpeg_roundtrip(rgb8, jpeg_quality)


def srgb_preview(
    cube: np.ndarray | torch.Tensor,
    wavelengths: list[float] | tuple[float, ...] | None = None,
    illuminant: str = "D65",
    exposure: float = 1.0,
) -> np.ndarray:
    r"""
    Displays a reflectance cube as an sRGB image: cube x illuminant -> CIE 1931 XYZ -> sRGB with its gamma.

    Args:
        cube (`np.ndarray` or `torch.Tensor`):
            Channel-last `(H, W, bands)` / `(N, H, W, bands)` numpy array, or channel-first `(N, bands, H, W)` tensor.
        wavelengths (`list[float]`, *optional*, defaults to [`WAVELENGTHS`]):
            Band centres of the cube in nm.
        illuminant (`str`, *optional*, defaults to `"D65"`):
            A colour-science illuminant name (`"D65"`, `"D50"`, `"A"`, `"E"`, ...). The white point of the XYZ -> sRGB step
            stays D65, so other illuminants show their colour cast.
        exposure (`float`, *optional*, defaults to 1.0):
            Scale applied to luminance before encoding (a perfect white reflector has Y = 1).

    Returns:
        `np.ndarray`: `uint8` channel-last sRGB image(s).
    """
    import colour

    if isinstance(cube, torch.Tensor):
        cube = cube.detach().float().cpu().movedim(1, -1).numpy()
    wavelengths = np.asarray(WAVELENGTHS if wavelengths is None else wavelengths, dtype=np.float64)
    cube = _check_cube(cube, len(wavelengths))
    cmfs = colour.MSDS_CMFS["CIE 1931 2 Degree Standard Observer"]
    if illuminant not in colour.SDS_ILLUMINANTS:
        raise ValueError(f"Unknown illuminant {illuminant!r}; try 'D65', 'D50', 'A' or 'E'.")
    sd = colour.SDS_ILLUMINANTS[illuminant]
    cmf = np.stack([np.interp(wavelengths, cmfs.wavelengths, cmfs.values[:, c]) for c in range(3)], axis=1)
    power = np.interp(wavelengths, sd.wavelengths, sd.values)
    weights = cmf * power[:, None]
    weights /= weights[:, 1].sum()  # Y of a perfect white reflector is 1.
    xyz = cube.astype(np.float64) @ weights * exposure
    d65 = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D65"]
    srgb = colour.XYZ_to_sRGB(xyz, illuminant=d65, apply_cctf_encoding=True)
    return (np.clip(np.nan_to_num(srgb), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """Removes the sRGB transfer function (IEC 61966-2-1) from values in [0, 1]."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def srgb_to_camera_matrix(
    response: str | np.ndarray | list = DEFAULT_RESPONSE, wavelengths: list[float] | tuple[float, ...] | None = None
) -> np.ndarray:
    r"""
    The `(3, 3)` matrix `M` that maps linear sRGB to linear camera RGB under `response` (`camera = linear_srgb @ M`),
    fitted by least squares on the 24 ColorChecker reflectances (colour-science's "ColorChecker N Ohta"): their camera
    RGB under `response` (white-balanced for an equal-energy light, as in NTIRE) against their sRGB under D65 (what a
    white-balanced photo records). [`srgb_to_camera_rgb`] applies it; its inverse maps camera RGB back to a photo's
    colours.

    Returns:
        `np.ndarray`: float64 `(3, 3)`.
    """
    import colour

    wavelengths = list(WAVELENGTHS if wavelengths is None else wavelengths)
    checker = colour.SDS_COLOURCHECKERS["ColorChecker N Ohta"]
    spectra = np.stack([np.interp(wavelengths, sd.wavelengths, sd.values) for sd in checker.values()])  # [24, bands]
    camera = spectra @ rendering_matrix(response, wavelengths)  # [24, 3]
    reference = srgb_to_linear(srgb_preview(spectra[None], wavelengths)[0] / 255.0)  # [24, 3]
    return np.linalg.lstsq(reference, camera, rcond=None)[0]


def srgb_to_camera_rgb(
    srgb: np.ndarray,
    response: str | np.ndarray | list = DEFAULT_RESPONSE,
    wavelengths: list[float] | tuple[float, ...] | None = None,
) -> np.ndarray:
    r"""
    Converts a photo's sRGB values (gamma-encoded, in [0, 1], channel-last) to linear RGB in the camera space of
    `response`, the input the models were trained on.

    The sRGB transfer function is removed, then the `(3, 3)` matrix of [`srgb_to_camera_matrix`] maps linear sRGB to
    camera RGB. Without it, saturated photo colours land outside the colours any spectrum can produce in the camera
    space (off by up to 0.31 on the checker for the default response; 0.015 with it).

    Returns:
        `np.ndarray`: float32 camera RGB clipped to [0, 1], same shape as `srgb`.
    """
    matrix = srgb_to_camera_matrix(response, wavelengths)
    return np.clip(srgb_to_linear(srgb) @ matrix, 0.0, 1.0).astype(np.float32)


def rgb_consistent_projection(
    cube: np.ndarray | torch.Tensor,
    rgb: np.ndarray | torch.Tensor,
    response: str | np.ndarray | list = DEFAULT_RESPONSE,
    wavelengths: list[float] | tuple[float, ...] | None = None,
    saturation_level: float | None = 254.5 / 255,
) -> np.ndarray | torch.Tensor:
    r"""
    Corrects a cube, pixel by pixel, so that it renders exactly to `rgb` (linear, before quantisation).

    With `A` the `(bands, 3)` rendering matrix, every pixel spectrum `s` is replaced by the closest spectrum (in the
    Euclidean sense) that renders to `rgb`: `s + A (AᵀA)⁻¹ (rgb - Aᵀs)`. The part of `s` that the camera cannot see
    (the null space of `Aᵀ`) is kept; the part it sees is taken from `rgb`. Pixels with a channel at or above
    `saturation_level` are left unchanged, because their true RGB is unknown after clipping.

    Args:
        cube (`np.ndarray` or `torch.Tensor`):
            Channel-last numpy `(..., H, W, bands)` or channel-first torch `(N, bands, H, W)`.
        rgb (`np.ndarray` or `torch.Tensor`):
            Linear RGB in [0, 1] with the same layout and 3 channels (numpy `uint8` is divided by 255).
        response (`str` or `np.ndarray`, *optional*, defaults to `"cie1964_ntire2020"`):
            Anything [`load_response`] accepts.
        wavelengths (`list[float]`, *optional*):
            Band centres of the cube.
        saturation_level (`float`, *optional*, defaults to 254.5/255):
            Pixels with any RGB channel at or above this value are not corrected; `None` corrects every pixel.

    Returns:
        The corrected cube, with the type and layout of `cube`.
    """
    matrix = rendering_matrix(response, wavelengths)
    # Least-norm correction operator: a (3, bands) pseudo-inverse of the rendering.
    pinv = np.linalg.solve(matrix.T @ matrix, matrix.T)
    if isinstance(cube, torch.Tensor):
        return project_tensor(cube, torch.as_tensor(rgb, device=cube.device), matrix, pinv, saturation_level)

    cube = np.asarray(cube)
    rgb = np.asarray(rgb)
    rgb = rgb / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
    if cube.shape[:-1] != rgb.shape[:-1] or rgb.shape[-1] != 3:
        raise ValueError(f"cube {cube.shape} and rgb {rgb.shape} must share their spatial shape.")
    correction = (rgb - cube.astype(np.float64) @ matrix) @ pinv
    if saturation_level is not None:
        correction *= np.all(rgb < saturation_level, axis=-1, keepdims=True)
    return (cube + correction).astype(cube.dtype if np.issubdtype(cube.dtype, np.floating) else np.float32)


def project_tensor(
    cube: torch.Tensor,
    rgb: torch.Tensor,
    matrix: np.ndarray | torch.Tensor,
    pinv: np.ndarray | torch.Tensor,
    saturation_level: float | None = 254.5 / 255,
) -> torch.Tensor:
    """The torch kernel of [`rgb_consistent_projection`] for `[N, bands, H, W]` cubes, with precomputed `(bands, 3)`
    rendering `matrix` and its `(3, bands)` least-norm inverse `pinv`. Computes in float32."""
    matrix = torch.as_tensor(matrix, dtype=torch.float32, device=cube.device)
    pinv = torch.as_tensor(pinv, dtype=torch.float32, device=cube.device)
    batch, bands, height, width = cube.shape
    # One image at a time, as 2-D matmuls over flattened pixels: on CPU several times faster than einsums or bmm, and the
    # correction is added by the matmul itself.
    flat = cube.float().reshape(batch, bands, height * width)
    targets = rgb.float().reshape(batch, 3, height * width)
    projected = []
    for image in range(batch):
        residual = torch.addmm(targets[image], matrix.T, flat[image], alpha=-1)  # [3, P]
        if saturation_level is not None:
            residual = residual * (targets[image] < saturation_level).all(dim=0)
        projected.append(torch.addmm(flat[image], pinv.T, residual))
    projected = projected[0][None] if batch == 1 else torch.stack(projected)
    return projected.reshape(batch, bands, height, width).to(cube.dtype)


def rgb_gamut_mask(
    rgb: np.ndarray,
    response: str | np.ndarray | list = DEFAULT_RESPONSE,
    wavelengths: list[float] | tuple[float, ...] | None = None,
    tolerance: float = 0.0,
) -> np.ndarray:
    r"""
    Which RGB values some spectrum in [0, 1] renders to (within `tolerance` in every channel).

    The renders of all spectra in `[0, 1]^bands` form a zonotope, the sum of the segments `[0, a_k]` spanned by the
    rows `a_k` of the rendering matrix (one per band). Each face of a 3-D zonotope is parallel to two of its
    generators, so the zonotope is exactly the set of points `y` with `n·y <= Σ_k max(0, n·a_k)` for the normals
    `n = ±(a_i × a_j)` of every pair of bands. A tolerance adds the generators of the cube `[-tolerance, tolerance]^3`.
    RGB outside the mask has no [0, 1] spectrum: for the default response, for example, a dark pixel with red but no
    green (`(1, 0, 0) / 255`), because every wavelength the red channel sees is also seen by the green one.

    Args:
        rgb (`np.ndarray`):
            Linear RGB, channel-last `(..., 3)` (`uint8` is divided by 255).
        response, wavelengths:
            As in [`rendering_matrix`].
        tolerance (`float`, *optional*, defaults to 0):
            Per-channel slack: with `1 / 255`, whether a spectrum renders within one 8-bit level of `rgb`.

    Returns:
        `np.ndarray`: boolean array of shape `rgb.shape[:-1]`.
    """
    rgb = np.asarray(rgb)
    rgb = rgb / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
    generators = rendering_matrix(response, wavelengths)  # [bands, 3]
    offset = np.zeros(3)
    if tolerance > 0:
        generators = np.concatenate([generators, 2 * tolerance * np.eye(3)])
        offset = -tolerance * np.ones(3)
    return _in_zonotope(rgb - offset, generators)


def _in_zonotope(points: np.ndarray, generators: np.ndarray, margin: float = 1e-9) -> np.ndarray:
    """Whether `(..., 3)` points lie in the zonotope `Σ_k [0, g_k]` of the `(K, 3)` generators, grown by `margin`
    along every face normal (a negative `margin`: at least that far inside)."""
    from .dual_newton import inside_faces  # here, not at the top: numba takes 0.2 s to import

    first, second = np.triu_indices(len(generators), 1)
    normals = np.cross(generators[first], generators[second])
    lengths = np.linalg.norm(normals, axis=1)
    normals = normals[lengths > 1e-12] / lengths[lengths > 1e-12, None]
    normals = np.concatenate([normals, -normals])  # [F, 3]
    support = np.maximum(normals @ generators.T, 0.0).sum(axis=1)  # [F]
    flat = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    inside = np.empty(len(flat), dtype=bool)
    # The default slack keeps renders of spectra on the boundary (bands at exactly 0 or 1) inside in float64.
    inside_faces(flat, normals, support + margin, inside)
    return inside.reshape(np.shape(points)[:-1])


def bounded_rgb_projection(
    cube: torch.Tensor,
    rgb: torch.Tensor,
    matrix: np.ndarray | torch.Tensor,
    projected: torch.Tensor | None = None,
    iterations: int = 20,
    tolerance: float = 1 / 255,
    saturation_level: float | None = 254.5 / 255,
) -> torch.Tensor:
    r"""
    The closest cube in [0, 1] to `cube` (per pixel, Euclidean) that renders to `rgb`: the [0, 1]-bounded form of
    [`rgb_consistent_projection`], for `[N, bands, H, W]` torch cubes.

    Most pixels are solved by the unbounded projection followed by a clip. For the others, the problem `min |s - s0|²`
    subject to `0 <= s <= 1` and `Aᵀs = y` has the dual solution `s = clip(s0 + Aλ, 0, 1)` with `λ` (3 numbers) the root
    of `Aᵀ clip(s0 + Aλ, 0, 1) = y`, a piecewise-linear monotone equation. It is solved by a semismooth Newton iteration
    with the exact generalised Jacobian `A_fᵀA_f` over the bands `f` strictly inside (0, 1): each step is the closed-form
    solution for the bands clipped at the current `λ`, so the iteration ends as soon as it has found which bands are
    clipped. Started from the unbounded projection (which has the same bounded solution), it needs 1 to 4 steps for
    nearly every pixel, with at most 6 plain steps; the few it leaves (dark, saturated RGB, whose dual optimum is far and
    badly conditioned) are finished with a ridge in proportion to the error and an Armijo line search on the dual
    objective, with at most `3 * iterations` steps. A pixel counts as solved when it renders within 1e-6 of `rgb`. The
    iteration is one compiled loop per pixel (see [`~hsr_diffusers.dual_newton.solve_pixels`]) and runs on the CPU:
    tensors on another device are projected there and moved back.

    Pixels whose RGB is outside the camera's gamut of [0, 1] spectra (see [`rgb_gamut_mask`]) cannot be solved
    exactly: their dual iterates run off to infinity along a direction `n` that separates the RGB from the gamut
    (`n·y > Σ_k max(0, n·a_k)`, checked at every step, which proves the RGB out of gamut). For them the target becomes
    the box `[y - tolerance, y + tolerance]`: three slack "bands" in [0, 1] with generators `2 * tolerance * e_c` turn it
    into the equality target `Aᵀs + 2 * tolerance * slack = y + tolerance`, solved by the same iteration from `cube`
    itself (the slack starts at 0.5, no offset). RGB on the gamut's boundary (within 1e-6), whose dual optimum lies at
    infinity, takes the same route.

    Args:
        cube (`torch.Tensor`):
            `[N, bands, H, W]` cube.
        rgb (`torch.Tensor`):
            `[N, 3, H, W]` linear RGB in [0, 1].
        matrix (`np.ndarray` or `torch.Tensor`):
            `(bands, 3)` rendering matrix (see [`rendering_matrix`]).
        projected (`torch.Tensor`, *optional*):
            A float32 `[N, bands, H, W]` tensor to write the result into, in place (by default a new tensor); what it
            holds before is not read.
        iterations (`int`, *optional*, defaults to 20):
            Most Newton steps per pixel of the line-searched stage (3 times this) and of the box target.
        tolerance (`float`, *optional*, defaults to 1/255):
            Per-channel slack of the target for RGB outside the gamut.
        saturation_level (`float`, *optional*, defaults to 254.5/255):
            Pixels with any channel at or above it are only clipped (their true RGB is unknown); `None` solves all.

    Returns:
        `torch.Tensor`: float32 `[N, bands, H, W]` in [0, 1], on the device of `cube`.
    """
    from .dual_newton import constants, project_image  # here, not at the top: numba takes 0.2 s to import

    device = cube.device
    matrix = torch.as_tensor(matrix, dtype=torch.float64).cpu()
    cube, rgb = cube.detach().cpu(), rgb.detach().cpu()
    pinv = torch.linalg.solve(matrix.T @ matrix, matrix.T)
    # The closed form, unclipped: the bounded problem from it has the same solution as from `cube` (they differ by a
    # vector the camera sees, orthogonal to every change that keeps the render), and it is the Newton iteration's start.
    unbounded = project_tensor(cube, rgb, matrix, pinv, saturation_level).float()  # a new tensor
    batch, bands, height, width = cube.shape
    closed = unbounded.view(batch, bands, height * width)
    targets = rgb.float().reshape(batch, 3, height * width).contiguous()
    originals = cube.reshape(batch, bands, height * width)
    level = np.float32(np.inf if saturation_level is None else saturation_level)
    matrix32, numbers = matrix.float().numpy(), constants(np.float32)
    left, left_status = np.empty(height * width, dtype=np.int64), np.empty(height * width, dtype=np.int8)
    for image in range(batch):
        # In one pass: the clip where it is the answer, the plain float32 Newton steps elsewhere; what they leave (a few
        # pixels per thousand) is listed for the slower stages.
        count = project_image(
            closed[image].numpy(),
            targets[image].numpy(),
            matrix32,
            level,
            min(iterations, _FAST_STEPS),
            numbers,
            left,
            left_status,
        )
        if count:
            _finish_bounded(
                closed[image].numpy(),
                targets[image].numpy(),
                originals[image],
                matrix.numpy(),
                left[:count],
                left_status[:count],
                iterations,
                tolerance,
            )
    if projected is not None:
        return projected.copy_(unbounded)
    return unbounded.to(device)


# Plain Newton steps before the pixels still unsolved (a few per thousand) are sorted by the exact gamut test.
_FAST_STEPS = 6


def _finish_bounded(
    spectra: np.ndarray,
    target: np.ndarray,
    original: torch.Tensor,
    matrix: np.ndarray,
    columns: np.ndarray,
    status: np.ndarray,
    iterations: int,
    tolerance: float,
) -> None:
    """
    Solves the pixels `columns` of one image that the plain steps left, with their `status` (unsolved, or proved out of
    the gamut), in place: `spectra` (float32 `[bands, N]`) holds the unbounded solutions of `Aᵀs = target` (`[3, N]`)
    there and gets the [0, 1] spectra closest to them that render to `target`. Where no [0, 1] spectrum renders to it
    exactly: the [0, 1] spectra closest to `original` (the cube's own columns, `[bands, N]`) that render within
    `tolerance` per channel. See [`bounded_rgb_projection`].
    """
    from .dual_newton import OUTSIDE, SOLVED, SOLVED_ERROR, UNSOLVED

    left = [columns[status == OUTSIDE]]
    unsolved = columns[status == UNSOLVED]
    if len(unsolved):
        # Pixels whose float32 steps stall (dark, saturated RGB, where the dual optimum is large and its system badly
        # conditioned), or out of the gamut without a step that proved it yet, or on its boundary, where the dual
        # optimum lies at infinity: sorted by the exact gamut test, those inside it are finished in float64 with a
        # line search. Far-off dual optima (extreme violets and reds) take up to a few dozen of its steps.
        wanted = target[:, unsolved].T.astype(np.float64)
        inside = _in_zonotope(wanted, matrix, margin=-SOLVED_ERROR)
        slow = unsolved[inside]
        if len(slow):
            solution, slow_status, _ = _solve_pixels(spectra[:, slow].T, wanted[inside], matrix, 3 * iterations, True)
            solved = slow_status == SOLVED
            spectra[:, slow[solved]] = solution[solved].T
            left.append(slow[~solved])
        left.append(unsolved[~inside])
    left = np.sort(np.concatenate(left))
    if len(left):
        # Out of the gamut (or, rarely, on an edge of it that the iteration does not reach): aim at the box of RGB
        # within `tolerance` of the input, which holds the true RGB of an 8-bit input. The box is narrowed by twice the
        # solver's accuracy, so that its float32 solutions render within `tolerance` too.
        tolerance = tolerance - 2 * SOLVED_ERROR
        extended = np.concatenate([matrix, 2 * tolerance * np.eye(3)])
        # From the cube itself: its closed-form projection is no closer to the box than to any other RGB in it.
        start = original.index_select(1, torch.from_numpy(left)).float().T.numpy()
        start = np.concatenate([start, np.full((len(left), 3), 0.5, dtype=np.float32)], axis=1)
        box = target[:, left].T + np.float32(tolerance)
        solution, box_status, _ = _solve_pixels(start, box, extended, iterations, False, len(spectra))
        slow = box_status != SOLVED
        if slow.any():
            solution[slow] = _solve_pixels(start[slow], box[slow], extended, iterations, True, len(spectra))[0]
        spectra[:, left] = solution.T


def _solve_pixels(
    start: np.ndarray,
    target: np.ndarray,
    matrix: np.ndarray,
    iterations: int,
    line_search: bool,
    bands: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """[`~hsr_diffusers.dual_newton.solve_pixels`] for `[P, bands]` starts and `[P, 3]` targets: plain steps in
    float32, line-searched ones in float64. Returns the first `bands` bands of the spectra (float32), each pixel's status
    and its number of steps."""
    from .dual_newton import constants, solve_pixels

    dtype = np.float64 if line_search else np.float32
    start, target = np.ascontiguousarray(start, dtype=dtype), np.ascontiguousarray(target, dtype=dtype)
    out = np.empty((len(start), bands or start.shape[1]), dtype=dtype)
    status, steps = np.empty(len(start), dtype=np.int8), np.empty(len(start), dtype=np.int16)
    solve_pixels(start, target, matrix.astype(dtype), iterations, line_search, constants(dtype), out, status, steps)
    return out.astype(np.float32, copy=False), status, steps
