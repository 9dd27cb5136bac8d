"""`hsr reconstruct`: hyperspectral cubes from RGB photos with a pretrained HSR pipeline.

    hsr reconstruct examples/coffee.png
    hsr reconstruct photos/ -o cubes --format envi --samples 4 --seed 1
    hsr reconstruct scan.tif --model path/to/saved_pipeline --tile-size 256 --device cuda

INPUT is any number of PNG, JPEG or TIFF files (8 or 16 bit, RGB or opaque RGBA) and folders (their images, sorted,
not recursive). For each image NAME.ext, OUT (default ./hsr_outputs) receives:

    NAME.h5              the (H, W, bands) reflectance cube and its wavelengths in nm (--format picks
                         .h5, .npy + .wavelengths.npy, .mat, ENVI .hdr + .img or a band-last .tif)
    NAME_std.h5          per-pixel standard deviation over the samples (only with --samples > 1)
    NAME_preview.png     the cube rendered to sRGB under D65
    NAME_bands.png       every band in its own colour, labelled with its wavelength
    NAME_spectra.png     mean spectra of the whole image and of a few spectrally similar regions
                         (with the +-1 sigma band of the samples when --samples > 1)

The default format, h5, is one self-describing file (`cube`, and `wavelengths` with units) that Python, MATLAB
(`h5read`) and most HDF5 tools read. Photos are sRGB-encoded; the models take linear RGB in their camera space, so the sRGB curve is
removed and a ColorChecker-fitted 3x3 matrix maps the colours (`hsr_diffusers.spectral.srgb_to_camera_rgb`), unless
`--input-space linear` says the file already holds linear camera values. Images over `--max-megapixels` are
processed in overlapping tiles of about that size, so memory depends on the tile, not on the photo.

An unreadable file, a grayscale, CMYK or transparent image, an unsupported file type, an image whose output cubes would
not fit in memory, or an existing output (without `--overwrite`) gets one error line on stderr; the other images are
still processed, and the exit status is 1 (2 when the model cannot be loaded). Inputs are never overwritten: an output
that would replace an input, or another input's output, gets a distinct name (`photo_tif.tif`, `photo_2.h5`).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
CUBE_SUFFIXES = {"h5": ".h5", "npy": ".npy", "mat": ".mat", "envi": ".hdr", "tiff": ".tif"}
DEFAULT_MODEL = "hsr-diffusers/ddpm-cave"
DEFAULT_OUTPUT = "hsr_outputs"
# Overlap between tiles: the pipelines' default, wide enough to hide seams.
TILE_OVERLAP = 32


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
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="PNG/JPEG/TIFF files or folders")
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
        "--format", choices=sorted(CUBE_SUFFIXES), default="h5", help="cube file format (default: %(default)s)"
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
        help="process every image in overlapping tiles of this size (a multiple of the model's downsampling factor)",
    )
    parser.add_argument(
        "--max-megapixels",
        type=_positive_float,
        default=0.25,
        help="images larger than this are tiled automatically, in tiles of about this size (default: %(default)s)",
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available, else cpu"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
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
                errors.append(f"{path}: no PNG, JPEG or TIFF files in this folder")
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


def _read_png16(path: Path) -> np.ndarray:
    # Pillow has no 16-bit RGB mode: it decodes 48/64-bit PNGs to 8-bit RGB(A), keeping the high byte of each sample
    # (raw mode "RGB;16B"). Decoding a second time with the little-endian unpacker ("RGB;16L") keeps the other byte;
    # the PNG unfiltering (and Adam7 interlacing) is the same in both passes, since it only depends on the bit depth.
    planes = []
    for byte_order in ("B", "L"):
        with PIL.Image.open(path) as image:
            image.tile = [(*tile[:3], tile[3][:-1] + byte_order) for tile in image.tile]
            image.load()
            planes.append(np.asarray(image).astype(np.uint16))
    return planes[0] << 8 | planes[1]  # (H, W, 3 or 4)


class ImageModeError(ValueError):
    """The file is an image, but not one the models take (grayscale, CMYK, not 3 channels)."""


def _decode(path: Path, suffix: str) -> np.ndarray:
    if suffix in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if page.photometric == tifffile.PHOTOMETRIC.SEPARATED:
                raise ImageModeError("CMYK TIFF: convert it to RGB first")
            array = page.asarray()
            if array.ndim == 3 and page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
                array = np.moveaxis(array, 0, -1)  # (C, H, W) -> (H, W, C)
        return array

    from PIL import ImageOps

    with PIL.Image.open(path) as image:
        if image.format == "PNG" and image.tile and image.tile[0][3] in ("RGB;16B", "RGBA;16B"):
            return _read_png16(path)
        mode = image.mode
        if mode in ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"):
            raise ImageModeError(f"grayscale image (PIL mode {mode}); an RGB image is needed")
        if mode == "CMYK":
            raise ImageModeError("CMYK image: convert it to RGB first")
        image = ImageOps.exif_transpose(image)
        if mode == "P":
            image = image.convert("RGBA")
        elif mode not in ("RGB", "RGBA"):
            image = image.convert("RGB")
        return np.asarray(image)


def read_image(path: str | Path) -> np.ndarray:
    """
    Reads an RGB(A) PNG, JPEG or TIFF file as an `(H, W, 3 or 4)` array: `uint8`, `uint16` for 16-bit files (all 16
    bits kept), or float for float TIFFs. The EXIF orientation of 8-bit JPEG and PNG files is applied.

    Raises:
        `ValueError` with a one-line reason for an unsupported file type, a file that cannot be decoded (corrupt,
        truncated, not an image) and an image that is not RGB (grayscale, CMYK, other channel counts).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"unsupported file type {path.suffix or '(none)'!r}: use PNG, JPEG or TIFF")
    try:
        array = _decode(path, suffix)
    except ImageModeError:
        raise
    except Exception as error:  # each decoder has its own errors for broken files
        raise ValueError(f"cannot read the image ({type(error).__name__}: {error})") from error
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 2)):
        raise ImageModeError(f"grayscale image (shape {array.shape}); an RGB image is needed")
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ImageModeError(f"expected an RGB image of shape (H, W, 3), got shape {array.shape}")
    return array


# ---------------------------------------------------------------- outputs
def cube_files(path: Path, format: str) -> list[Path]:
    """Every file that `save_cube(path, format=format)` writes."""
    if format == "envi":
        return [path, path.with_suffix(".img")]
    if format == "npy":
        return [path, path.with_name(path.name[: -len(".npy")] + ".wavelengths.npy")]
    return [path]


def output_paths(out_dir: Path, name: str, format: str, with_std: bool) -> dict[str, Path]:
    """Output files of one image, by role: `cube`, `std` (when `with_std`), `preview`, `bands` and `spectra`."""
    suffix = CUBE_SUFFIXES[format]
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
        files += cube_files(path, format) if role in ("cube", "std") else [path]
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
    cube: np.ndarray,
    wavelengths: list[float],
    preview: np.ndarray,
    uncertainty: np.ndarray | None = None,
    title: str = "",
    num_regions: int = 4,
) -> None:
    """
    Writes a PNG with the preview, a map of `num_regions` spectrally similar regions, and the mean spectrum of the
    whole image and of each region; with `uncertainty` (per-pixel sampling standard deviation, same shape as `cube`),
    each mean spectrum gets a +-1 sigma band of the average sampling spread.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    height, width, bands = cube.shape
    # About 65k pixels are plenty for region means and keep k-means fast on large photos.
    step = max(1, int(np.ceil((height * width / 65536) ** 0.5)))
    small = cube[::step, ::step]  # (h, w, bands)
    labels = spectral_regions(small.reshape(-1, bands), num_regions).reshape(small.shape[:2])  # (h, w)
    small_std = None if uncertainty is None else uncertainty[::step, ::step]

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

    curves = [("whole image", "black", cube.reshape(-1, bands).mean(axis=0), None)]
    if uncertainty is not None:
        curves[0] = curves[0][:3] + (uncertainty.reshape(-1, bands).mean(axis=0),)
    for region, colour in enumerate(colours):
        mask = labels == region
        share = 100 * mask.mean()
        sigma = None if small_std is None else small_std[mask].mean(axis=0)
        curves.append((f"region {region + 1} ({share:.0f} %)", colour, small[mask].mean(axis=0), sigma))
    for label, colour, mean, sigma in curves:
        style = "--" if label == "whole image" else "-"
        ax_spectra.plot(wavelengths, mean, style, color=colour, label=label, linewidth=1.8)
        if sigma is not None:
            ax_spectra.fill_between(wavelengths, mean - sigma, mean + sigma, color=colour, alpha=0.2, linewidth=0)
    ax_spectra.set_xlabel("wavelength (nm)")
    ax_spectra.set_ylabel("reflectance")
    ax_spectra.set_ylim(bottom=0)
    ax_spectra.grid(alpha=0.3)
    ax_spectra.legend(fontsize="small")
    ax_spectra.set_title("mean spectra" + (" ± 1σ over samples" if uncertainty is not None else ""))
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=100)


# ---------------------------------------------------------------- command
def _error(message: str) -> None:
    from tqdm.auto import tqdm

    # One line per problem, printed above the progress bar instead of through it.
    tqdm.write(" ".join(message.split()), file=sys.stderr)


def run_reconstruct(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from hsr_diffusers.cli.data import format_table
    from hsr_diffusers.data import save_cube
    from hsr_diffusers.pipelines import HSRDiffusionPipeline, HSRPipeline, list_pretrained
    from hsr_diffusers.spectral import srgb_to_camera_rgb

    # 1. Load the model once; a model that cannot load stops the run before any file is read.
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("hsr reconstruct: --device cuda, but PyTorch sees no CUDA device.", file=sys.stderr)
        return 2
    try:
        pipe = HSRPipeline.from_pretrained(args.model)
    except Exception as error:  # a missing folder, no network, a foreign checkpoint: all end the same way
        bundled = ", ".join(list_pretrained()) or "none installed"
        print(
            f"hsr reconstruct: cannot load model {args.model!r} ({type(error).__name__}: "
            f"{' '.join(str(error).split())}). Bundled models: {bundled}.",
            file=sys.stderr,
        )
        return 2
    pipe.to(device)
    is_diffusion = isinstance(pipe, HSRDiffusionPipeline)
    if not is_diffusion:
        ignored = [
            flag
            for flag, value in (("--steps", args.steps), ("--samples", args.samples), ("--seed", args.seed))
            if value is not None
        ]
        if ignored:
            print(
                f"hsr reconstruct: {', '.join(ignored)} ignored: {args.model} is not a diffusion model.",
                file=sys.stderr,
            )
    steps = args.steps  # None: the pipeline's default_num_inference_steps
    samples = (args.samples or 1) if is_diffusion else 1
    seed = 0 if args.seed is None else args.seed
    try:
        pipe.check_inputs("np", args.tile_size, TILE_OVERLAP)
    except ValueError as error:
        print(f"hsr reconstruct: --tile-size: {error}", file=sys.stderr)
        return 2
    wavelengths = list(pipe.config.wavelengths)

    # 2. Collect the images and give each one its output names.
    files, input_errors = collect_inputs(args.inputs)
    for message in input_errors:
        _error(message)
    names = assign_names(files, args.output, args.format, with_std=samples > 1)

    # 3. Reconstruct the images one by one; a failure is reported and the run goes on.
    rows = [("file", "size", "tiles", "time", "output")]
    failures = len(input_errors)
    for file, name in tqdm(list(zip(files, names)), desc="images", unit="image", disable=None):
        start = time.perf_counter()
        paths = output_paths(args.output, name, args.format, with_std=samples > 1)
        try:
            existing = [str(p) for p in _all_files(paths, args.format) if p.exists()]
            if existing and not args.overwrite:
                raise FileExistsError(f"output exists ({', '.join(existing)}); pass --overwrite to replace it")
            array = read_image(file)
            rgb = pipe.image_processor.preprocess(array)  # [1, 3, H, W] in [0, 1], checked
            if args.input_space == "srgb":
                # Photo sRGB -> linear camera RGB of the model's response (ColorChecker-fitted 3x3 matrix).
                camera = srgb_to_camera_rgb(rgb.permute(0, 2, 3, 1).numpy(), pipe.config.response, wavelengths)
                rgb = torch.from_numpy(camera).permute(0, 3, 1, 2)
            height, width = rgb.shape[-2:]
            # The pipeline holds every sample, their mean and spread, and a copy for writing, in float32.
            needed, available = height * width * len(wavelengths) * 4 * (samples + 3), _available_memory()
            if available is not None and needed > available:
                raise MemoryError(
                    f"too large ({width}x{height}): the output cubes need about {needed / 2**30:.1f} GiB of memory, "
                    f"{available / 2**30:.1f} GiB are available; downscale it or use fewer --samples"
                )
            tile_size, tile_overlap = args.tile_size, TILE_OVERLAP
            default_tile = getattr(pipe.config, "default_tile_size", None)
            if tile_size is None and default_tile is not None:
                # The model's own efficient tile (attention cost grows with the tile), and its own overlap with it.
                tile_size, tile_overlap = default_tile, None
            elif tile_size is None and height * width > args.max_megapixels * 1e6:
                tile_size = auto_tile_size(args.max_megapixels, pipe.downsample_factor)

            pipe.set_progress_bar_config(disable=None, leave=False, desc=name)
            sampling = {}
            if is_diffusion:
                sampling = {
                    "num_inference_steps": steps,
                    "num_samples": samples,
                    "generator": torch.Generator().manual_seed(seed),
                }
            output = pipe(rgb, tile_size=tile_size, tile_overlap=tile_overlap, **sampling)
            cube = output.cubes[0]  # (H, W, bands)
            uncertainty = None if output.uncertainty is None else output.uncertainty[0]

            args.output.mkdir(parents=True, exist_ok=True)
            save_cube(paths["cube"], cube, wavelengths, format=args.format, overwrite=args.overwrite)
            if uncertainty is not None:
                save_cube(paths["std"], uncertainty, wavelengths, format=args.format, overwrite=args.overwrite)
            preview = pipe.image_processor.cube_to_rgb(cube[None])[0]  # (H, W, 3) uint8
            PIL.Image.fromarray(preview).save(paths["preview"])
            PIL.Image.fromarray(band_montage(cube, wavelengths)).save(paths["bands"])
            plot_spectra(paths["spectra"], cube, wavelengths, preview, uncertainty, title=file.name)
        except Exception as error:  # one bad file must not stop the others
            failures += 1
            reason = (
                str(error)
                if isinstance(error, (ValueError, FileExistsError, MemoryError))
                else f"{type(error).__name__}: {error}"
            )
            _error(f"{file}: {reason}")
            rows.append((str(file), "-", "-", "-", "failed"))
            continue
        tiles = f"{tile_size} px" if tile_size is not None and max(height, width) > tile_size else "-"
        rows.append(
            (str(file), f"{width}x{height}", tiles, f"{time.perf_counter() - start:.1f} s", str(paths["cube"]))
        )

    # 4. Summary.
    if len(rows) > 1:
        print(format_table(rows))
    done = len(rows) - 1 - sum(row[-1] == "failed" for row in rows[1:])
    print(
        f"{done} image(s) reconstructed into {args.output}"
        + (f", {failures} failed (see above)." if failures else ".")
    )
    return 1 if failures else 0
