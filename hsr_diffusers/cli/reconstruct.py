"""`hsr reconstruct`: hyperspectral cubes from RGB photos with a pretrained HSR pipeline.

    hsr reconstruct examples/coffee.png
    hsr reconstruct photos/ -o cubes --format envi --samples 4 --seed 1
    hsr reconstruct scan.tif --model path/to/saved_pipeline --tile-size 256 --device cuda
    accelerate launch -m hsr_diffusers.cli reconstruct photos/ -o cubes      # one process per GPU

INPUT is any number of PNG, JPEG, TIFF or WebP files (8 or 16 bit, RGB or opaque RGBA) and folders (their images,
sorted, not recursive), read with `hsr_diffusers.data.read_photo`. For each image NAME.ext, OUT (default ./hsr_outputs)
receives:

    NAME.h5              the (H, W, bands) spectral cube and its wavelengths in nm (--format picks
                         .h5, .npy + .wavelengths.npy, .npz, .mat, ENVI .hdr + .img or a band-last .tif)
    NAME_std.h5          the pipeline's per-pixel uncertainty: the standard deviation over the samples, times
                         the model's calibration when it has one (only with --samples > 1)
    NAME_preview.png     the cube rendered to sRGB under D65
    NAME_bands.png       every band in its own colour, labelled with its wavelength
    NAME_spectra.png     mean spectra of the whole image and of a few spectrally similar regions
                         (with the +-1 sigma band of the samples when --samples > 1)

The default format, h5, is one self-describing file (`cube`, and `wavelengths` with units) that Python, MATLAB
(`h5read`) and most HDF5 tools read. Photos are sRGB-encoded; the models take linear RGB in their camera space, so the
pipeline removes the sRGB curve and maps the colours with a ColorChecker-fitted 3x3 matrix
(`hsr_diffusers.spectral.srgb_to_camera_rgb`), unless `--input-space linear` says the file already holds linear camera
values.

Images are processed in overlapping tiles (the model's own tile size, or --tile-size, or tiles of about
--max-megapixels for a model without one), with a progress bar of tiles per image, and the finished rows of the cube
are written to the file as the pipeline hands them over (its `callback_on_tile_end`): memory holds the photo and a
strip of tiles, not the cube. Only .mat below 2 GB (MATLAB 5.0) and .npz hold the whole cube in memory before writing.
The cube is the one the Python pipeline gives for the same file and seed, bit for bit
(`HSRPipeline.from_pretrained(model)(PIL.Image.open(file), generator=torch.Generator().manual_seed(seed))`).

Many photos, many processes: under `accelerate launch` (`-m hsr_diffusers.cli reconstruct ...`, one process per GPU,
or CPU processes with ACCELERATE_USE_CPU=true) every process takes its own share of the images, each image is written
exactly once, and the first process prints the summary of all of them.

An unreadable file, a grayscale, CMYK or transparent image, an unsupported file type or an existing output (without
`--overwrite` or `--skip-existing`) gets one error line on stderr; the other images are still processed, the summary
lists the failures, and the exit status is 1 (2 when the model cannot be loaded). Inputs are never overwritten: an
output that would replace an input, or another input's output, gets a distinct name (`photo_tif.tif`, `photo_2.h5`).

Outputs survive crashes. An image's files are written in the hidden folder OUT/.NAME.partial/ and moved to OUT only
when all of them are complete, the cube last: a run killed at any point (Ctrl-C, SIGKILL from the out-of-memory
killer) leaves no half-written file under an output name, and the next run for that image removes the leftover
folder. To go on after an interrupted run, repeat the command with `--skip-existing`: images whose outputs are all
there are listed as skipped, the others are reconstructed (an image with some outputs but not all is an error, unless
--overwrite is given too). `--overwrite` replaces an image's outputs only once the new ones are complete, and removes
those of the same format that the new run does not write (NAME_std after a run with --samples). Ctrl-C discards the
image in progress, prints what was finished and exits with status 130.

The cubes are what the model outputs, in [0, 1] at the photo's exposure. Both bundled models learned from laboratory
and daylight scenes: reflectance-like (relative to a white surface under the photo's light) on laboratory scenes, and
relative radiance (the light the camera saw) on daylight ones. Neither is calibrated radiance.
"""

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image

from hsr_diffusers.data.io import MAT_V5_MAX_BYTES, SAVE_SUFFIXES, cube_file_paths
from hsr_diffusers.data.photos import PHOTO_SUFFIXES, read_photo


IMAGE_SUFFIXES = PHOTO_SUFFIXES
DEFAULT_MODEL = "hsr-diffusers/ddpm-cave"
DEFAULT_OUTPUT = "hsr_outputs"
# Overlap between tiles for models that do not set their own `default_tile_overlap`, wide enough to hide seams.
TILE_OVERLAP = 32
# The output column of an image that `--skip-existing` skipped.
SKIPPED = "skipped: outputs exist"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers `hsr reconstruct` on the `hsr` subparsers."""
    parser = subparsers.add_parser(
        "reconstruct",
        help="reconstruct hyperspectral cubes from RGB photos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="PNG/JPEG/TIFF/WebP files or folders")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path(DEFAULT_OUTPUT),
        metavar="OUT",
        help="output folder (default: %(default)s)",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="bundled model name (see hsr_diffusers.list_pretrained()), folder written by save_pretrained, or Hub "
        "repo id (default: %(default)s)",
    )
    parser.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="sampling steps of a diffusion model (default: the model's own)",
    )
    parser.add_argument(
        "--samples",
        type=_positive_int,
        default=None,
        help="samples per image for a diffusion model: the cube is their mean, NAME_std their spread (default: 1)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed of a diffusion model; same seed, same cube (default: 0)"
    )
    parser.add_argument(
        "--format", choices=sorted(SAVE_SUFFIXES), default="h5", help="cube file format (default: %(default)s)"
    )
    parser.add_argument(
        "--input-space",
        choices=("srgb", "linear"),
        default="srgb",
        help="srgb: ordinary photos, the sRGB curve is removed; linear: the file holds linear RGB (default: %(default)s)",
    )
    parser.add_argument(
        "--tile-size",
        type=_positive_int,
        default=None,
        help="tile size in pixels, a multiple of the model's downsampling factor (default: the model's own, "
        "else tiles of about --max-megapixels)",
    )
    parser.add_argument(
        "--max-megapixels",
        type=_positive_float,
        default=0.25,
        help="for a model without its own tile size: images larger than this are tiled, in tiles of about this "
        "size (default: %(default)s)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="default: cuda when available (under accelerate launch, each process's own GPU), else cpu",
    )
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip the images whose outputs are all there (resume an interrupted run); they are listed as skipped",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs, once the new ones are complete; outputs of this format that the new run does "
        "not write (NAME_std) are removed",
    )
    parser.set_defaults(func=run_reconstruct)
    return parser


# ---------------------------------------------------------------- inputs
def collect_inputs(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """
    The image files named by `paths` (folders expand to their image files, sorted, not recursive), without duplicates,
    and one error line for every path that cannot be used.
    """
    files, errors, seen = [], [], set()
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                errors.append(f"{path}: no PNG, JPEG, TIFF or WebP files in this folder")
        elif path.is_file():
            images = [path]
        else:
            errors.append(f"{path}: no such file or folder")
            continue
        for image in images:
            if image.resolve() not in seen:
                seen.add(image.resolve())
                files.append(image)
    return files, errors


def read_image(path: str | Path) -> np.ndarray:
    """Deprecated alias of [`hsr_diffusers.data.read_photo`], the photo reader that this module used to hold."""
    import warnings

    warnings.warn(
        "hsr_diffusers.cli.reconstruct.read_image is deprecated; use hsr_diffusers.data.read_photo.",
        FutureWarning,
        stacklevel=2,
    )
    return read_photo(path)


# ---------------------------------------------------------------- outputs
def output_paths(out_dir: Path, name: str, format: str, with_std: bool) -> dict[str, Path]:
    """Output files of one image, by role: `cube`, `std` (when `with_std`), `preview`, `bands` and `spectra`."""
    suffix = SAVE_SUFFIXES[format]
    paths = {"cube": out_dir / f"{name}{suffix}"}
    if with_std:
        paths["std"] = out_dir / f"{name}_std{suffix}"
    paths.update(
        preview=out_dir / f"{name}_preview.png",
        bands=out_dir / f"{name}_bands.png",
        spectra=out_dir / f"{name}_spectra.png",
    )
    return paths


def _all_files(paths: dict[str, Path], format: str) -> list[Path]:
    files = []
    for role, path in paths.items():
        files += cube_file_paths(path, format) if role in ("cube", "std") else [path]
    return files


def assign_names(files: list[Path], out_dir: Path, format: str, with_std: bool) -> list[str]:
    """
    Output names, one per input: the file stem, or `<stem>_<ext>`, `<stem>_2`, ... when that would write over another
    input's outputs or over an input file itself (`photo.tif` with `--format tiff` into its own folder).
    """
    claimed = {file.resolve() for file in files}
    names = []
    for file in files:
        stem = file.stem
        candidates = [stem, f"{stem}_{file.suffix.lstrip('.').lower()}"] + [f"{stem}_{i}" for i in range(2, 10_000)]
        for name in candidates:
            outputs = {p.resolve() for p in _all_files(output_paths(out_dir, name, format, with_std), format)}
            if not outputs & claimed:
                claimed |= outputs
                names.append(name)
                break
    return names


def staging_folder(out_dir: Path, name: str) -> Path:
    """
    The hidden folder `OUT/.NAME.partial/` where the outputs of one image are written until all of them are complete.
    A run killed meanwhile leaves only this folder, which the next run for the same image removes.
    """
    return out_dir / f".{name}.partial"


def commit_outputs(out_dir: Path, name: str, format: str, with_std: bool, keep: set[Path]) -> None:
    """
    Moves the complete outputs of image `name` from its staging folder to OUT, the cube last (a cube under its final
    name means that the image is done), then removes the image's outputs in `format` that an earlier run wrote and this
    one did not (`NAME_std` after a run with `--samples`), unless another input of this run writes them (`keep`).
    """
    final = _all_files(output_paths(out_dir, name, format, with_std), format)
    staged = _all_files(output_paths(staging_folder(out_dir, name), name, format, with_std), format)
    for source, target in reversed(list(zip(staged, final))):
        os.replace(source, target)
    for stale in set(_all_files(output_paths(out_dir, name, format, True), format)) - set(final) - keep:
        stale.unlink(missing_ok=True)


def auto_tile_size(max_megapixels: float, multiple: int, overlap: int = TILE_OVERLAP) -> int:
    """The largest tile side with at most `max_megapixels`, a multiple of `multiple`, and at least 2 * overlap + 8."""
    side = int((max_megapixels * 1e6) ** 0.5) // multiple * multiple
    smallest = -(-(2 * overlap + 8) // multiple) * multiple
    return max(side, smallest)


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux `MemAvailable`), or None when unknown."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(height: int, width: int, bands: int, format: str, samples: int) -> None:
    """
    Raises `MemoryError` when a format that is written whole (.npz, and .mat below 2 GB) cannot hold its cubes in the
    memory available; the other formats are written block by block.
    """
    cube_bytes = height * width * bands * 4
    if format == "npz" or (format == "mat" and cube_bytes <= MAT_V5_MAX_BYTES):
        # The cube (and its spread), and the copy the writer makes of each.
        needed, available = cube_bytes * (2 if samples > 1 else 1) * 2, _available_memory()
        if available is not None and needed > available:
            raise MemoryError(
                f"too large for --format {format} ({width}x{height}): it holds the cubes in memory, about "
                f"{needed / 2**30:.1f} GiB, and {available / 2**30:.1f} GiB are available; use h5, npy, envi or tiff, "
                "which are written as the tiles come"
            )


def band_colours(wavelengths: list[float]) -> np.ndarray:
    """`(bands, 3)` linear sRGB colours of monochromatic light, brightest channel 1, grey outside 360-830 nm."""
    import colour

    cmfs = colour.MSDS_CMFS["CIE 1931 2 Degree Standard Observer"]
    colours = np.full((len(wavelengths), 3), 0.8)
    for index, wavelength in enumerate(wavelengths):
        if cmfs.wavelengths[0] <= wavelength <= cmfs.wavelengths[-1]:
            xyz = colour.wavelength_to_XYZ(wavelength, cmfs)
            rgb = np.clip(colour.XYZ_to_sRGB(xyz, apply_cctf_encoding=False), 0.0, None)
            colours[index] = rgb / max(rgb.max(), 1e-9)
    # A little white keeps the deep violet and red tints from turning black.
    return 0.8 * colours + 0.2


def band_montage(cube: np.ndarray, wavelengths: list[float], columns: int = 8, cell: int = 160) -> np.ndarray:
    """
    A false-colour montage `(H', W', 3)` `uint8` of the bands of a `(H, W, bands)` cube: each band tinted with the
    colour of its wavelength, on one brightness scale for all bands (the 99.5th percentile of the cube is full
    brightness), labelled with its wavelength.
    """
    from PIL import ImageDraw, ImageFont

    height, width, bands = cube.shape
    scale = cell / max(height, width)
    thumb_w, thumb_h = max(1, round(width * scale)), max(1, round(height * scale))
    resample = PIL.Image.Resampling.BOX if scale < 1 else PIL.Image.Resampling.NEAREST
    white = max(float(np.percentile(cube, 99.5)), 1e-6)
    tints = band_colours(wavelengths)
    font = ImageFont.load_default(size=14)
    label_h, pad = 20, 4
    rows = -(-bands // columns)
    sheet = PIL.Image.new(
        "RGB", (columns * (thumb_w + pad) + pad, rows * (thumb_h + label_h + pad) + pad), (24, 24, 24)
    )
    draw = ImageDraw.Draw(sheet)
    for band in range(bands):
        linear = np.clip(cube[..., band, None] / white, 0.0, 1.0) * tints[band]  # (H, W, 3)
        encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
        thumb = PIL.Image.fromarray((encoded * 255 + 0.5).astype(np.uint8)).resize((thumb_w, thumb_h), resample)
        x = pad + (band % columns) * (thumb_w + pad)
        y = pad + (band // columns) * (thumb_h + label_h + pad)
        sheet.paste(thumb, (x, y))
        draw.text(
            (x + thumb_w / 2, y + thumb_h + 2),
            f"{wavelengths[band]:g} nm",
            fill=(230, 230, 230),
            font=font,
            anchor="mt",
        )
    return np.asarray(sheet)


def spectral_regions(pixels: np.ndarray, num_regions: int = 4, iterations: int = 10) -> np.ndarray:
    """
    Region labels `(P,)` for spectra `(P, bands)` by k-means, started from brightness quantiles so that the result is
    deterministic. Labels are ordered by region size, largest first.
    """
    pixels = pixels.astype(np.float64)
    count = min(num_regions, len(pixels))
    order = np.argsort(pixels.mean(axis=1), kind="stable")
    centres = pixels[order[((np.arange(count) + 0.5) / count * len(pixels)).astype(int)]]
    squared = (pixels**2).sum(axis=1, keepdims=True)  # (P, 1)
    for _ in range(iterations):
        labels = (squared - 2 * pixels @ centres.T + (centres**2).sum(axis=1)).argmin(axis=1)  # (P,)
        for region in range(count):
            members = pixels[labels == region]
            if len(members):
                centres[region] = members.mean(axis=0)
    sizes = np.bincount(labels, minlength=count)
    rank = np.empty(count, dtype=int)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(count)
    return rank[labels]


def plot_spectra(
    path: Path,
    small: np.ndarray,
    wavelengths: list[float],
    preview: np.ndarray,
    mean: np.ndarray,
    small_std: np.ndarray | None = None,
    mean_std: np.ndarray | None = None,
    title: str = "",
    num_regions: int = 4,
) -> None:
    """
    Writes a PNG with the preview, a map of `num_regions` spectrally similar regions, and the mean spectrum of the
    whole image and of each region.

    Args:
        small (`np.ndarray`): `(h, w, bands)`, the cube subsampled (every k-th row and column) to find the regions.
        mean (`np.ndarray`): `(bands,)`, the mean spectrum of the whole cube.
        small_std, mean_std (`np.ndarray`, *optional*): the per-pixel sampling standard deviation subsampled as
            `small`, and its mean over the whole image; each mean spectrum then gets a +-1 sigma band.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    bands = small.shape[-1]
    labels = spectral_regions(small.reshape(-1, bands), num_regions).reshape(small.shape[:2])  # (h, w)

    figure = Figure(figsize=(13, 4), layout="constrained")
    FigureCanvasAgg(figure)
    ax_preview, ax_regions, ax_spectra = figure.subplots(1, 3, width_ratios=[1, 1, 2.2])
    colours = [f"C{index}" for index in range(labels.max() + 1)]
    ax_preview.imshow(preview)
    ax_preview.set_title("sRGB preview (D65)")
    ax_regions.imshow(
        labels, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(colours) - 0.5, interpolation="nearest"
    )
    ax_regions.set_title("regions (k-means on spectra)")
    for axis in (ax_preview, ax_regions):
        axis.set_xticks([])
        axis.set_yticks([])

    curves = [("whole image", "black", mean, mean_std)]
    for region, colour in enumerate(colours):
        mask = labels == region
        share = 100 * mask.mean()
        sigma = None if small_std is None else small_std[mask].mean(axis=0)
        curves.append((f"region {region + 1} ({share:.0f} %)", colour, small[mask].mean(axis=0), sigma))
    for label, colour, spectrum, sigma in curves:
        style = "--" if label == "whole image" else "-"
        ax_spectra.plot(wavelengths, spectrum, style, color=colour, label=label, linewidth=1.8)
        if sigma is not None:
            ax_spectra.fill_between(
                wavelengths, spectrum - sigma, spectrum + sigma, color=colour, alpha=0.2, linewidth=0
            )
    ax_spectra.set_xlabel("wavelength (nm)")
    ax_spectra.set_ylabel("reflectance")
    ax_spectra.set_ylim(bottom=0)
    ax_spectra.grid(alpha=0.3)
    ax_spectra.legend(fontsize="small")
    ax_spectra.set_title("mean spectra" + (" ± 1σ over samples" if mean_std is not None else ""))
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=100)


# ---------------------------------------------------------------- pipeline to files
def reconstruct_image(
    pipe,
    rgb,
    paths: dict[str, Path],
    format: str,
    tile_size: int | None,
    tile_overlap: int,
    srgb: bool,
    sampling: dict | None,
    overwrite: bool = False,
    progress: dict | None = None,
) -> np.ndarray:
    """
    Runs `pipe` on the RGB `[1, 3, H, W]` in [0, 1] and writes the cube (and with several samples its uncertainty)
    to `paths["cube"]` (`paths["std"]`) row block by row block, as the pipeline's `callback_on_tile_end` hands over
    the rows that no later tile changes, then the preview, band and spectra plots. The cube is exactly `pipe(rgb,
    tile_size=tile_size, tile_overlap=tile_overlap, input_space=..., **sampling)`: the pipeline tiles, and keeps none
    of the cube in memory, since the callback takes every block.

    Args:
        srgb (`bool`): the RGB is a photo's sRGB, which the pipeline converts to its linear camera RGB.
        sampling (`dict`, *optional*): for a pipeline that samples, `num_inference_steps`, `num_samples` and `seed`.
        progress (`dict`, *optional*): tqdm options of the per-image progress bar of tiles.

    Returns:
        `np.ndarray`: the `(H, W, 3)` uint8 sRGB preview.
    """
    import torch
    from tqdm.auto import tqdm

    from hsr_diffusers.data.io import CubeWriter

    wavelengths = list(pipe.config.wavelengths)
    bands, (height, width) = len(wavelengths), rgb.shape[-2:]
    samples = sampling["num_samples"] if sampling else 1
    processor = pipe.image_processor
    kwargs = {}
    if sampling:
        kwargs = {
            "num_inference_steps": sampling["num_inference_steps"],
            "num_samples": samples,
            "generator": torch.Generator().manual_seed(sampling["seed"]),
        }

    # Subsampled cube (every `step`-th row and column, about 65k pixels) for the band and spectra plots.
    step = max(1, int(np.ceil((height * width / 65536) ** 0.5)))
    small, small_std = [], []
    total, total_std = np.zeros(bands), np.zeros(bands)
    preview = np.empty((height, width, 3), dtype=np.uint8)
    std_writer = None
    cube_writer = CubeWriter(paths["cube"], (height, width, bands), wavelengths, format, overwrite)
    try:
        if samples > 1:
            std_writer = CubeWriter(paths["std"], (height, width, bands), wavelengths, format, overwrite)

        with tqdm(
            total=processor.num_tiles(height, width, tile_size, tile_overlap), unit="tile", **(progress or {})
        ) as bar:

            def write(pipe, tiles_done: int, rows: dict) -> dict:  # rows: (1, r, W, bands) from `rows["top"]` on
                bar.update(tiles_done - bar.n)
                top, cube = rows["top"], rows["cubes"][0]
                if len(cube):
                    cube_writer.write_rows(top, cube)
                    preview[top : top + len(cube)] = processor.cube_to_rgb(cube[None])[0]
                    total[:] += cube.sum(axis=(0, 1), dtype=np.float64)
                    kept = (np.arange(top, top + len(cube)) % step) == 0
                    small.append(cube[kept, ::step])
                    if std_writer is not None:
                        std = rows["uncertainty"][0]
                        std_writer.write_rows(top, std)
                        total_std[:] += std.sum(axis=(0, 1), dtype=np.float64)
                        small_std.append(std[kept, ::step])
                return {"cubes": None, "uncertainty": None}  # written: the pipeline need not keep them

            pipe(
                rgb,
                tile_size=tile_size,
                tile_overlap=tile_overlap,
                input_space="srgb" if srgb else "linear",
                callback_on_tile_end=write,
                **kwargs,
            )
        cube_writer.close()
        if std_writer is not None:
            std_writer.close()
    except BaseException:
        # No half-written cube is left behind.
        for writer in (cube_writer, std_writer):
            if writer is not None:
                writer.abort()
        raise

    small = np.concatenate(small)
    small_std = np.concatenate(small_std) if small_std else None
    mean = total / (height * width)
    mean_std = total_std / (height * width) if small_std is not None else None
    PIL.Image.fromarray(preview).save(paths["preview"])
    PIL.Image.fromarray(band_montage(small, wavelengths)).save(paths["bands"])
    plot_spectra(paths["spectra"], small, wavelengths, preview[::step, ::step], mean, small_std, mean_std)
    return preview


# ---------------------------------------------------------------- command
def _error(message: str) -> None:
    from tqdm.auto import tqdm

    # One line per problem, printed above the progress bar instead of through it.
    tqdm.write(" ".join(message.split()), file=sys.stderr)


def run_reconstruct(args: argparse.Namespace) -> int:
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object, parse_flag_from_env

    from hsr_diffusers.pipelines import HSRPipeline, list_pretrained

    # Under `accelerate launch`, one process per GPU (or per CPU rank, with ACCELERATE_USE_CPU=true, which `Accelerator`
    # reads but `PartialState` leaves to its caller); otherwise a single process.
    state = PartialState(cpu=args.device == "cpu" or parse_flag_from_env("ACCELERATE_USE_CPU"))
    many = state.num_processes > 1
    main_process = state.is_main_process
    rows, failures, interrupted = [], [], False
    try:
        # 1. Load the model once; a model that cannot load stops the run before any file is read.
        if args.device == "cuda" and not torch.cuda.is_available():
            if main_process:
                print("hsr reconstruct: --device cuda, but PyTorch sees no CUDA device.", file=sys.stderr)
            return 2
        try:
            pipe = HSRPipeline.from_pretrained(args.model)
        except Exception as error:  # a missing folder, no network, a foreign checkpoint: all end the same way
            if main_process:
                reason = (
                    str(error)
                    if isinstance(error, FileNotFoundError)
                    else f"{type(error).__name__}: {' '.join(str(error).split())}. "
                    f"Bundled models: {', '.join(list_pretrained()) or 'none installed'}."
                )
                print(f"hsr reconstruct: cannot load model {args.model!r}: {reason}", file=sys.stderr)
            return 2
        pipe.to(state.device)
        pipe.set_progress_bar_config(disable=True)  # one bar of tiles per image instead
        is_sampler = pipe.is_sampler
        if not is_sampler:
            ignored = [
                flag
                for flag, value in (("--steps", args.steps), ("--samples", args.samples), ("--seed", args.seed))
                if value is not None
            ]
            if ignored and main_process:
                print(
                    f"hsr reconstruct: {', '.join(ignored)} ignored: {args.model} is not a diffusion model.",
                    file=sys.stderr,
                )
        samples = (args.samples or 1) if is_sampler else 1
        sampling = None
        if is_sampler:
            seed = 0 if args.seed is None else args.seed
            sampling = {"num_inference_steps": args.steps, "num_samples": samples, "seed": seed}
        tile_overlap = getattr(pipe.config, "default_tile_overlap", TILE_OVERLAP)
        try:
            pipe.check_inputs("np", args.tile_size, tile_overlap)
        except ValueError as error:
            if main_process:
                print(f"hsr reconstruct: --tile-size: {error}", file=sys.stderr)
            return 2

        # 2. Collect the images and give each one its output names (the same in every process), then take this
        #    process's share.
        files, input_errors = collect_inputs(args.inputs)
        if main_process:
            for message in input_errors:
                _error(message)
        with_std = samples > 1
        names = assign_names(files, args.output, args.format, with_std)
        claimed = {
            path
            for name in names
            for path in _all_files(output_paths(args.output, name, args.format, with_std), args.format)
        }
        with state.split_between_processes(list(zip(files, names))) as mine:
            # 3. Reconstruct the images one by one; a failure is reported and the run goes on. Every output is written
            #    in the image's staging folder and moved to OUT once all of them are complete.
            for file, name in mine:
                start = time.perf_counter()
                paths = output_paths(args.output, name, args.format, with_std)
                stage = staging_folder(args.output, name)
                shutil.rmtree(stage, ignore_errors=True)  # what a killed run left
                try:
                    if file.suffix.lower() not in IMAGE_SUFFIXES:
                        raise ValueError(
                            f"unsupported file type {file.suffix or '(none)'!r}: use PNG, JPEG, TIFF or WebP"
                        )
                    outputs = _all_files(paths, args.format)
                    existing = [str(p) for p in outputs if p.exists()]
                    if args.skip_existing and len(existing) == len(outputs):
                        rows.append((str(file), "-", "-", "-", str(state.process_index), SKIPPED))
                        continue
                    if existing and not args.overwrite:
                        raise FileExistsError(
                            f"output exists ({', '.join(existing)}); pass --overwrite to replace it"
                            + ("" if args.skip_existing else " or --skip-existing to keep the complete ones")
                        )
                    rgb = pipe.image_processor.preprocess(read_photo(file))  # [1, 3, H, W] in [0, 1], checked
                    height, width = rgb.shape[-2:]
                    tile_size = args.tile_size or getattr(pipe.config, "default_tile_size", None)
                    if tile_size is None and height * width > args.max_megapixels * 1e6:
                        tile_size = auto_tile_size(args.max_megapixels, pipe.downsample_factor, tile_overlap)
                    check_memory(height, width, pipe.num_bands, args.format, samples)
                    stage.mkdir(parents=True)
                    reconstruct_image(
                        pipe,
                        rgb,
                        output_paths(stage, name, args.format, with_std),
                        args.format,
                        tile_size,
                        tile_overlap,
                        srgb=args.input_space == "srgb",
                        sampling=sampling,
                        progress={"desc": name, "leave": False, "disable": None if main_process else True},
                    )
                    commit_outputs(args.output, name, args.format, with_std, keep=claimed)
                except Exception as error:  # one bad file must not stop the others
                    reason = (
                        str(error)
                        if isinstance(error, (ValueError, FileExistsError, MemoryError))
                        else f"{type(error).__name__}: {error}"
                    )
                    reason = " ".join(reason.split())
                    _error(f"{file}: {reason}")
                    failures.append(f"{file}: {reason}")
                    rows.append((str(file), "-", "-", "-", str(state.process_index), "failed"))
                    continue
                finally:
                    shutil.rmtree(stage, ignore_errors=True)  # empty after a commit; partial files after a failure
                tiles = f"{tile_size} px" if tile_size is not None and max(height, width) > tile_size else "-"
                elapsed = f"{time.perf_counter() - start:.1f} s"
                rows.append(
                    (str(file), f"{width}x{height}", tiles, elapsed, str(state.process_index), str(paths["cube"]))
                )

        # 4. Summary of every process's images, printed once.
        if many:
            rows, failures = gather_object(rows), gather_object(failures)
        if main_process:
            print_summary(rows, input_errors + failures, args.output, state.num_processes)
        return 1 if input_errors or failures else 0
    except KeyboardInterrupt:
        # Ctrl-C: the image in progress was discarded with its staging folder; say what is done. The other processes
        # were interrupted too, so nothing is gathered: each one reports its own images.
        interrupted = True
        if main_process or many:
            print_summary(rows, failures, args.output, state.num_processes, interrupted_process=state.process_index)
        return 130
    finally:
        if many and not interrupted:
            # Leave the process group before exit: a gloo group torn down at interpreter exit can hang.
            state.wait_for_everyone()
            state.destroy_process_group()


def print_summary(
    rows: list[tuple], failures: list[str], out_dir: Path, num_processes: int, interrupted_process: int | None = None
) -> None:
    """
    Prints the table of images (`file, size, tiles, time, process, output`; the output is "failed" or `SKIPPED` for
    the images without one), the count of images reconstructed and skipped, and the failures, one per line. After
    Ctrl-C (`interrupted_process` set), it says so and how to resume.
    """
    from hsr_diffusers.cli.data import format_table

    many = num_processes > 1
    if rows:
        table = [("file", "size", "tiles", "time", "process", "output")] + rows
        # The process column only says something when there are several.
        print(format_table([row[:4] + row[5:] for row in table] if not many else table))
    done = sum(row[-1] not in ("failed", SKIPPED) for row in rows)
    skipped = sum(row[-1] == SKIPPED for row in rows)
    if interrupted_process is not None:
        who = f"process {interrupted_process}: " if many else ""
        print(
            f"Interrupted: {who}{done} image(s) reconstructed into {out_dir}"
            + (f", {skipped} skipped" if skipped else "")
            + (f", {len(failures)} failed" if failures else "")
            + "; the image in progress was discarded. Run the same command with --skip-existing to go on."
        )
    else:
        processes = f" by {num_processes} processes" if many else ""
        print(
            f"{done} image(s) reconstructed into {out_dir}{processes}"
            + (f", {skipped} skipped (all their outputs exist)" if skipped else "")
            + (f", {len(failures)} failed:" if failures else ".")
        )
    for failure in failures:
        print(f"  {' '.join(failure.split())}")
