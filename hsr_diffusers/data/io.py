"""Reading and writing hyperspectral cubes in the formats of the public datasets and of common tools.

Every reader returns a channel-last `(H, W, bands)` float32 cube. The format is detected from the file content (magic
bytes), not from the suffix alone, because the public datasets ship `.mat` files in two unrelated containers: MATLAB 5.0
files (NTIRE 2020 ARAD-HS, read with `scipy.io.loadmat`) and MATLAB 7.3 files, which are HDF5 files behind a 512-byte
MATLAB header (NTIRE 2022 ARAD_1K, ICVL, read with h5py). MATLAB stores arrays column-major, so h5py sees the axes of
a v7.3 variable reversed: a MATLAB `(H, W, bands)` cube comes out of h5py as `(bands, W, H)`.

Supported inputs (`name` is what [`detect_format`] returns and what `format=` takes):

| name | format | detected by | cube | scaling | wavelengths |
| --- | --- | --- | --- | --- | --- |
| `mat` | ARAD-HS / ARAD_1K `.mat` (v5 or v7.3) | MATLAB header text | variable `cube` | as stored | `bands` |
| `mat` | ICVL `.mat` (v7.3 or v5) | MATLAB header text | variable `rad` | divided by 4095 (12-bit camera) | `bands` |
| `cave` | CAVE scene folder | a folder of `<scene>_ms_NN.png` | 16-bit PNG per band | divided by 65535 (8-bit: 255) | 400 + 10 (NN - 1) nm |
| `h5` | `.h5` | HDF5 signature | dataset `cube`, `(H, W, bands)` | as stored | dataset `wavelengths` |
| `npy` / `npz` | `.npy` / `.npz` | numpy / zip magic | the array / key `cube` | as stored | `<name>.wavelengths.npy` / key `wavelengths` |
| `envi` | ENVI `.hdr` + `.img` | `ENVI` header | BSQ, BIL or BIP | `reflectance scale factor` if given | `wavelength` |
| `tiff` | TIFF | TIFF magic | band-last or band-first | as stored | `wavelengths` in the JSON ImageDescription |

Each format is one [`CubeFormat`] entry of [`CUBE_FORMATS`] (at the end of this file): its name, suffixes, content
test, reader and writer. Everything else ([`CUBE_SUFFIXES`], [`SAVE_SUFFIXES`], `hsr reconstruct --format`, the demo's
downloads) is derived from that table. In version 0.1 the readers called two formats `"hdf5"` and `"mat5"`/`"mat73"`;
those names still compare equal to what [`detect_format`] returns, and are still accepted as `format=`, with a
`FutureWarning`.

Anything that cannot be read as a finite, non-zero 3-D cube raises one [`CubeFormatError`] that names the file and the
problem. Writers never leave a partial file under the final name: they write `.<name>.partial<suffix>` and rename it
when the cube is complete (see [`CubeWriter`]).
"""

import json
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


__all__ = [
    "CAVE_NUM_BANDS",
    "CUBE_FORMATS",
    "CUBE_SUFFIXES",
    "SAVE_SUFFIXES",
    "CubeFormat",
    "CubeFormatError",
    "CubeWriter",
    "ICVL_SCALE",
    "cube_file_paths",
    "detect_format",
    "find_cave_band_files",
    "load_cube",
    "load_cube_with_wavelengths",
    "partial_path",
    "save_cube",
]


class CubeFormatError(ValueError):
    """A file or folder that cannot be read as a `(H, W, bands)` cube. The message names the path and the problem."""


# A CAVE scene has 31 band images, 400-700 nm in 10 nm steps, named `<scene>_ms_01.png` ... `<scene>_ms_31.png`.
CAVE_NUM_BANDS = 31
# ICVL radiance comes from a 12-bit camera: dividing by 2**12 - 1 maps it to [0, 1] (as the NTIRE 2018 loaders do).
ICVL_SCALE = 4095.0
# MATLAB v5 stores sizes in 32-bit fields: variables of 2 GB and more need the v7.3 (HDF5) container.
MAT_V5_MAX_BYTES = 2**31 - 1

_MAT5_MAGIC = b"MATLAB 5.0 MAT-file"
_MAT73_MAGIC = b"MATLAB 7.3 MAT-file"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_ENVI_MAGIC = b"ENVI"

# Cube variable names tried in order when no key is given, and the wavelength variables next to them.
_CUBE_KEYS = ("cube", "rad")
_WAVELENGTH_KEYS = ("bands", "wavelengths", "wavelength")
_CAVE_BAND = re.compile(r"^(?P<prefix>.+)_(?P<band>\d{2})\.png$", re.IGNORECASE)
_ENVI_DTYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8", 15: "u8"}
_ENVI_DATA_SUFFIXES = ("", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip", ".bin")


# ----------------------------------------------------------------------------------------------------------------------
# Format detection
# ----------------------------------------------------------------------------------------------------------------------


class FormatName(str):
    """
    A format name as [`detect_format`] returns it (`"h5"`, `"mat"`, ...). It also compares equal to the name the
    readers used for it in version 0.1 (`"hdf5"`; `"mat5"` or `"mat73"` by the file's MATLAB version), with a
    `FutureWarning`, so that code written against the old names keeps working while it is updated.
    """

    def __new__(cls, name: str, old_name: str | None = None) -> "FormatName":
        value = super().__new__(cls, name)
        value.old_name = old_name
        return value

    def __eq__(self, other: object) -> bool:
        if str.__eq__(self, other):
            return True
        if self.old_name is not None and isinstance(other, str) and other == self.old_name:
            warnings.warn(
                f"The cube format {other!r} is now called {str(self)!r}; compare with {str(self)!r}.",
                FutureWarning,
                stacklevel=2,
            )
            return True
        return False

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = str.__hash__


def detect_format(path: str | os.PathLike) -> FormatName:
    r"""
    Detects the container of a cube from its content, trying the formats of [`CUBE_FORMATS`] in order.

    Args:
        path (`str` or `os.PathLike`):
            A file, or a CAVE scene folder.

    Returns:
        [`FormatName`]: a key of [`CUBE_FORMATS`]: `"mat"`, `"h5"`, `"npy"`, `"npz"`, `"tiff"`, `"envi"` or `"cave"`.
        It also equals the version 0.1 names `"hdf5"`, `"mat5"` and `"mat73"` (with a `FutureWarning`).

    Raises:
        [`CubeFormatError`]: the path does not exist, is empty, or holds none of these formats.
    """
    path = Path(path)
    if path.is_dir():
        head = b""
    elif path.is_file():
        with open(path, "rb") as file:
            head = file.read(520)
        if not head:
            raise CubeFormatError(f"{path}: the file is empty.")
    else:
        raise CubeFormatError(f"{path}: no such file or folder.")
    name = next((name for name, format in CUBE_FORMATS.items() if format.sniff(path, head)), None)
    if name is None and not path.is_dir():
        # HDF5 allows user blocks of any power of two >= 512: let h5py look further than the first 520 bytes.
        import h5py

        if h5py.is_hdf5(path):
            name = "h5"
    if name is None:
        readable = ", ".join(format.label for format in CUBE_FORMATS.values())
        raise CubeFormatError(
            f"{path}: not a recognised cube file (it starts with {head[:16]!r}); expected {readable}."
        )
    # The names the readers returned in version 0.1, frozen: new formats have none.
    old_name = {"h5": "hdf5", "mat": "mat73" if head.startswith(_MAT73_MAGIC) else "mat5"}.get(name)
    return FormatName(name, old_name)


def _format_name(format: str) -> str:
    """`format` as a key of [`CUBE_FORMATS`]: a version 0.1 name is translated with a `FutureWarning`."""
    if format not in CUBE_FORMATS:
        new = next((name for name, entry in CUBE_FORMATS.items() if format in entry.old_names), None)
        if new is not None:
            warnings.warn(f"The cube format {format!r} is now called {new!r}.", FutureWarning, stacklevel=3)
            return new
    return format


# ----------------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------------


def load_cube(path: str | os.PathLike, key: str | None = None, expected_bands: int | None = None) -> np.ndarray:
    r"""
    Loads a hyperspectral cube as a channel-last float32 array.

    This returns the cube alone. The band centres (which every writer of this package stores, and most datasets do)
    come with [`load_cube_with_wavelengths`]: `cube, wavelengths = load_cube_with_wavelengths(path)`.

    The container is detected from the content (see the module docstring for the table of formats). Values are
    returned as stored, except where the format defines a scale: ICVL `rad` data is divided by 4095 (its 12-bit range),
    CAVE PNGs by 65535 (8-bit PNGs such as `watercolors_ms` by 255), and ENVI files by their `reflectance scale
    factor`. The `norm_factor` of the NTIRE 2020 files is not applied: the challenge scores the stored cube.

    Args:
        path (`str` or `os.PathLike`):
            A `.mat`, `.h5`, `.npy`, `.npz`, ENVI (`.hdr` or its data file) or TIFF file, or a CAVE scene folder (flat
            `<scene>_ms_NN.png` files, or the nested `<scene>_ms/<scene>_ms/` layout of the original download).
        key (`str`, *optional*):
            The variable that holds the cube in `.mat`, `.h5` and `.npz` files. Defaults to `"cube"` (ARAD, this
            package), then `"rad"` (ICVL).
        expected_bands (`int`, *optional*):
            Raise unless the cube has this many bands.

    Returns:
        `np.ndarray`: `(H, W, bands)` float32, C-contiguous. For the wavelengths too, use
        [`load_cube_with_wavelengths`].

    Raises:
        [`CubeFormatError`]: unreadable or truncated file, missing variable (the message lists the ones present), a
            shape that is not 3-D, a wrong band count, NaN/Inf values or an all-zero cube.
    """
    return load_cube_with_wavelengths(path, key=key, expected_bands=expected_bands)[0]


def load_cube_with_wavelengths(
    path: str | os.PathLike, key: str | None = None, expected_bands: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    r"""
    Loads a cube and the band centres stored with it: [`load_cube`] plus the wavelengths.

    Args:
        path, key, expected_bands:
            As in [`load_cube`].

    Returns:
        `tuple[np.ndarray, np.ndarray | None]`: the `(H, W, bands)` float32 cube and the float64 wavelengths in nm
        (`None` when the file stores none). Wavelengths stored in micrometres (values below 10) are converted to nm.
    """
    path = Path(path)
    cube, wavelengths = CUBE_FORMATS[detect_format(path)].reader(path, key)
    cube = _validate_cube(path, cube, expected_bands)
    if wavelengths is not None:
        wavelengths = np.asarray(wavelengths, dtype=np.float64).reshape(-1)
        if wavelengths.size != cube.shape[-1]:
            raise CubeFormatError(
                f"{path}: stores {wavelengths.size} wavelengths for a cube with {cube.shape[-1]} bands."
            )
        if wavelengths.size and wavelengths.max() < 10:
            wavelengths = wavelengths * 1000.0  # micrometres (e.g. 0.4 ... 0.7) to nanometres
    return cube, wavelengths


def _validate_cube(path: Path, cube: np.ndarray, expected_bands: int | None) -> np.ndarray:
    if cube.ndim != 3:
        raise CubeFormatError(f"{path}: expected a 3-D (H, W, bands) cube, got an array of shape {cube.shape}.")
    if expected_bands is not None and cube.shape[-1] != expected_bands:
        raise CubeFormatError(
            f"{path}: the cube has {cube.shape[-1]} bands (shape {cube.shape}), expected {expected_bands}."
        )
    cube = np.ascontiguousarray(cube, dtype=np.float32)
    finite = np.isfinite(cube)
    if not finite.all():
        raise CubeFormatError(f"{path}: the cube has {finite.size - finite.sum()} NaN or Inf values.")
    if not cube.any():
        raise CubeFormatError(f"{path}: the cube is all zeros.")
    return cube


def _pick_key(path: Path, names: list[str], key: str | None, what: str = "variable") -> str:
    if key is not None:
        if key not in names:
            raise CubeFormatError(f"{path}: no {what} {key!r}; the file holds {sorted(names)}.")
        return key
    for candidate in _CUBE_KEYS:
        if candidate in names:
            return candidate
    raise CubeFormatError(
        f"{path}: no {what} 'cube' (ARAD) or 'rad' (ICVL); the file holds {sorted(names)}. Pass key=... to pick one."
    )


def _scale_for_key(key: str, cube: np.ndarray) -> np.ndarray:
    if key == "rad":
        return cube.astype(np.float32) / np.float32(ICVL_SCALE)
    return cube


def _check_mat5_complete(path: Path) -> None:
    """Walks the top-level element tags of a MATLAB 5.0 file and raises if one runs past the end of the file.

    scipy reads only the variables it is asked for, so a file cut inside a later variable would otherwise load.
    """
    size = path.stat().st_size
    with open(path, "rb") as file:
        header = file.read(128)
        if len(header) < 128:
            raise CubeFormatError(f"{path}: the MATLAB 5.0 header is cut short ({size} bytes); the file is truncated.")
        order = "<" if header[126:128] == b"IM" else ">"
        position = 128
        while position < size:
            file.seek(position)
            tag = file.read(8)
            if len(tag) < 8:
                break  # trailing padding
            data_type, num_bytes = np.frombuffer(tag, dtype=f"{order}u4")
            end = position + 8 + int(num_bytes)
            if end > size:
                raise CubeFormatError(
                    f"{path}: a variable needs bytes up to {end} but the file has {size}; the file is truncated."
                )
            # miMATRIX (14) elements are padded to 8 bytes; miCOMPRESSED (15) ones are not.
            position = end + (-end % 8 if data_type == 14 else 0)


def _read_mat5(path: Path, key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    import scipy.io

    _check_mat5_complete(path)
    try:
        names = [name for name, _shape, _cls in scipy.io.whosmat(path)]
        key = _pick_key(path, names, key)
        wanted = [key] + [name for name in _WAVELENGTH_KEYS if name in names]
        content = scipy.io.loadmat(path, variable_names=wanted)
    except CubeFormatError:
        raise
    except Exception as error:  # scipy raises ValueError, TypeError, OSError... for damaged files
        raise CubeFormatError(f"{path}: cannot read the MATLAB 5.0 file ({error}); is it truncated?") from error
    wavelengths = next((content[name] for name in _WAVELENGTH_KEYS if name in content), None)
    return _scale_for_key(key, np.asarray(content[key])), wavelengths


def _read_mat(path: Path, key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    with open(path, "rb") as file:
        version_5 = file.read(len(_MAT5_MAGIC)) == _MAT5_MAGIC
    return _read_mat5(path, key) if version_5 else _read_hdf5(path, key)  # v7.3 is HDF5


def _read_hdf5(path: Path, key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    import h5py

    with open(path, "rb") as file:
        matlab_header = file.read(len(_MAT73_MAGIC)) == _MAT73_MAGIC
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise CubeFormatError(f"{path}: cannot open the HDF5 file ({error}); is it truncated?") from error
    with file:
        names = [name for name in file.keys() if isinstance(file[name], h5py.Dataset)]
        key = _pick_key(path, names, key, what="dataset")
        dataset = file[key]
        # MATLAB writes column-major arrays, so h5py sees a MATLAB (H, W, bands) cube as (bands, W, H). A file is in
        # MATLAB layout when it has the MATLAB header, MATLAB's class attribute, or (written by hand) a .mat name.
        matlab = matlab_header or "MATLAB_class" in dataset.attrs or path.suffix.lower() == ".mat"
        try:
            cube = dataset[()]
            wavelengths = next((file[name][()] for name in _WAVELENGTH_KEYS if name in names), None)
        except OSError as error:
            raise CubeFormatError(f"{path}: cannot read {key!r} ({error}); is the file truncated?") from error
    if matlab:
        cube = np.transpose(cube)
    return _scale_for_key(key, cube), wavelengths


def _npy_sidecar(path: Path) -> Path:
    """`scene.npy` keeps its wavelengths in `scene.wavelengths.npy`."""
    stem = path.name[: -len(".npy")] if path.name.lower().endswith(".npy") else path.name
    return path.with_name(stem + ".wavelengths.npy")


def _read_npy(path: Path, key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        cube = np.load(path)
    except (ValueError, OSError, EOFError) as error:
        raise CubeFormatError(f"{path}: cannot read the .npy file ({error}); is it truncated?") from error
    sidecar = _npy_sidecar(path)
    wavelengths = np.load(sidecar) if sidecar.is_file() else None
    return cube, wavelengths


def _read_npz(path: Path, key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path) as content:
            key = _pick_key(path, list(content.files), key, what="array")
            cube = content[key]
            wavelengths = next((content[name] for name in _WAVELENGTH_KEYS if name in content.files), None)
    except CubeFormatError:
        raise
    except Exception as error:  # zipfile.BadZipFile, ValueError, EOFError for damaged archives
        raise CubeFormatError(f"{path}: cannot read the .npz file ({error}); is it truncated?") from error
    return _scale_for_key(key, cube), wavelengths


def _read_tiff(path: Path, key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            cube, axes = series.asarray(), series.axes
            description = tif.pages[0].description
    except Exception as error:  # tifffile raises TiffFileError, ValueError, OSError for damaged files
        raise CubeFormatError(f"{path}: cannot read the TIFF file ({error}); is it truncated?") from error
    if axes == "YX":
        cube = cube[..., None]
    elif len(axes) == 3 and axes.endswith("YX"):
        cube = np.moveaxis(cube, 0, -1)  # one page or plane per band: (bands, H, W)
    elif axes != "YXS":
        raise CubeFormatError(f"{path}: cannot map the TIFF axes {axes!r} (shape {cube.shape}) to (H, W, bands).")
    try:
        wavelengths = json.loads(description).get("wavelengths")
    except (ValueError, AttributeError):
        wavelengths = None
    return cube, wavelengths


# ENVI ---------------------------------------------------------------------------------------------------------------


def _envi_header_for(path: Path) -> Path | None:
    """The ENVI header of a data file: `x.hdr` or `x.img.hdr` next to `x.img`."""
    for header in (path.with_suffix(".hdr"), path.with_name(path.name + ".hdr")):
        if header != path and header.is_file():
            with open(header, "rb") as file:
                if file.read(4) == _ENVI_MAGIC:
                    return header
    return None


def _parse_envi_header(header: Path) -> dict[str, str]:
    text = header.read_text(errors="replace")
    fields = {}
    # `key = value` lines; values in braces may span several lines.
    for match in re.finditer(r"^\s*([^=\n{}]+?)\s*=\s*(\{[^}]*\}|[^\n]*)", text[4:], flags=re.MULTILINE):
        fields[match.group(1).strip().lower()] = match.group(2).strip()
    return fields


def _envi_list(value: str) -> list[float]:
    return [float(item) for item in value.strip("{}").replace("\n", " ").split(",") if item.strip()]


def _read_envi(path: Path, key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    with open(path, "rb") as file:
        is_header = file.read(4) == _ENVI_MAGIC
    header = path if is_header else _envi_header_for(path)
    fields = _parse_envi_header(header)
    try:
        width, height, bands = (int(fields[name]) for name in ("samples", "lines", "bands"))
        dtype = np.dtype(_ENVI_DTYPES[int(fields.get("data type", "4"))])
        offset = int(fields.get("header offset", "0"))
        interleave = fields.get("interleave", "bsq").lower()
    except (KeyError, ValueError) as error:
        raise CubeFormatError(f"{header}: incomplete or unsupported ENVI header ({error!r}).") from error
    if interleave not in ("bsq", "bil", "bip"):
        raise CubeFormatError(f"{header}: unknown ENVI interleave {interleave!r}.")
    dtype = dtype.newbyteorder(">" if fields.get("byte order", "0") == "1" else "<")
    if is_header:
        base = header.with_suffix("") if header.suffix.lower() == ".hdr" else header
        candidates = [Path(str(base) + suffix) for suffix in _ENVI_DATA_SUFFIXES]
        data = next((candidate for candidate in candidates if candidate.is_file() and candidate != header), None)
        if data is None:
            raise CubeFormatError(f"{header}: ENVI data file not found (looked for {[c.name for c in candidates]}).")
    else:
        data = path
    count = width * height * bands
    if data.stat().st_size < offset + count * dtype.itemsize:
        raise CubeFormatError(
            f"{data}: the ENVI data file has {data.stat().st_size} bytes, the header needs "
            f"{offset + count * dtype.itemsize}; is it truncated?"
        )
    raw = np.fromfile(data, dtype=dtype, count=count, offset=offset)
    if interleave == "bsq":
        cube = raw.reshape(bands, height, width).transpose(1, 2, 0)
    elif interleave == "bil":
        cube = raw.reshape(height, bands, width).transpose(0, 2, 1)
    else:
        cube = raw.reshape(height, width, bands)
    cube = cube.astype(np.float32)
    if "reflectance scale factor" in fields:
        cube /= np.float32(float(fields["reflectance scale factor"]))
    wavelengths = None
    if "wavelength" in fields:
        wavelengths = np.asarray(_envi_list(fields["wavelength"]))
        if fields.get("wavelength units", "").lower() in ("micrometers", "microns", "um"):
            wavelengths = wavelengths * 1000.0
    return cube, wavelengths


# CAVE ---------------------------------------------------------------------------------------------------------------


def find_cave_band_files(folder: str | os.PathLike, num_bands: int | None = None) -> list[Path]:
    r"""
    Finds the band PNGs of a CAVE scene folder, in band order.

    Both layouts are accepted: the flat `<scene>_ms/<scene>_ms_NN.png` and the nested
    `<scene>_ms/<scene>_ms/<scene>_ms_NN.png` of the original CAVE download (one level down).

    Args:
        folder (`str` or `os.PathLike`):
            The scene folder.
        num_bands (`int`, *optional*):
            The bands the scene must have (1 to `num_bands`, [`CAVE_NUM_BANDS`] for a CAVE scene). Without it, any
            gap-free run 1 to N is accepted, which cannot notice that the last bands are missing.

    Returns:
        `list[Path]`: the files for bands 1, 2, ..., N.

    Raises:
        [`CubeFormatError`]: no band files, several candidate subfolders, a gap in the band numbers, or (with
            `num_bands`) a missing or an extra band; the message names the missing files.
    """
    folder = Path(folder)

    def bands_in(directory: Path) -> dict[int, Path]:
        found = {}
        for file in directory.iterdir():
            match = _CAVE_BAND.match(file.name)
            if match and file.is_file():
                found[int(match.group("band"))] = file
        return found

    found = bands_in(folder)
    if not found:
        nested = [sub for sub in sorted(folder.iterdir()) if sub.is_dir() and bands_in(sub)]
        if len(nested) > 1:
            raise CubeFormatError(f"{folder}: several subfolders hold band PNGs: {[sub.name for sub in nested]}.")
        if nested:
            found = bands_in(nested[0])
    if not found:
        raise CubeFormatError(f"{folder}: no CAVE band images (<scene>_ms_NN.png) found in the folder.")
    numbers = sorted(found)
    missing = sorted(set(range(1, max(numbers[-1], num_bands or 0) + 1)) - set(numbers))
    if missing:
        # Name the missing files after an existing one: `beads_ms_17.png` -> `beads_ms_31.png`.
        prefix = _CAVE_BAND.match(found[numbers[0]].name).group("prefix")
        names = ", ".join(f"{prefix}_{number:02d}.png" for number in missing)
        expected = f"a CAVE scene has bands 1 to {num_bands}" if num_bands else "the band numbers have a gap"
        raise CubeFormatError(
            f"{folder}: band images {missing} are missing ({names}); found {len(numbers)} bands, {expected}."
        )
    if num_bands is not None and numbers[-1] > num_bands:
        raise CubeFormatError(f"{folder}: {numbers[-1]} band images, a CAVE scene has {num_bands}.")
    return [found[number] for number in numbers]


def _read_cave(path: Path, key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    from PIL import Image

    files = find_cave_band_files(path, num_bands=CAVE_NUM_BANDS)
    cube = None
    for index, file in enumerate(files):
        try:
            with Image.open(file) as image:
                band = np.asarray(image)
        except OSError as error:
            raise CubeFormatError(f"{file}: cannot read the CAVE band image ({error}).") from error
        if band.ndim == 3:
            band = band[..., 0]  # `watercolors_ms` ships 8-bit RGBA PNGs with equal colour channels
        if band.dtype.kind not in "ui" or band.dtype.itemsize > 4:
            raise CubeFormatError(f"{file}: unexpected band image type {band.dtype} (mode {image.mode}).")
        # 8-bit bands are scaled by 255; 16-bit ones (which Pillow may open in 32-bit "I" mode) by 65535.
        scale = 255.0 if band.dtype.itemsize == 1 else 65535.0
        if cube is None:
            cube = np.empty((*band.shape, len(files)), dtype=np.float32)
        elif band.shape != cube.shape[:2]:
            raise CubeFormatError(f"{file}: band size {band.shape} differs from the first band's {cube.shape[:2]}.")
        cube[..., index] = band / np.float32(scale)
    wavelengths = 400.0 + 10.0 * np.arange(len(files))  # CAVE: band NN is 400 + 10 (NN - 1) nm
    return cube, wavelengths


# ----------------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------------


def partial_path(path: str | os.PathLike) -> Path:
    r"""
    The temporary name under which a file is written until it is complete: `.<stem>.partial<suffix>` beside it
    (`cubes/scene.h5` -> `cubes/.scene.partial.h5`). Hidden, and with a suffix that no folder scan takes for a finished
    file's; a later write of the same file starts it again from scratch.
    """
    path = Path(path)
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def cube_file_paths(path: str | os.PathLike, format: str | None = None, wavelengths: bool = True) -> list[Path]:
    r"""
    Every file that [`save_cube`] writes for `path`, the main one first: the ENVI header and its `.img` data file, the
    `.npy` cube and its `<name>.wavelengths.npy` sidecar (when `wavelengths`), or the one file of the other formats.

    Args:
        path (`str` or `os.PathLike`):
            The path given to [`save_cube`].
        format (`str`, *optional*):
            One of the keys of [`SAVE_SUFFIXES`]; inferred from the suffix when omitted.
        wavelengths (`bool`, *optional*, defaults to `True`):
            Whether wavelengths are written (only the `.npy` sidecar depends on it).
    """
    path = Path(path)
    return CUBE_FORMATS[_save_format(path, format)].writer.files(path, wavelengths)


def _save_format(path: Path, format: str | None) -> str:
    if format is None:
        suffix = path.suffix.lower()
        format = next(
            (
                name
                for name, entry in CUBE_FORMATS.items()
                if entry.writer is not None and suffix in entry.suffixes + entry.companion_suffixes
            ),
            None,
        )
        if format is None:
            raise ValueError(
                f"Cannot infer the format of {path} from its suffix; pass format= one of {sorted(SAVE_SUFFIXES)}."
            )
    format = _format_name(format)
    if format not in SAVE_SUFFIXES:
        raise ValueError(f"Unknown cube format {format!r}; choose one of {sorted(SAVE_SUFFIXES)}.")
    return format


def save_cube(
    path: str | os.PathLike,
    cube: np.ndarray,
    wavelengths: list[float] | np.ndarray | None = None,
    format: str | None = None,
    overwrite: bool = False,
    mat_version: str | None = None,
    interleave: str = "bsq",
) -> Path:
    r"""
    Writes a `(H, W, bands)` cube so that [`load_cube_with_wavelengths`] and the format's usual tools read it back.

    Formats:
        - `"npy"`: the float32 cube; the wavelengths go to a sibling `<name>.wavelengths.npy` (so that the cube stays a
          plain `np.load`-able array). Use `"npz"` for a single file holding `cube` and `wavelengths`.
        - `"h5"`: datasets `cube` `(H, W, bands)` float32 and `wavelengths` (attribute `units = "nm"`).
        - `"mat"`: variables `cube` `(H, W, bands)` single and `bands` `(1, bands)` double, as in the NTIRE files.
          MATLAB 5.0 through `scipy.io.savemat` below 2 GB, MATLAB 7.3 above: an HDF5 file with the 512-byte MATLAB
          header in its user block, axes reversed and `MATLAB_class` attributes, as MATLAB writes it.
        - `"envi"`: `<name>.hdr` + `<name>.img`, float32 little-endian, BSQ or BIL (`interleave`), with
          `wavelength = {...}` and `wavelength units = Nanometers`.
        - `"tiff"`: one multi-sample TIFF page, band-last and `planarconfig=contig` (GDAL sees one band per
          wavelength), float32, wavelengths in the JSON `ImageDescription`.

    The files are written under temporary names ([`partial_path`]) and renamed when complete, so a crash never leaves a
    partial cube under `path`. A cube computed block by block (larger than memory) is written with [`CubeWriter`],
    which makes the same files.

    Args:
        path (`str` or `os.PathLike`):
            Output file (for ENVI, the `.hdr` or `.img` path). Parent folders are created.
        cube (`np.ndarray`):
            `(H, W, bands)` array, written as float32.
        wavelengths (`list[float]` or `np.ndarray`, *optional*):
            Band centres in nm, one per band.
        format (`str`, *optional*):
            One of `"npy"`, `"npz"`, `"h5"`, `"mat"`, `"envi"`, `"tiff"` (the keys of [`SAVE_SUFFIXES`]). Inferred from
            the suffix when omitted.
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace existing files instead of raising `FileExistsError`. They are replaced once the new ones are
            complete, and a `.npy` wavelength sidecar that the new cube does not have is removed.
        mat_version (`str`, *optional*):
            `"5"` or `"7.3"` to force the MATLAB container; by default the size decides.
        interleave (`str`, *optional*, defaults to `"bsq"`):
            ENVI band interleave, `"bsq"` or `"bil"`.

    Returns:
        `Path`: the path written (the header for ENVI).
    """
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"Expected a (H, W, bands) cube, got shape {cube.shape}.")
    with CubeWriter(path, cube.shape, wavelengths, format, overwrite, mat_version, interleave) as writer:
        writer.write_rows(0, cube)
    return writer.paths[0]


class CubeWriter:
    r"""
    Writes a `(H, W, bands)` cube in blocks of rows, so that a cube can be written while it is computed without ever
    being held in memory whole. The files are those of [`save_cube`] (which uses this class).

    `.npy`, `.h5`, ENVI, TIFF and MATLAB 7.3 files are written in place, block by block. MATLAB 5.0 (`.mat` below 2 GB)
    and `.npz` files cannot be written in parts: their cube is collected in memory and written by `close`.

    Every file is written under its temporary name ([`partial_path`]) and renamed to its final name by `close`, the
    main file (the ENVI header, the `.npy` cube) last: a process killed while writing leaves only the hidden
    `.<name>.partial...` files, never a cube that reads without error but holds zeros. Leaving the `with` block through
    an exception (or calling `abort`) removes them and leaves existing files untouched.

    Args:
        path, wavelengths, format, overwrite, mat_version, interleave:
            As in [`save_cube`].
        shape (`tuple[int, int, int]`):
            `(H, W, bands)` of the whole cube.

    Attributes:
        paths (`list[Path]`): the final files, the main one first (as [`cube_file_paths`]).

    Example:

    ```py
    >>> with CubeWriter("scene.h5", (height, width, 31), wavelengths) as writer:
    ...     for top in range(0, height, 64):
    ...         writer.write_rows(top, compute_rows(top, min(top + 64, height)))  # (rows, W, 31)
    ```
    """

    def __init__(
        self,
        path: str | os.PathLike,
        shape: tuple[int, int, int],
        wavelengths: list[float] | np.ndarray | None = None,
        format: str | None = None,
        overwrite: bool = False,
        mat_version: str | None = None,
        interleave: str = "bsq",
    ):
        path = Path(path)
        if format in ("mat5", "mat73") and mat_version is None:  # the version 0.1 reader names say the version
            mat_version = "5" if format == "mat5" else "7.3"
        self.format = _save_format(path, format)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"Expected a (H, W, bands) cube, got shape {tuple(shape)}.")
        self.shape = tuple(int(size) for size in shape)
        if wavelengths is not None:
            wavelengths = np.asarray(wavelengths, dtype=np.float64).reshape(-1)
            if wavelengths.size != self.shape[-1]:
                raise ValueError(f"Got {wavelengths.size} wavelengths for a cube with {self.shape[-1]} bands.")
        if interleave not in ("bsq", "bil"):
            raise ValueError(f"interleave must be 'bsq' or 'bil', got {interleave!r}.")
        if self.format == "mat":
            mat_version = mat_version or ("5" if int(np.prod(self.shape)) * 4 <= MAT_V5_MAX_BYTES else "7.3")
            if mat_version not in ("5", "7.3"):
                raise ValueError(f"mat_version must be '5' or '7.3', got {mat_version!r}.")
        writer_class = CUBE_FORMATS[self.format].writer
        self.paths = writer_class.files(path, wavelengths is not None)
        self._overwrite = overwrite
        self._refuse_existing()
        self.paths[0].parent.mkdir(parents=True, exist_ok=True)
        self._partial_paths = writer_class.files(partial_path(self.paths[0]), wavelengths is not None)
        options = {"mat_version": mat_version, "interleave": interleave}
        self._writer = writer_class(self._partial_paths, self.shape, wavelengths, options)

    def _refuse_existing(self) -> None:
        # Every file of the format counts, also one this cube does not write (the sidecar of a .npy cube without
        # wavelengths), since the reader would pair it with the new cube.
        candidates = CUBE_FORMATS[self.format].writer.files(self.paths[0], wavelengths=True)
        existing = [str(output) for output in candidates if output.exists()]
        if existing and not self._overwrite:
            raise FileExistsError(f"{', '.join(existing)} already exists; pass overwrite=True to replace it.")

    def write_rows(self, top: int, rows: np.ndarray) -> None:
        """Writes `rows` `(n, W, bands)` as rows `top` to `top + n` of the cube."""
        height, width, bands = self.shape
        rows = np.asarray(rows)
        if rows.ndim != 3 or rows.shape[1:] != (width, bands) or not 0 <= top <= height - rows.shape[0]:
            raise ValueError(f"Rows of shape {rows.shape} at row {top} do not fit a cube of shape {self.shape}.")
        if self._writer is None:
            raise ValueError("The writer is closed.")
        self._writer.write_rows(top, rows.astype(np.float32, copy=False))

    def close(self) -> None:
        """Finishes the files (writes the in-memory formats) and renames them to their final names."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        try:
            writer.close()
            self._refuse_existing()  # a file that appeared meanwhile is not replaced without overwrite
        except BaseException:
            self._remove_partial_files()
            raise
        # Companions first, the main file last: once the main file has its final name, the cube is complete.
        for partial, final in zip(self._partial_paths[1:], self.paths[1:]):
            os.replace(partial, final)
        for stale in set(type(writer).files(self.paths[0], wavelengths=True)) - set(self.paths):
            stale.unlink(missing_ok=True)  # only with overwrite: the sidecar of a replaced .npy that had wavelengths
        os.replace(self._partial_paths[0], self.paths[0])

    def abort(self) -> None:
        """Closes and removes the files written so far; existing files under the final names are left untouched."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self._remove_partial_files()

    def _remove_partial_files(self) -> None:
        for path in self._partial_paths:
            path.unlink(missing_ok=True)

    def __enter__(self) -> "CubeWriter":
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            self.close()
        else:
            self.abort()


# Writers of the formats: each writes float32 rows into the files it is given (the temporary names of CubeWriter).


class _FileWriter:
    r"""
    The base of a format's writer in [`CUBE_FORMATS`].

    Args:
        paths (`list[Path]`): the files to write, the main one first, as `files` lists them.
        shape (`tuple[int, int, int]`): `(H, W, bands)`.
        wavelengths (`np.ndarray` or `None`): float64 band centres in nm.
        options (`dict`): `mat_version` and `interleave`, checked by [`CubeWriter`].
    """

    def __init__(self, paths: list[Path], shape: tuple[int, int, int], wavelengths: np.ndarray | None, options: dict):
        self.paths, self.shape, self.wavelengths = paths, shape, wavelengths
        self.file = None

    @staticmethod
    def files(path: Path, wavelengths: bool) -> list[Path]:
        """Every file written for `path`, the main one first."""
        return [path]

    def write_rows(self, top: int, rows: np.ndarray) -> None:
        """Writes float32 `rows` `(n, W, bands)` at row `top`."""
        raise NotImplementedError

    def write_at(self, offset: int, rows: np.ndarray) -> None:
        self.file.seek(offset)
        self.file.write(np.ascontiguousarray(rows, dtype="<f4"))

    def close(self) -> None:
        """Completes the files."""
        if self.file is not None:
            self.file.close()
            self.file = None

    def abort(self) -> None:
        """Releases the files without completing them."""
        if self.file is not None:
            self.file.close()
            self.file = None


class _NpyWriter(_FileWriter):
    @staticmethod
    def files(path: Path, wavelengths: bool) -> list[Path]:
        return [path, _npy_sidecar(path)] if wavelengths else [path]

    def __init__(self, paths, shape, wavelengths, options):
        super().__init__(paths, shape, wavelengths, options)
        self.file = open(paths[0], "wb")
        np.lib.format.write_array_header_1_0(self.file, {"descr": "<f4", "fortran_order": False, "shape": shape})
        self.offset = self.file.tell()
        self.file.truncate(self.offset + int(np.prod(shape)) * 4)
        if wavelengths is not None:
            np.save(paths[1], wavelengths)

    def write_rows(self, top, rows):
        self.write_at(self.offset + top * self.shape[1] * self.shape[2] * 4, rows)


class _NpzWriter(_FileWriter):
    # A zip member cannot be written in parts: the cube is collected in memory and written by `close`.
    def __init__(self, paths, shape, wavelengths, options):
        super().__init__(paths, shape, wavelengths, options)
        self.cube = np.empty(shape, dtype=np.float32)

    def write_rows(self, top, rows):
        self.cube[top : top + len(rows)] = rows

    def close(self):
        arrays = (
            {"cube": self.cube} if self.wavelengths is None else {"cube": self.cube, "wavelengths": self.wavelengths}
        )
        with open(self.paths[0], "wb") as file:
            np.savez(file, **arrays)
        self.cube = None

    def abort(self):
        self.cube = None


class _H5Writer(_FileWriter):
    def __init__(self, paths, shape, wavelengths, options):
        import h5py

        super().__init__(paths, shape, wavelengths, options)
        self.file = h5py.File(paths[0], "w")
        self.dataset = self.file.create_dataset("cube", shape=shape, dtype=np.float32)
        self.dataset.attrs["layout"] = "(H, W, bands)"
        if wavelengths is not None:
            self.file.create_dataset("wavelengths", data=wavelengths)
            self.file["wavelengths"].attrs["units"] = "nm"

    def write_rows(self, top, rows):
        self.dataset[top : top + len(rows)] = rows


class _MatWriter(_FileWriter):
    # MATLAB 5.0 (scipy.io.savemat) cannot be written in parts: its cube is collected in memory. MATLAB 7.3 is HDF5,
    # written as MATLAB does: column-major (axes reversed), MATLAB_class attributes, the header in the user block.
    def __init__(self, paths, shape, wavelengths, options):
        super().__init__(paths, shape, wavelengths, options)
        self.cube = None
        if options["mat_version"] == "5":
            self.cube = np.empty(shape, dtype=np.float32)
            return
        import h5py

        self.file = h5py.File(paths[0], "w", userblock_size=512)
        self.dataset = self.file.create_dataset("cube", shape=shape[::-1], dtype=np.float32)  # (bands, W, H)
        self.dataset.attrs["MATLAB_class"] = np.bytes_("single")
        if wavelengths is not None:
            self.file.create_dataset("bands", data=wavelengths[:, None])  # MATLAB 1 x bands
            self.file["bands"].attrs["MATLAB_class"] = np.bytes_("double")

    def write_rows(self, top, rows):
        if self.cube is not None:
            self.cube[top : top + len(rows)] = rows
        else:
            self.dataset[:, :, top : top + len(rows)] = rows.transpose(2, 1, 0)

    def close(self):
        if self.cube is not None:
            import scipy.io

            variables = {"cube": self.cube}
            if self.wavelengths is not None:
                variables["bands"] = self.wavelengths[None, :]  # a 1 x bands row, as in the NTIRE 2020 files
            scipy.io.savemat(self.paths[0], variables, do_compression=False)
            self.cube = None
        else:
            super().close()
            _write_mat73_header(self.paths[0])

    def abort(self):
        self.cube = None
        super().abort()


class _EnviWriter(_FileWriter):
    @staticmethod
    def files(path: Path, wavelengths: bool) -> list[Path]:
        base = path.with_suffix("") if path.suffix.lower() in (".hdr", ".img") else path
        return [Path(str(base) + ".hdr"), Path(str(base) + ".img")]

    def __init__(self, paths, shape, wavelengths, options):
        super().__init__(paths, shape, wavelengths, options)
        self.interleave = options["interleave"]
        height, width, bands = shape
        lines = [
            "ENVI",
            "description = {hyperspectral cube written by hsr-diffusers}",
            f"samples = {width}",
            f"lines = {height}",
            f"bands = {bands}",
            "header offset = 0",
            "file type = ENVI Standard",
            "data type = 4",
            f"interleave = {self.interleave}",
            "byte order = 0",
        ]
        if wavelengths is not None:
            values = ", ".join(f"{w:g}" for w in wavelengths)
            lines += ["wavelength units = Nanometers", "wavelength = {" + values + "}"]
        paths[0].write_text("\n".join(lines) + "\n")
        self.file = open(paths[1], "wb")
        self.file.truncate(height * width * bands * 4)

    def write_rows(self, top, rows):
        height, width, bands = self.shape
        if self.interleave == "bsq":
            for band in range(bands):  # (bands, H, W): one run of rows per band plane
                self.write_at((band * height + top) * width * 4, rows[..., band])
        else:  # BIL: (H, bands, W), whole rows one after the other
            self.write_at(top * width * bands * 4, rows.transpose(0, 2, 1))


class _TiffWriter(_FileWriter):
    def __init__(self, paths, shape, wavelengths, options):
        import tifffile

        super().__init__(paths, shape, wavelengths, options)
        description = {"shape": list(shape), "axes": "YXS (H, W, bands)"}
        if wavelengths is not None:
            description.update(wavelengths=wavelengths.tolist(), wavelength_units="nm")
        # An uncompressed page with its samples in one contiguous run; metadata=None stops tifffile from writing its
        # own JSON description over ours.
        memmap = tifffile.memmap(
            paths[0],
            shape=shape,
            dtype="<f4",
            photometric="minisblack",
            planarconfig="contig",
            description=json.dumps(description),
            metadata=None,
        )
        self.offset = memmap.offset
        del memmap
        self.file = open(paths[0], "r+b")

    def write_rows(self, top, rows):
        self.write_at(self.offset + top * self.shape[1] * self.shape[2] * 4, rows)


def _write_mat73_header(path: Path) -> None:
    # MATLAB's header: 116 bytes of text, 8 bytes of subsystem offset, version 0x0200 and the endian mark "IM".
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {time.asctime()} HDF5 schema 1.00 ."
    header = text.encode("ascii").ljust(116, b" ")[:116] + b"\x00" * 8 + (0x0200).to_bytes(2, "little") + b"IM"
    with open(path, "r+b") as file:
        file.write(header.ljust(512, b"\x00"))


# ----------------------------------------------------------------------------------------------------------------------
# The format registry
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CubeFormat:
    r"""
    One cube format of [`CUBE_FORMATS`]: how it is recognised, read and written.

    Args:
        label (`str`): what people call it, for messages and menus.
        suffixes (`tuple[str, ...]`): suffixes of its (main) files; the first is the one [`save_cube`] gives.
        sniff (`Callable[[Path, bytes], bool]`): whether a file is in this format, from its first 520 bytes (and the
            path, for formats recognised by a sibling file, or a folder).
        reader (`Callable[[Path, str | None], tuple[np.ndarray, np.ndarray | None]]`): `(path, key)` to the cube, as
            stored, and its wavelengths (or `None`); [`load_cube_with_wavelengths`] checks and converts both.
        writer (`type`, *optional*): the class that writes it row block by row block (`None`: read only).
        companion_suffixes (`tuple[str, ...]`, *optional*): suffixes of its other files (ENVI `.img`). A path with one
            names the format for [`save_cube`], but folder scans ([`CUBE_SUFFIXES`]) skip them, counting each cube once.
        old_names (`tuple[str, ...]`, *optional*): names the format had in version 0.1, accepted with a `FutureWarning`.
    """

    label: str
    suffixes: tuple[str, ...]
    sniff: Callable[[Path, bytes], bool]
    reader: Callable[[Path, str | None], tuple[np.ndarray, np.ndarray | None]]
    writer: type | None = None
    companion_suffixes: tuple[str, ...] = ()
    old_names: tuple[str, ...] = ()


# Tried in this order by `detect_format`: MATLAB 7.3 files are HDF5 files too, and an ENVI data file is recognised by
# the header beside it, so both come before the formats they could be mistaken for.
CUBE_FORMATS: dict[str, CubeFormat] = {
    "cave": CubeFormat("CAVE folder of PNG bands", (), lambda path, head: path.is_dir(), _read_cave),
    "mat": CubeFormat(
        "MATLAB .mat (v5 or v7.3)",
        (".mat",),
        lambda path, head: head.startswith((_MAT5_MAGIC, _MAT73_MAGIC)),
        _read_mat,
        _MatWriter,
        old_names=("mat5", "mat73"),
    ),
    "h5": CubeFormat(
        "HDF5 .h5",
        (".h5", ".hdf5"),
        lambda path, head: head.startswith(_HDF5_MAGIC) or head[512:520] == _HDF5_MAGIC,
        _read_hdf5,
        _H5Writer,
        old_names=("hdf5",),
    ),
    "npy": CubeFormat("numpy .npy", (".npy",), lambda path, head: head.startswith(_NPY_MAGIC), _read_npy, _NpyWriter),
    "npz": CubeFormat("numpy .npz", (".npz",), lambda path, head: head.startswith(_ZIP_MAGIC), _read_npz, _NpzWriter),
    "tiff": CubeFormat(
        "TIFF", (".tif", ".tiff"), lambda path, head: head[:4] in _TIFF_MAGICS, _read_tiff, _TiffWriter
    ),
    "envi": CubeFormat(
        "ENVI .hdr + .img",
        (".hdr",),
        lambda path, head: head.startswith(_ENVI_MAGIC) or _envi_header_for(path) is not None,
        _read_envi,
        _EnviWriter,
        companion_suffixes=(".img",),
    ),
}
# Suffixes that the dataset builder and `hsr data` treat as cube files (the content decides the reader).
CUBE_SUFFIXES = tuple(suffix for entry in CUBE_FORMATS.values() for suffix in entry.suffixes)
# The suffix that `save_cube` gives each format it writes (ENVI: the header; its data file is `.img`).
SAVE_SUFFIXES = {name: entry.suffixes[0] for name, entry in sorted(CUBE_FORMATS.items()) if entry.writer is not None}
