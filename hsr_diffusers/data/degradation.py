"""RGB made the way a photo is made, for degradation-aware training and for evaluating on photo-like input.

A training patch's cube is rendered through a camera response drawn from the measured cameras the package ships
(Jiang et al. 2013, plus the CIE observer), captured with an exposure, shot and read noise, optionally through a Bayer
mosaic and bilinear demosaicing, mapped to the model's camera space by the camera's best 3x3 correction (the
counterpart of `srgb_to_camera_rgb` at inference), and stored as 8-bit sRGB-encoded values, optionally as a JPEG. A
fraction of patches keeps the clean NTIRE 2020 render. Every draw comes from a `numpy.random.Generator`, so a patch's
degradation is reproducible from its seed.

[`Relighting`] comes before all that for reflectance data (CAVE): it turns a reflectance patch into the radiance of
the same surfaces under an illuminant drawn from colour-science's tables (CIE daylight over a range of correlated
colour temperatures, CIE A, the CIE fluorescent and LED series), so that reflectance scenes train alongside natural
radiance (ICVL) with one meaning for the output: radiance under the scene's light, up to exposure.
"""

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np


__all__ = [
    "HELD_OUT_CAMERAS",
    "RELIGHTING_ILLUMINANTS",
    "Relighting",
    "illuminant_spectrum",
    "PhotoDegradation",
    "PhotoSettings",
    "bayer_demosaic",
    "camera_correction",
    "render_photo",
    "training_cameras",
]

# Cameras never used for training, kept to measure how a model does on cameras it has not seen. The rule was fixed
# before any result: every 7th camera of the Jiang et al. database in its file order, starting with the 7th.
HELD_OUT_CAMERAS = ("canon_5dmarkii", "nikon_d300s", "nokia_n900", "sony_nex_5n")


def training_cameras() -> tuple[str, ...]:
    """The CIE observer of the NTIRE 2020 render and every shipped camera that is not in `HELD_OUT_CAMERAS`."""
    from hsr_diffusers.spectral import DEFAULT_RESPONSE, _camera_key, _camspec_table

    cameras = [_camera_key(name) for name in _camspec_table()]
    return (DEFAULT_RESPONSE, *[name for name in cameras if name not in HELD_OUT_CAMERAS])


def _fit_correction(camera, target, wavelengths: tuple[float, ...]) -> np.ndarray:
    import colour

    from hsr_diffusers.spectral import rendering_matrix

    checker = colour.SDS_COLOURCHECKERS["ColorChecker N Ohta"]
    spectra = np.stack([np.interp(wavelengths, sd.wavelengths, sd.values) for sd in checker.values()])  # [24, bands]
    source = spectra @ rendering_matrix(camera, wavelengths)  # [24, 3]
    reference = spectra @ rendering_matrix(target, wavelengths)  # [24, 3]
    return np.linalg.lstsq(source, reference, rcond=None)[0]


_cached_correction = lru_cache(maxsize=128)(_fit_correction)


def camera_correction(camera: str, target: str | np.ndarray, wavelengths) -> np.ndarray:
    r"""
    The `(3, 3)` matrix `M` that best maps linear RGB of `camera` to linear RGB of `target` (`rgb_target ≈ rgb_camera @
    M`), fitted by least squares on the 24 ColorChecker reflectances, as a photographer's colour calibration would be.
    Both responses are white-balanced for an equal-energy light by their normalisation (each channel sums to 255).

    Args:
        camera (`str`):
            A name accepted by `hsr_diffusers.spectral.load_response`.
        target (`str` or `np.ndarray`):
            The model's response: a name, or a `(bands, 3)` array.
        wavelengths (`list[float]`):
            Band centres of the cubes.
    """
    wavelengths = tuple(float(w) for w in wavelengths)
    if isinstance(target, str):
        return _cached_correction(camera, target, wavelengths).copy()
    return _fit_correction(camera, np.asarray(target), wavelengths)


def bayer_demosaic(rgb: np.ndarray) -> np.ndarray:
    """Samples `(H, W, 3)` linear RGB on an RGGB Bayer mosaic and demosaics it bilinearly."""
    from hsr_diffusers.spectral import bayer_mosaic, bilinear_demosaic

    return bilinear_demosaic(*bayer_mosaic(rgb))


@dataclass(frozen=True)
class PhotoSettings:
    r"""
    One photo's capture settings, as [`render_photo`] applies them.

    Args:
        camera (`str`):
            Response of the capturing camera (a name of `hsr_diffusers.spectral.list_responses`).
        photo_electrons (`float` or `None`):
            Mean photo-electrons of a pixel at the scene's mean green level; shot noise is Poisson in electrons (modelled
            as Gaussian). `None` for no noise.
        read_noise_electrons (`float`):
            Standard deviation of the read noise, in electrons.
        exposure (`float`):
            Exposure relative to one that maps reflectance 1 to full scale: above 1 highlights clip, below 1 the signal
            is amplified afterwards (noise with it). The image is brought back to the nominal level, so the target cube
            does not change.
        mosaic (`bool`):
            Bayer RGGB mosaic and bilinear demosaicing.
        jpeg_quality (`int` or `None`):
            JPEG quality of the sRGB-encoded 8-bit image, or `None` to keep it lossless.
    """

    camera: str
    photo_electrons: float | None = None
    read_noise_electrons: float = 0.0
    exposure: float = 1.0
    mosaic: bool = False
    jpeg_quality: int | None = None


def render_photo(
    cube: np.ndarray, settings: PhotoSettings, target: str | np.ndarray, wavelengths, rng: np.random.Generator
) -> np.ndarray:
    r"""
    Renders a `(H, W, bands)` reflectance cube as a photo taken with `settings`, in the linear RGB space of the
    `target` response (the space the model takes).

    The steps, in capture order: camera RGB (`cube @ response / 256`), exposure, shot and read noise, clipping at full
    scale, the optional mosaic and demosaicing, digital gain back to the nominal level, the camera's 3x3 correction to
    `target` (`camera_correction`), sRGB encoding to 8 bits and the optional JPEG, then decoding back to linear.

    Returns:
        `np.ndarray`: float32 `(H, W, 3)` linear RGB in [0, 1].
    """
    import colour

    from hsr_diffusers.spectral import jpeg_roundtrip, rendering_matrix, srgb_to_linear

    rgb = cube.astype(np.float64) @ rendering_matrix(settings.camera, wavelengths)  # [H, W, 3]
    signal = rgb * settings.exposure
    if settings.photo_electrons is not None:
        # Electrons per unit of signal, so that the mean green level holds `photo_electrons` at this exposure.
        gain = settings.photo_electrons / max(float(signal[..., 1].mean()), 1e-4)
        noise_std = np.sqrt(np.clip(signal, 0.0, None) * gain + settings.read_noise_electrons**2) / gain
        signal = signal + rng.standard_normal(signal.shape) * noise_std
    signal = np.clip(signal, 0.0, 1.0)  # the sensor's full well
    if settings.mosaic:
        signal = bayer_demosaic(signal)
    rgb = signal / settings.exposure @ camera_correction(settings.camera, target, wavelengths)
    encoded = (colour.cctf_encoding(np.clip(rgb, 0.0, 1.0), function="sRGB") * 255 + 0.5).astype(np.uint8)
    if settings.jpeg_quality is not None:
        encoded = jpeg_roundtrip(encoded, settings.jpeg_quality)
    return srgb_to_linear(encoded / 255.0).astype(np.float32)


@dataclass(frozen=True)
class PhotoDegradation:
    r"""
    Draws a random photo degradation per training patch, from ranges that cover phone to DSLR captures.

    Args:
        cameras (`tuple[str, ...]`, *optional*, defaults to [`training_cameras`]`()`):
            Cameras to draw from, uniformly.
        clean_probability (`float`, *optional*, defaults to 0.25):
            Probability of keeping the clean NTIRE 2020 render (8-bit, linear, the target response) for a patch.
        photo_electrons (`tuple[float, float]`, *optional*, defaults to `(500, 20000)`):
            Log-uniform range of the mean photo-electrons at the mean green level.
        read_noise_electrons (`tuple[float, float]`, *optional*, defaults to `(1, 10)`):
            Uniform range of the read noise.
        exposure (`tuple[float, float]`, *optional*, defaults to `(0.6, 1.6)`):
            Log-uniform range of the exposure.
        mosaic_probability (`float`, *optional*, defaults to 0.5):
            Probability of the Bayer mosaic and demosaicing.
        jpeg_probability (`float`, *optional*, defaults to 0.75), jpeg_quality (`tuple[int, int]`, *optional*, defaults to `(60, 95)`):
            Probability of a JPEG, and the uniform range of its quality.
    """

    cameras: tuple[str, ...] = field(default_factory=training_cameras)
    clean_probability: float = 0.25
    photo_electrons: tuple[float, float] = (500.0, 20000.0)
    read_noise_electrons: tuple[float, float] = (1.0, 10.0)
    exposure: tuple[float, float] = (0.6, 1.6)
    mosaic_probability: float = 0.5
    jpeg_probability: float = 0.75
    jpeg_quality: tuple[int, int] = (60, 95)

    def __post_init__(self):
        if not self.cameras:
            raise ValueError("PhotoDegradation needs at least one camera.")
        for name in ("clean_probability", "mosaic_probability", "jpeg_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        for name in ("photo_electrons", "read_noise_electrons", "exposure", "jpeg_quality"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high, got {(low, high)}.")
        if self.photo_electrons[0] <= 0 or self.exposure[0] <= 0:
            raise ValueError("photo_electrons and exposure must be positive.")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality must lie in [1, 100], got {self.jpeg_quality}.")

    def with_updates(self, **changes) -> "PhotoDegradation":
        """A copy with some fields changed (values of `None` keep the current field)."""
        return replace(self, **{key: value for key, value in changes.items() if value is not None})

    def sample(self, rng: np.random.Generator) -> PhotoSettings | None:
        """One patch's settings, or `None` for the clean render."""
        if rng.random() < self.clean_probability:
            return None

        def log_uniform(low: float, high: float) -> float:
            return float(np.exp(rng.uniform(np.log(low), np.log(high))))

        return PhotoSettings(
            camera=self.cameras[int(rng.integers(len(self.cameras)))],
            photo_electrons=log_uniform(*self.photo_electrons),
            read_noise_electrons=float(rng.uniform(*self.read_noise_electrons)),
            exposure=log_uniform(*self.exposure),
            mosaic=bool(rng.random() < self.mosaic_probability),
            jpeg_quality=int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
            if rng.random() < self.jpeg_probability
            else None,
        )

    def __call__(
        self, cube: np.ndarray, target: str | np.ndarray, wavelengths, rng: np.random.Generator
    ) -> np.ndarray:
        """The degraded linear RGB `(H, W, 3)` float32 in [0, 1] of a `(H, W, bands)` cube in `target`'s space."""
        from hsr_diffusers.spectral import render_rgb

        settings = self.sample(rng)
        if settings is None:
            return render_rgb(cube, target, wavelengths=wavelengths) / np.float32(255.0)
        return render_photo(cube, settings, target, wavelengths, rng)


# The named colour-science illuminants that `Relighting` draws from besides CIE daylight: incandescent (A), the CIE
# fluorescent series FL1-FL12 and the CIE LED series (CIE 15:2018).
RELIGHTING_ILLUMINANTS = ("A", *(f"FL{i}" for i in range(1, 13)), "LED-B1", "LED-B2", "LED-B3", "LED-B4", "LED-B5",
                          "LED-BH1", "LED-RGB1", "LED-V1", "LED-V2")  # fmt: skip


def _daylight_cct(name: str) -> float | None:
    """The CCT of a daylight name (`"D6504K"` -> 6504.0), else None."""
    if len(name) > 2 and name[0] == "D" and name[-1] == "K":
        try:
            return float(name[1:-1])
        except ValueError:
            return None
    return None


@lru_cache(maxsize=64)
def _named_illuminant(name: str, wavelengths: tuple[float, ...]) -> np.ndarray:
    import colour

    cct = _daylight_cct(name)
    if cct is not None:
        if not 4000 <= cct <= 25000:
            raise ValueError(f"CIE daylight is defined for 4000-25000 K, got {name!r}.")
        sd = colour.sd_CIE_illuminant_D_series(colour.temperature.CCT_to_xy_CIE_D(cct))
    elif name in colour.SDS_ILLUMINANTS:
        sd = colour.SDS_ILLUMINANTS[name]
    else:
        raise ValueError(
            f"Unknown illuminant {name!r}: give 'D<CCT>K' (CIE daylight, e.g. 'D6504K') or a name of "
            "colour.SDS_ILLUMINANTS such as 'A', 'FL2' or 'LED-B3'."
        )
    wavelengths_array = np.asarray(wavelengths)
    if wavelengths_array.min() < sd.wavelengths.min() or wavelengths_array.max() > sd.wavelengths.max():
        raise ValueError(f"Illuminant {name!r} covers {sd.wavelengths.min():g}-{sd.wavelengths.max():g} nm only.")
    values = np.interp(wavelengths_array, sd.wavelengths, sd.values)
    return values / values.mean()


def illuminant_spectrum(name: str, wavelengths) -> np.ndarray:
    r"""
    The relative spectral power of an illuminant at `wavelengths`, scaled to a mean of 1 over the bands (so that
    relighting keeps the overall level of the reflectance; the absolute level is the exposure's business).

    Args:
        name (`str`):
            `"D<CCT>K"` for CIE daylight at that correlated colour temperature (4000-25000 K, e.g. `"D6504K"`), or a
            name of `colour.SDS_ILLUMINANTS` (`"A"`, `"FL1"` ... `"FL12"`, `"LED-B1"` ...).
        wavelengths (`list[float]`):
            Band centres in nm (linear interpolation of the 5 nm tables).

    Returns:
        `np.ndarray`: float64 `(bands,)`.
    """
    return _named_illuminant(name, tuple(float(w) for w in wavelengths)).copy()


@dataclass(frozen=True)
class Relighting:
    r"""
    Draws an illuminant per training patch and renders reflectance as the radiance it reflects under that light.

    With probability `daylight_probability` the light is CIE daylight at a CCT drawn uniformly in `cct_range` (the
    natural light of outdoor scenes); otherwise one of `illuminants`, uniformly. The radiance is `reflectance *
    illuminant_spectrum(name)` band by band, without white balance: the RGB is rendered from it exactly as from
    measured radiance (ICVL), so the light's colour cast is in the input and its spectrum in the target.

    Args:
        daylight_probability (`float`, *optional*, defaults to 0.5):
            Probability of CIE daylight.
        cct_range (`tuple[float, float]`, *optional*, defaults to `(4000, 10000)`):
            Uniform range of the daylight CCT in kelvin (CIE daylight is defined from 4000 K).
        illuminants (`tuple[str, ...]`, *optional*, defaults to [`RELIGHTING_ILLUMINANTS`]):
            The other lights, names of `colour.SDS_ILLUMINANTS`.
    """

    daylight_probability: float = 0.5
    cct_range: tuple[float, float] = (4000.0, 10000.0)
    illuminants: tuple[str, ...] = RELIGHTING_ILLUMINANTS

    def __post_init__(self):
        if not 0.0 <= self.daylight_probability <= 1.0:
            raise ValueError(f"daylight_probability must be in [0, 1], got {self.daylight_probability}.")
        low, high = self.cct_range
        if not 4000 <= low <= high <= 25000:
            raise ValueError(f"cct_range must lie in 4000-25000 K with low <= high, got {self.cct_range}.")
        if self.daylight_probability < 1.0 and not self.illuminants:
            raise ValueError("Relighting needs illuminants unless daylight_probability is 1.")

    def sample(self, rng: np.random.Generator) -> str:
        """One patch's illuminant name (`"D<CCT>K"` for daylight, CCT rounded to 1 K)."""
        if rng.random() < self.daylight_probability:
            return f"D{round(float(rng.uniform(*self.cct_range)))}K"
        return self.illuminants[int(rng.integers(len(self.illuminants)))]

    def __call__(self, cube: np.ndarray, wavelengths, rng: np.random.Generator) -> np.ndarray:
        """The radiance `(H, W, bands)` float32 of a reflectance cube under an illuminant drawn from `rng`."""
        spectrum = illuminant_spectrum(self.sample(rng), wavelengths).astype(np.float32)
        return cube * spectrum  # [H, W, bands] * [bands]
