"""Gradio demo of hsr-diffusers: turn an RGB photo into a 31-band hyperspectral cube, look at its bands, spectra and
uncertainty, and download it.

The file keeps three things apart:

- `load_pipelines()` loads the bundled models once;
- `predict(...)`, `spectrum_at(...)`, `band_image(...)` and `export_cube(...)` are plain functions of their inputs;
- `build_demo(pipelines)` wires them into a `gr.Blocks`. `launch()` runs only under `__main__`, so tests can import
  this file and launch the Blocks themselves.

Photos are sRGB-encoded and white-balanced, while the models take linear RGB in the camera space of their training
response (`pipe.config.response`). The pipeline converts them (`input_space="srgb"`: the sRGB transfer function is
removed and a 3x3 matrix fitted on the 24 ColorChecker reflectances maps linear sRGB to the camera space), unless the
input is marked as already linear camera RGB (an NTIRE "clean" PNG, for instance). An unconverted photo is what turns
the red coffee saucer of `examples/coffee.png` crimson in the preview (sRGB values read as linear camera RGB: mean
colour difference to the upload 44 levels); converted, the preview stays within about 1.5 levels of it on average.
"""

import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from hsr_diffusers import HSRPipeline
from hsr_diffusers.data import PhotoError, read_photo, save_cube
from hsr_diffusers.data.io import SAVE_SUFFIXES, cube_file_paths
from hsr_diffusers.spectral import srgb_to_camera_matrix


# Bundled models, loaded offline by name (`hsr_diffusers.list_pretrained()`).
MODELS = ("hsr-diffusers/ddpm-cave", "hsr-diffusers/pixelgan-cave")

# Limits. Uploads above MAX_FILE_SIZE are refused by Gradio itself (browser, HTTP 413 and client). Images above
# MAX_MEGAPIXELS are downscaled to fit (or refused when downscaling is off); above MAX_UPLOAD_MEGAPIXELS they are
# refused before decoding. Images wider or taller than TILE_SIZE run in overlapping tiles, so memory depends on the
# tile, not the image.
MAX_FILE_SIZE = "20mb"
MAX_MEGAPIXELS = 1.0
MAX_UPLOAD_MEGAPIXELS = 50.0
TILE_SIZE = 256
TILE_OVERLAP = 32
MAX_STEPS = 100
MAX_SAMPLES = 8
MAX_POINTS = 8
CONCURRENCY_LIMIT = 1
QUEUE_SIZE = 20
STATE_TTL_S = 3600
EXPORT_TTL_S = 900
# The difference image is white at this absolute error in linear RGB (5 % of full scale).
DIFF_FULL_SCALE = 0.05
IMAGE_HEIGHT = 360
VIEW_HEIGHT = 280


def _export_label(format: str) -> str:
    """The download choice of a format: its suffix, or `"ENVI (.zip)"` for a format whose cube is several files."""
    several = len(cube_file_paths(f"cube{SAVE_SUFFIXES[format]}", format, wavelengths=False)) > 1
    return f"{format.upper()} (.zip)" if several else SAVE_SUFFIXES[format]


# Download choices (label -> format name), one per format that `hsr_diffusers.data.save_cube` writes.
EXPORT_FORMATS = {_export_label(format): format for format in SAVE_SUFFIXES}
EXPORT_ROOT = Path(tempfile.gettempdir()) / "hsr-demo-exports"
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


# ----------------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------------


def load_pipelines(names: tuple[str, ...] = MODELS, device: str | None = None) -> dict:
    """
    Loads each named pipeline once with `HSRPipeline.from_pretrained`. A model that cannot be loaded (not bundled yet,
    broken files) maps to a message string instead, which the UI shows; the other models stay usable.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipelines = {}
    for name in names:
        try:
            pipelines[name] = HSRPipeline.from_pretrained(name).to(device)
        except Exception as error:  # any failure must leave the demo running with the other models
            reason = (str(error).strip().splitlines() or [""])[0][:300]
            pipelines[name] = f"The model {name} could not be loaded ({type(error).__name__}: {reason})"
    return pipelines


def find_examples() -> list[str]:
    """Example photos from `examples/` next to this file, or else from `examples/` at the repository root."""
    here = Path(__file__).resolve().parent
    for folder in (here / "examples", here.parent.parent / "examples"):
        if folder.is_dir():
            files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES)
            if files:
                return files
    return []


# ----------------------------------------------------------------------------------------------------------------------
# Reconstruction
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Reconstruction:
    """One run of `predict`: everything the UI shows, and what spectrum clicks and downloads read without recomputing."""

    cube: np.ndarray  # (H, W, bands) float32, reflectance
    uncertainty: np.ndarray | None  # (H, W, bands) std over samples, or None
    wavelengths: list[float]
    camera_rgb: np.ndarray  # (H, W, 3) float32 linear camera RGB given to the model
    rerendered: np.ndarray  # (H, W, 3) float32 linear camera RGB of the cube
    preview: np.ndarray  # (H, W, 3) uint8 sRGB preview of the cube under D65
    rerendered_srgb: np.ndarray  # (H, W, 3) uint8, the re-rendered RGB in the input's encoding
    white: float  # reflectance shown as white in band images: the cube's 99.5th percentile, the same for every band
    model_name: str
    name: str  # stem of the download files
    summary: str


def linear_to_srgb(rgb: np.ndarray) -> np.ndarray:
    """Applies the sRGB transfer function (IEC 61966-2-1) to linear values, clipped to [0, 1] first."""
    rgb = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    return np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * rgb ** (1 / 2.4) - 0.055)


def linear_to_srgb8(rgb: np.ndarray) -> np.ndarray:
    """`linear_to_srgb` quantised to uint8."""
    return (linear_to_srgb(rgb) * 255 + 0.5).astype(np.uint8)


def _read_image(image, max_megapixels: float, downscale: bool) -> tuple[np.ndarray, str, str]:
    """
    Reads and size-checks the input: a file or PIL image through `hsr_diffusers.data.read_photo` (orientation, 16 bits,
    the error messages), an array as it is. Returns the `(H, W, 3)` array, a name for downloads and a note for the
    summary.
    """
    name, note = "image", ""
    if image is None:
        raise gr.Error("No image: upload a photo or pick an example first.")
    if isinstance(image, (str, Path, PIL.Image.Image)):
        shown = "The image"
        if not isinstance(image, PIL.Image.Image):
            path = Path(image)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:60] or "image"
            shown = f"'{path.name}'"
        try:
            image = read_photo(image, max_megapixels=MAX_UPLOAD_MEGAPIXELS)  # larger ones are refused undecoded
        except PhotoError as error:
            raise gr.Error(f"{shown}: {error}") from error
    height, width = np.shape(image)[:2]
    megapixels = width * height / 1e6
    if megapixels > MAX_UPLOAD_MEGAPIXELS or (megapixels > max_megapixels and not downscale):
        limit = max_megapixels if megapixels <= MAX_UPLOAD_MEGAPIXELS else MAX_UPLOAD_MEGAPIXELS
        raise gr.Error(
            f"The image is {width}×{height} ({megapixels:.1f} MP); this demo accepts up to {limit:g} MP"
            f"{'' if limit == MAX_UPLOAD_MEGAPIXELS else ' without downscaling'}. Resize it and try again."
        )
    if megapixels > max_megapixels:
        scale = (max_megapixels / megapixels) ** 0.5
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        image = _downscale(np.asarray(image), size)
        note = f"Downscaled from {width}×{height} to {size[0]}×{size[1]} to fit {max_megapixels:g} MP. "
    return image, name, note


def _downscale(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos downscaling to `size` (width, height) that keeps the dtype: 8-bit RGB directly, 16-bit and float
    photos channel by channel in 32-bit float (Pillow has no 16-bit RGB mode)."""
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3:
        return np.asarray(PIL.Image.fromarray(image).resize(size, PIL.Image.Resampling.LANCZOS))
    channels = [
        np.asarray(PIL.Image.fromarray(image[..., c].astype(np.float32)).resize(size, PIL.Image.Resampling.LANCZOS))
        for c in range(image.shape[-1])
    ]
    resized = np.stack(channels, axis=-1)
    if image.dtype.kind == "u":
        return np.clip(resized.round(), 0, np.iinfo(image.dtype).max).astype(image.dtype)
    return np.clip(resized, 0.0, 1.0).astype(image.dtype)


def _is_sampler(pipe) -> bool:
    """Whether `pipe` is a loaded pipeline that samples (not a load failure's message, not a feed-forward model)."""
    return not isinstance(pipe, str) and pipe is not None and pipe.is_sampler


def _default_steps(pipe) -> int:
    """The sampling steps a pipeline that samples was configured to use by default (10 for anything else)."""
    return int(pipe.config.default_num_inference_steps) if _is_sampler(pipe) else 10


def predict(
    image,
    model_name: str,
    steps: int | None = None,
    samples: int | None = 1,
    seed: int | None = 0,
    input_is_linear: bool = False,
    rgb_consistency: bool = True,
    downscale: bool = True,
    *,
    pipelines: dict,
    max_megapixels: float = MAX_MEGAPIXELS,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
) -> Reconstruction:
    r"""
    Reconstructs the cube of one photo. Raises `gr.Error` with a readable message for anything the user can fix.

    Args:
        image (`str`, `Path`, `PIL.Image.Image` or `np.ndarray`):
            A file path (what the upload gives), a PIL image or an `(H, W, 3)` array. sRGB-encoded unless
            `input_is_linear`.
        model_name (`str`):
            A key of `pipelines`.
        steps (`int`, *optional*), samples (`int`, *optional*, defaults to 1), seed (`int`, *optional*, defaults to 0):
            Sampling steps (defaults to the model's `default_num_inference_steps`), number of samples (their mean is
            the cube, their standard deviation the uncertainty) and seed of the diffusion model; ignored by the
            PixelGAN. `None`, what an emptied number box gives, means the default.
        input_is_linear (`bool`, *optional*, defaults to `False`):
            The image is already linear RGB in the model's camera space (skip sRGB decoding and colour conversion).
        rgb_consistency (`bool`, *optional*, defaults to `True`):
            Passed to the pipeline: the cube renders back to the input RGB.
        downscale (`bool`, *optional*, defaults to `True`):
            Downscale images above `max_megapixels` instead of refusing them.
        pipelines (`dict`):
            Names to pipelines, or to a message string for a model that failed to load.
        max_megapixels (`float`, *optional*, defaults to `MAX_MEGAPIXELS`):
            Size limit (see `downscale`).
        tile_size (`int`, *optional*), tile_overlap (`int`, *optional*):
            Tiling of images wider or taller than `tile_size`. Default to the model's own `default_tile_size` and
            `default_tile_overlap` (its attention cost grows with the tile), or to `TILE_SIZE` and `TILE_OVERLAP` for a
            model without them.

    Returns:
        [`Reconstruction`]
    """
    start = time.perf_counter()
    # 1. Pick the model and check the settings
    pipe = pipelines.get(model_name)
    if pipe is None:
        raise gr.Error(f"Unknown model {model_name!r}; choose one of {', '.join(pipelines)}.")
    if isinstance(pipe, str):
        raise gr.Error(pipe)
    is_diffusion = pipe.is_sampler
    # An emptied number box gives None: fall back to the defaults. The event runs without Gradio's preprocessing (see
    # `build_demo`), so the sliders' bounds are checked here.
    steps = _default_steps(pipe) if steps is None else int(steps)
    samples = 1 if samples is None else int(samples)
    seed = 0 if seed is None else int(seed)
    if is_diffusion and not (1 <= steps <= MAX_STEPS and 1 <= samples <= MAX_SAMPLES):
        raise gr.Error(f"Use 1 to {MAX_STEPS} steps and 1 to {MAX_SAMPLES} samples, got {steps} and {samples}.")
    if is_diffusion and not 0 <= seed < 2**32:
        raise gr.Error(f"Use a seed from 0 to {2**32 - 1}, got {seed}.")

    # 2. Read, size-check and validate the image, and convert it as the pipeline does (an sRGB photo to the model's
    #    linear camera RGB, unless it is marked linear): [1, 3, H, W] in [0, 1]. The camera RGB is kept for the
    #    re-rendering error.
    image, name, note = _read_image(image, max_megapixels, downscale)
    input_space = "linear" if input_is_linear else "srgb"
    try:
        rgb = pipe.image_processor.preprocess(image, input_space=input_space)
    except ValueError as error:
        raise gr.Error(str(error).replace("Image 0", "The image")) from error
    camera_rgb = rgb[0].permute(1, 2, 0).numpy()  # [H, W, 3] float32
    height, width = camera_rgb.shape[:2]
    wavelengths = list(pipe.config.wavelengths)

    # 3. Run the pipeline (tiled when the image is larger than a tile)
    own_tile_size = pipe.config.get("default_tile_size")
    if tile_size is None:
        tile_size = own_tile_size or TILE_SIZE
    if tile_overlap is None:
        tile_overlap = pipe.config.get("default_tile_overlap", TILE_OVERLAP) if own_tile_size else TILE_OVERLAP
    tiled = max(height, width) > tile_size
    kwargs = {"tile_size": tile_size, "tile_overlap": tile_overlap}
    if is_diffusion:  # only a pipeline that samples takes sampling arguments
        kwargs.update(num_inference_steps=steps, num_samples=samples, generator=torch.Generator().manual_seed(seed))
    output = pipe(rgb, input_space="linear", rgb_consistency=rgb_consistency, output_type="np", **kwargs)
    cube = output.cubes[0]  # [H, W, bands]
    uncertainty = None if output.uncertainty is None else output.uncertainty[0]

    # 4. Previews: the cube seen by the eye (D65), and re-rendered through the camera response then shown in the
    # input's encoding (back to sRGB for a photo, linear for a linear input) so that it compares with the input as shown
    cube_t = torch.from_numpy(cube).permute(2, 0, 1)[None]  # [1, bands, H, W]
    rerendered = pipe.image_processor.render(cube_t)[0].permute(1, 2, 0).numpy()  # [H, W, 3]
    preview = pipe.image_processor.cube_to_rgb(cube[None])[0]
    if input_is_linear:
        rerendered_srgb = (np.clip(rerendered, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    else:
        matrix = srgb_to_camera_matrix(pipe.config.response, wavelengths)
        rerendered_srgb = linear_to_srgb8(rerendered @ np.linalg.inv(matrix))

    error = np.abs(rerendered - camera_rgb)
    method = f"DDPM, {steps} steps, {samples} sample(s), seed {seed}" if is_diffusion else "PixelGAN"
    summary = (
        f"{note}Reconstructed {len(wavelengths)} bands ({wavelengths[0]:g}–{wavelengths[-1]:g} nm) of a "
        f"{width}×{height} image with `{model_name}` ({method}) in {time.perf_counter() - start:.1f} s"
        f"{' (tiled)' if tiled else ''}. RGB re-rendering error: mean {error.mean() * 255:.2f}, "
        f"max {error.max() * 255:.2f} (8-bit levels)."
    )
    return Reconstruction(
        cube=cube,
        uncertainty=uncertainty,
        wavelengths=wavelengths,
        camera_rgb=camera_rgb,
        rerendered=rerendered,
        preview=preview,
        rerendered_srgb=rerendered_srgb,
        white=max(float(np.percentile(cube, 99.5)), 1e-6),
        model_name=model_name,
        name=f"{name}_{model_name.split('/')[-1]}",
        summary=summary,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Views of a reconstruction
# ----------------------------------------------------------------------------------------------------------------------


def band_image(result: Reconstruction, band: int) -> tuple[np.ndarray, str]:
    """One band as a grey uint8 image (white at `result.white`, the same for every band) and its label."""
    band = int(np.clip(band, 0, result.cube.shape[-1] - 1))
    grey = (np.clip(result.cube[..., band] / result.white, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return grey, f"Band {band + 1} of {result.cube.shape[-1]}: {result.wavelengths[band]:g} nm"


def difference_image(result: Reconstruction) -> np.ndarray:
    """`|input - re-rendered|` (largest channel) in linear camera RGB as a heat map, white at `DIFF_FULL_SCALE`."""
    error = np.abs(result.rerendered - result.camera_rgb).max(axis=-1) / DIFF_FULL_SCALE
    return (colormaps["inferno"](np.clip(error, 0.0, 1.0))[..., :3] * 255 + 0.5).astype(np.uint8)


def uncertainty_image(result: Reconstruction) -> np.ndarray | None:
    """Standard deviation over samples, averaged over bands, as a heat map scaled to its maximum (None without it)."""
    if result.uncertainty is None:
        return None
    sigma = result.uncertainty.mean(axis=-1)
    sigma = sigma / max(float(sigma.max()), 1e-8)
    return (colormaps["magma"](sigma)[..., :3] * 255 + 0.5).astype(np.uint8)


def spectrum_figure(result: Reconstruction, points: list) -> Figure:
    """Spectra of the `points` `[(x, y), ...]` on one plot, with a ±σ band when the run has an uncertainty."""
    figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    colors = colormaps["tab10"].colors
    for index, (x, y) in enumerate(points):
        color = colors[index % len(colors)]
        mean = result.cube[y, x]
        axes.plot(result.wavelengths, mean, color=color, marker=".", label=f"({x}, {y})")
        if result.uncertainty is not None:
            sigma = result.uncertainty[y, x]
            axes.fill_between(result.wavelengths, mean - sigma, mean + sigma, color=color, alpha=0.2, linewidth=0)
    axes.set(xlabel="Wavelength (nm)", ylabel="Reflectance")
    axes.set_ylim(bottom=0.0)
    axes.grid(alpha=0.3)
    if points:
        title = "pixel (x, y): mean ± σ" if result.uncertainty is not None else "pixel (x, y)"
        # Beside the axes: Gradio draws the plot's label over its top-left corner.
        axes.legend(title=title, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def spectrum_at(x, y, result: Reconstruction | None, points: list | None = None) -> tuple[Figure, dict, list]:
    """
    The spectrum of pixel (`x`, `y`) of the last run, added to the plot of the previously clicked pixels.

    Returns the figure, the values as `{"x", "y", "wavelengths", "reflectance", "std"}` (`std` is None without samples)
    and the updated list of points (the last `MAX_POINTS`).
    """
    if result is None:
        raise gr.Error("Run a reconstruction first, then click a pixel of the result.")
    if x is None or y is None:
        raise gr.Error("Give both pixel coordinates x and y.")
    height, width = result.cube.shape[:2]
    x, y = int(round(float(x))), int(round(float(y)))
    if not (0 <= x < width and 0 <= y < height):
        raise gr.Error(f"Pixel ({x}, {y}) is outside the {width}×{height} image.")
    points = [p for p in (points or []) if tuple(p) != (x, y)] + [(x, y)]
    points = points[-MAX_POINTS:]
    values = {
        "x": x,
        "y": y,
        "wavelengths": list(result.wavelengths),
        "reflectance": result.cube[y, x].astype(float).tolist(),
        "std": None if result.uncertainty is None else result.uncertainty[y, x].astype(float).tolist(),
    }
    return spectrum_figure(result, points), values, points


def export_cube(result: Reconstruction, format: str, folder: str | Path) -> list[Path]:
    """
    Writes the cube with its wavelengths through `hsr_diffusers.data.save_cube`. `format` is a key or value of
    `EXPORT_FORMATS`. Returns the files of the cube (`.npy` gives the cube and its `<name>.wavelengths.npy`), or one zip
    of them for a format whose cube needs several files (ENVI: `.hdr` + `.img`).
    """
    format = EXPORT_FORMATS.get(format, format)
    if format not in SAVE_SUFFIXES:
        raise gr.Error(f"Unknown format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    folder = Path(folder)
    if not _export_label(format).endswith("(.zip)"):
        path = save_cube(
            folder / f"{result.name}{SAVE_SUFFIXES[format]}", result.cube, result.wavelengths, format=format
        )
        return cube_file_paths(path, format)
    path = save_cube(
        folder / format / f"{result.name}{SAVE_SUFFIXES[format]}", result.cube, result.wavelengths, format=format
    )
    archive = folder / f"{result.name}_{format}.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for file in cube_file_paths(path, format):
            bundle.write(file, arcname=file.name)
    return [archive]


def _new_export_dir() -> Path:
    """A fresh folder for one download; folders older than `EXPORT_TTL_S` (long copied by Gradio) are removed."""
    EXPORT_ROOT.mkdir(parents=True, exist_ok=True)
    for old in EXPORT_ROOT.iterdir():
        try:
            expired = time.time() - old.stat().st_mtime > EXPORT_TTL_S
        except FileNotFoundError:  # removed meanwhile by another session's download
            continue
        if expired:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=EXPORT_ROOT))


# ----------------------------------------------------------------------------------------------------------------------
# UI
# ----------------------------------------------------------------------------------------------------------------------


INTRO = """
# hsr-diffusers: RGB → 31-band hyperspectral cube

Upload a photo (or pick an example) and reconstruct its spectrum at every pixel, 400–700 nm in 31 bands.
The **DDPM** samples several plausible cubes: their mean is shown and their spread is the uncertainty.
The **PixelGAN** gives one cube in a single pass. Click a pixel of the result to plot its spectrum (click several to
compare), move the band slider to see one wavelength, and download the cube.
The cube renders back to the photo's colours, in 0-1 at the photo's exposure. Both models learned from laboratory
and daylight scenes: on laboratory-like scenes the cube is **reflectance**-like (relative to a white surface under the
photo's light), on daylight scenes relative **radiance** (the light the camera saw). Neither is calibrated radiance.
"""


def _model_label(name: str, pipe) -> str:
    if isinstance(pipe, str):
        return f"{name} (unavailable)"
    return f"{'DDPM' if pipe.is_sampler else 'PixelGAN'} · {name}"


def build_demo(pipelines: dict, examples: list[str] | None = None) -> gr.Blocks:
    """
    The demo's `gr.Blocks` around `predict`, `spectrum_at`, `band_image` and `export_cube`, queued with a concurrency
    limit. `pipelines` maps names to loaded pipelines, or to a message for a model that failed to load (see
    `load_pipelines`). `examples` defaults to `find_examples()`.
    """
    available = [name for name, pipe in pipelines.items() if not isinstance(pipe, str)]
    missing = [message for message in pipelines.values() if isinstance(message, str)]
    examples = find_examples() if examples is None else examples

    def run(
        image,
        model_name,
        steps,
        samples,
        seed,
        input_is_linear,
        rgb_consistency,
        downscale,
        progress=gr.Progress(track_tqdm=True),
    ):
        progress(0, desc="Reconstructing")
        # The event runs with `preprocess=False`, so `image` is the upload's file data, not an opened image: gr.Image
        # would open the file in preprocessing and answer a bare "Error" for a corrupt one, while `predict` reads it
        # with a message that says what is wrong. Gradio has still checked that the path is one of its uploads.
        if isinstance(image, dict):
            image = image.get("path")
        result = predict(
            image,
            model_name,
            steps,
            samples,
            seed,
            input_is_linear,
            rgb_consistency,
            downscale,
            pipelines=pipelines,
        )
        bands = result.cube.shape[-1]
        start_band = int(np.argmin(np.abs(np.asarray(result.wavelengths) - 550.0)))
        grey, label = band_image(result, start_band)
        return (
            result,
            [],
            result.preview,
            result.summary,
            gr.Slider(minimum=0, maximum=bands - 1, value=start_band, step=1),
            gr.Image(value=grey, label=label),
            None,
            result.rerendered_srgb,
            difference_image(result),
            uncertainty_image(result),
            None,
        )

    def show_band(result, band):
        if result is None:
            raise gr.Error("Run a reconstruction first.")
        grey, label = band_image(result, band)
        return gr.Image(value=grey, label=label)

    def on_select(result, points, evt: gr.SelectData):
        x, y = evt.index[:2]
        return (x, y, *spectrum_at(x, y, result, points))

    def download(result, format):
        if result is None:
            raise gr.Error("Run a reconstruction first.")
        return [str(path) for path in export_cube(result, format, _new_export_dir())]

    def on_model_change(model_name):
        pipe = pipelines.get(model_name)
        is_diffusion = _is_sampler(pipe)
        return (
            gr.Slider(interactive=is_diffusion, value=_default_steps(pipe)),
            gr.Slider(interactive=is_diffusion),
            gr.Number(interactive=is_diffusion),
        )

    with gr.Blocks(title="hsr-diffusers: RGB to hyperspectral", delete_cache=(1800, 3600)) as demo:
        result_state = gr.State(None, time_to_live=STATE_TTL_S)
        points_state = gr.State([], time_to_live=STATE_TTL_S)
        gr.Markdown(INTRO)
        if missing:
            gr.Markdown("\n".join(f"> ⚠️ {message}" for message in missing), elem_id="missing-models")

        with gr.Row(equal_height=False):
            with gr.Column():
                photo = gr.Image(
                    label="Input photo (sRGB)",
                    type="filepath",  # what the API documents; `run` gets the upload unprocessed
                    sources=["upload", "clipboard"],
                    height=IMAGE_HEIGHT,
                    elem_id="input-image",
                )
                if examples:
                    gr.Examples(examples, inputs=photo, label="Examples")
                model = gr.Dropdown(
                    choices=[(_model_label(name, pipe), name) for name, pipe in pipelines.items()],
                    value=available[0] if available else None,
                    label="Model",
                    elem_id="model",
                )
                first_is_diffusion = bool(available) and _is_sampler(pipelines[available[0]])
                with gr.Row():
                    steps = gr.Slider(
                        1,
                        MAX_STEPS,
                        value=_default_steps(pipelines[available[0]]) if available else 10,
                        step=1,
                        label="Sampling steps (DDPM)",
                        interactive=first_is_diffusion,
                        elem_id="steps",
                    )
                    samples = gr.Slider(
                        1,
                        MAX_SAMPLES,
                        value=4,
                        step=1,
                        label="Samples (DDPM: mean ± σ)",
                        interactive=first_is_diffusion,
                        elem_id="samples",
                    )
                    seed = gr.Number(0, precision=0, label="Seed (DDPM)", interactive=first_is_diffusion)
                with gr.Accordion("Advanced", open=False):
                    input_is_linear = gr.Checkbox(
                        False,
                        label="Input is already linear camera RGB (e.g. an NTIRE 'clean' PNG): skip sRGB decoding",
                    )
                    rgb_consistency = gr.Checkbox(True, label="RGB consistency: the cube renders back to the input")
                    downscale = gr.Checkbox(
                        True, label=f"Downscale images larger than {MAX_MEGAPIXELS:g} MP (else they are refused)"
                    )
                run_button = gr.Button("Reconstruct", variant="primary", elem_id="run-button")
            with gr.Column():
                preview = gr.Image(
                    label="Cube preview (sRGB under D65)",
                    interactive=False,
                    format="png",
                    height=IMAGE_HEIGHT,
                    elem_id="preview",
                )
                status = gr.Markdown(label="Summary", elem_id="status")

        with gr.Row(equal_height=False):
            with gr.Column():
                band = gr.Slider(0, 30, value=15, step=1, label="Band index", elem_id="band-slider")
                band_view = gr.Image(
                    label="Band image", interactive=False, format="png", height=VIEW_HEIGHT, elem_id="band-image"
                )
            with gr.Column():
                plot = gr.Plot(label="Spectra of clicked pixels", elem_id="spectrum-plot")
                with gr.Row():
                    x = gr.Number(label="x", precision=0, minimum=0, elem_id="pixel-x")
                    y = gr.Number(label="y", precision=0, minimum=0, elem_id="pixel-y")
                    show_button = gr.Button("Plot spectrum at (x, y)")
                    clear_button = gr.Button("Clear plot")
                with gr.Accordion("Values of the last spectrum", open=False):
                    spectrum_json = gr.JSON(label="Spectrum values")

        with gr.Row():
            rerendered = gr.Image(
                label="Cube re-rendered to RGB",
                interactive=False,
                format="png",
                height=VIEW_HEIGHT,
                elem_id="rerendered",
            )
            difference = gr.Image(
                label="Re-rendering error",
                interactive=False,
                format="png",
                height=VIEW_HEIGHT,
                elem_id="difference",
            )
            uncertainty = gr.Image(
                label="Uncertainty",
                interactive=False,
                format="png",
                height=VIEW_HEIGHT,
                elem_id="uncertainty",
            )
        gr.Markdown(
            "**Cube re-rendered to RGB**: the cube through the camera response, shown in the input's encoding (sRGB "
            "for a photo). **Re-rendering error**: \\|input − re-rendered\\| in linear camera RGB, largest channel, "
            f"white at {DIFF_FULL_SCALE:.0%} of full scale. **Uncertainty**: σ over the DDPM's samples (2 or more), "
            "mean over bands, white at its maximum."
        )

        with gr.Row():
            export_format = gr.Radio(list(EXPORT_FORMATS), value=".h5", label="Cube file format")
            download_button = gr.Button("Prepare download", elem_id="download-button")
        files = gr.File(label="Cube files", file_count="multiple", interactive=False, elem_id="files")

        run_button.click(
            run,
            inputs=[photo, model, steps, samples, seed, input_is_linear, rgb_consistency, downscale],
            outputs=[
                result_state,
                points_state,
                preview,
                status,
                band,
                band_view,
                plot,
                rerendered,
                difference,
                uncertainty,
                files,
            ],
            api_name="predict",
            preprocess=False,
            concurrency_limit=CONCURRENCY_LIMIT,
            concurrency_id="reconstruct",
        )
        for image in (preview, band_view):
            image.select(
                on_select,
                inputs=[result_state, points_state],
                outputs=[x, y, plot, spectrum_json, points_state],
                api_visibility="private",
            )
        show_button.click(
            spectrum_at,
            inputs=[x, y, result_state, points_state],
            outputs=[plot, spectrum_json, points_state],
            api_name="spectrum_at",
        )
        clear_button.click(lambda: (None, []), outputs=[plot, points_state], api_visibility="private")
        band.input(
            show_band, inputs=[result_state, band], outputs=band_view, api_name="band", trigger_mode="always_last"
        )
        download_button.click(download, inputs=[result_state, export_format], outputs=files, api_name="download")
        model.change(on_model_change, inputs=model, outputs=[steps, samples, seed], api_visibility="private")

    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=4)
    return demo


if __name__ == "__main__":
    build_demo(load_pipelines()).launch(max_file_size=MAX_FILE_SIZE)
