"""🤗 datasets on disk for hyperspectral cubes, and a bounded-memory patch dataset for training.

[`build_dataset`] turns a folder of cubes (ARAD, ICVL, CAVE or any format [`load_cube`] reads) into a
`datasets.DatasetDict`, one split per official scene list, written with `save_to_disk` and ready for `push_to_hub`.
It reads and writes one scene at a time, so it holds about one cube in memory whatever the number of scenes. Each row
has the columns

- `name` (`string`): the scene name (file stem; CAVE folders lose their `_ms` suffix),
- `cube` (`large_list<float32>`): the `(H, W, bands)` cube flattened in C order (scenes may differ in size, which a
  fixed-shape `Array3D` column cannot hold; a flat float32 column is also what makes zero-copy reads possible),
- `shape` (`int32[3]`): `(H, W, bands)`,
- `wavelengths` (`list<float32>`): band centres in nm,
- `source` (`string`): the file or folder the scene came from, relative to the source folder,
- `rgb` (`Image`, only when an RGB folder was paired): the RGB image shipped with the scene (e.g. ARAD's
  `*_clean.png`), stored as the original file bytes.

[`get_cube`] returns one scene as a read-only numpy view of the memory-mapped Arrow file, and [`PatchDataset`] reads
only the rows of a random crop straight from that file, so training memory does not grow with the number of scenes.
"""

import io
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.utils import tqdm as hf_tqdm

from hsr_diffusers.data.degradation import PhotoDegradation, Relighting
from hsr_diffusers.data.io import CUBE_SUFFIXES, CubeFormatError, find_cave_band_files, load_cube_with_wavelengths
from hsr_diffusers.data.splits import get_split


__all__ = [
    "DATASET_FORMATS",
    "EXPOSURE_MODES",
    "METADATA_FILE",
    "DatasetBuildError",
    "PatchDataset",
    "build_dataset",
    "dataset_features",
    "get_cube",
    "read_metadata",
]

logger = logging.getLogger(__name__)

DATASET_FORMATS = ("arad", "icvl", "cave", "folder")
# Written next to `dataset_dict.json`: how the dataset was built and what was skipped (read by `hsr data info`).
METADATA_FILE = "hsr_data.json"
# How `PatchDataset` sets a patch's level: "none" keeps the stored values; "rgb_max" scales each patch so that its
# clean linear RGB peaks at a random level (a camera's auto-exposure, which sees only the image, never the spectra);
# "scene_rgb_max" scales the whole scene that way, so that dark patches stay dark.
EXPOSURE_MODES = ("none", "rgb_max", "scene_rgb_max")
_RGB_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_DESCRIPTION = (
    "Hyperspectral cubes, one scene per row. `cube` holds the (H, W, bands) float32 cube flattened in C order: "
    "np.asarray(row['cube'], dtype=np.float32).reshape(row['shape']). `wavelengths` are band centres in nm."
)


class DatasetBuildError(RuntimeError):
    """Raised by [`build_dataset`] when scenes failed to load and `skip_bad=False`; `failures` lists `(path, reason)`."""

    def __init__(self, message: str, failures: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.failures = failures or []


def dataset_features(with_rgb: bool = False) -> datasets.Features:
    """The features of a dataset written by [`build_dataset`]."""
    features = {
        "name": datasets.Value("string"),
        "cube": datasets.LargeList(datasets.Value("float32")),
        "shape": datasets.List(datasets.Value("int32"), length=3),
        "wavelengths": datasets.List(datasets.Value("float32")),
        "source": datasets.Value("string"),
    }
    if with_rgb:
        features["rgb"] = datasets.Image()
    return datasets.Features(features)


def read_metadata(path: str | os.PathLike) -> dict:
    """The build record ([`METADATA_FILE`]) of a dataset folder written by [`build_dataset`], or `{}`."""
    metadata = Path(path) / METADATA_FILE
    return json.loads(metadata.read_text()) if metadata.is_file() else {}


# ----------------------------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class _SplitStats:
    scenes: list[str] = field(default_factory=list)
    shapes: list[list[int]] = field(default_factory=list)
    min: float = float("inf")
    max: float = float("-inf")

    def add(self, name: str, cube: np.ndarray) -> None:
        self.scenes.append(name)
        if list(cube.shape) not in self.shapes:
            self.shapes.append(list(cube.shape))
        self.min = min(self.min, float(cube.min()))
        self.max = max(self.max, float(cube.max()))

    def to_dict(self) -> dict:
        return {
            "num_scenes": len(self.scenes),
            "shapes": self.shapes,
            "min": self.min,
            "max": self.max,
            "scenes": self.scenes,
        }


def _scan_sources(src: Path, format: str) -> list[tuple[str, Path]]:
    """`(scene name, path)` of every candidate scene under `src`, sorted by path."""
    if format == "cave":
        found = []
        for directory, _subdirs, files in os.walk(src):
            if any(name.lower().endswith(".png") for name in files):
                try:
                    bands = find_cave_band_files(directory)
                except CubeFormatError:
                    continue
                if bands[0].parent == Path(directory):  # the nested layout is found at its inner folder
                    prefix = bands[0].name.rsplit("_", 1)[0]
                    name = prefix[: -len("_ms")] if prefix.endswith("_ms") else prefix
                    found.append((name, Path(directory)))
        return sorted(found, key=lambda item: str(item[1]))
    suffixes = (".mat",) if format in ("arad", "icvl") else CUBE_SUFFIXES
    files = [
        path
        for path in src.rglob("*")
        if path.is_file()
        and path.suffix.lower() in suffixes
        and not path.name.endswith(".wavelengths.npy")  # the wavelengths of a .npy cube
        and not any(part.startswith(".") for part in path.relative_to(src).parts)  # e.g. macOS `._*` files
    ]
    return [(path.stem, path) for path in sorted(files)]


def _index_rgb(rgb_dir: Path) -> dict[str, Path]:
    return {path.stem: path for path in sorted(rgb_dir.rglob("*")) if path.suffix.lower() in _RGB_SUFFIXES}


def _find_rgb(name: str, rgb_index: dict[str, Path]) -> Path | None:
    """The RGB of scene `name`: `name.*`, else `name_clean.*` (NTIRE 2020 clean track), else any `name_*`."""
    for stem in (name, f"{name}_clean"):
        if stem in rgb_index:
            return rgb_index[stem]
    return next((path for stem, path in rgb_index.items() if stem.startswith(f"{name}_")), None)


def build_dataset(
    src: str | os.PathLike,
    output_dir: str | os.PathLike,
    format: str = "folder",
    split: str | dict[str, list[str]] | None = None,
    response: str | None = None,
    rgb_dir: str | os.PathLike | None = None,
    key: str | None = None,
    expected_bands: int | None = None,
    wavelengths: list[float] | None = None,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> datasets.DatasetDict:
    r"""
    Turns a folder of cubes into a `datasets.DatasetDict` saved with `save_to_disk`, one scene per row.

    Cubes are loaded and written one at a time (straight to Arrow record batches), so memory stays at about one cube.
    Scenes that fail to load are collected with the reason; unless `skip_bad=True` nothing is written and a
    [`DatasetBuildError`] lists them all. What was skipped, which split scenes were not found and which files are in no
    split is recorded in `output_dir/hsr_data.json` (see [`read_metadata`]).

    Args:
        src (`str` or `os.PathLike`):
            Folder searched recursively for scenes.
        output_dir (`str` or `os.PathLike`):
            Where the `DatasetDict` is saved. Must not exist or be empty, unless `overwrite=True` and it holds a dataset.
        format (`str`, *optional*, defaults to `"folder"`):
            `"arad"`: `.mat` files with a `cube` variable (NTIRE 2020/2022). `"icvl"`: `.mat` files with `rad` (scaled
            by 1/4095). `"cave"`: CAVE scene folders of PNG bands (flat or nested). `"folder"`: any file
            [`load_cube`] reads (`.mat`, `.h5`, `.npy`, `.npz`, ENVI `.hdr`, TIFF).
        split (`str` or `dict[str, list[str]]`, *optional*):
            A built-in split name (see [`get_split`]: `"ntire2020"`, `"ntire2022"`, `"cave"`, ...) or
            `{split: [scene names]}`. Defaults to every scene in a `"train"` split.
        response (`str`, *optional*):
            The camera response that RGB should be rendered with when a row has no paired RGB; recorded in the
            metadata and used by [`PatchDataset`] as its default. Checked against the cube's wavelengths.
        rgb_dir (`str` or `os.PathLike`, *optional*):
            Folder of RGB images to pair by scene name (`<name>.png|jpg`, `<name>_clean.png`, `<name>_*.jpg`).
        key (`str`, *optional*):
            Variable holding the cube, see [`load_cube`]. Defaults to `"cube"` for `"arad"` and `"rad"` for `"icvl"`.
        expected_bands (`int`, *optional*):
            Band count every cube must have; defaults to the first cube's.
        wavelengths (`list[float]`, *optional*):
            Band centres for files that store none. Defaults to 400, 410, ..., 700 nm for 31-band cubes.
        skip_bad (`bool`, *optional*, defaults to `False`):
            Write the dataset without the scenes that failed (they are listed in the metadata and logged).
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace an existing dataset in `output_dir`.

    Returns:
        `datasets.DatasetDict`: the saved dataset, loaded back (memory-mapped) with `datasets.load_from_disk`.
    """
    src, output_dir = Path(src), Path(output_dir)
    created = not output_dir.exists()
    if format not in DATASET_FORMATS:
        raise ValueError(f"Unknown dataset format {format!r}; choose one of {DATASET_FORMATS}.")
    if not src.is_dir():
        raise FileNotFoundError(f"Source folder not found: {src}")
    if output_dir.exists() and any(output_dir.iterdir()):
        is_dataset = (output_dir / METADATA_FILE).is_file() or (output_dir / "dataset_dict.json").is_file()
        if not overwrite:
            raise FileExistsError(f"{output_dir} is not empty; pass overwrite=True to replace a dataset there.")
        if not is_dataset:
            raise FileExistsError(f"{output_dir} is not empty and holds no dataset; refusing to replace it.")
        shutil.rmtree(output_dir)
        created = True
    key = key or {"arad": "cube", "icvl": "rad"}.get(format)
    split_name = split if isinstance(split, str) else None
    splits = {"train": None} if split is None else get_split(split) if isinstance(split, str) else dict(split)

    # 1. Find the scenes and assign them to splits.
    failures: list[tuple[str, str]] = []
    scenes: dict[str, Path] = {}
    for name, path in _scan_sources(src, format):
        if name in scenes:
            failures.append((str(path), f"duplicate scene name {name!r} (also {scenes[name]})"))
        else:
            scenes[name] = path
    if not scenes:
        raise DatasetBuildError(f"No {format} scenes found in {src}.")
    if splits == {"train": None}:
        splits = {"train": sorted(scenes)}
    listed = {name for names in splits.values() for name in names}
    missing = {split: [name for name in names if name not in scenes] for split, names in splits.items()}
    missing = {split: names for split, names in missing.items() if names}
    unlisted = sorted(name for name in scenes if name not in listed)
    rgb_index = _index_rgb(Path(rgb_dir)) if rgb_dir is not None else None
    features = dataset_features(with_rgb=rgb_index is not None)
    schema = features.arrow_schema

    # 2. Write each split as an Arrow stream, one record batch per scene.
    tmp_dir = output_dir / ".build"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    stats: dict[str, _SplitStats] = {}
    reference_wavelengths = None
    try:
        for split_key, names in splits.items():
            split_stats = _SplitStats()
            with (
                pa.OSFile(str(tmp_dir / f"{split_key}.arrow"), "wb") as sink,
                pa.ipc.new_stream(sink, schema) as writer,
            ):
                present = [name for name in names if name in scenes]
                for name in hf_tqdm(present, desc=f"Reading {split_key} scenes", unit="scene"):
                    path = scenes[name]
                    try:
                        cube, stored = load_cube_with_wavelengths(path, key=key, expected_bands=expected_bands)
                        expected_bands = cube.shape[-1]
                        scene_wavelengths = _resolve_wavelengths(path, cube, stored, wavelengths)
                        if reference_wavelengths is None:
                            reference_wavelengths = scene_wavelengths
                            if response is not None:
                                from hsr_diffusers.spectral import load_response

                                load_response(response, reference_wavelengths)  # fail early on a bad response
                        elif not np.allclose(scene_wavelengths, reference_wavelengths, atol=0.5):
                            raise CubeFormatError(
                                f"{path}: wavelengths {scene_wavelengths.tolist()} differ from the dataset's "
                                f"{reference_wavelengths.tolist()}."
                            )
                        rgb = _load_rgb(path, name, cube, rgb_index) if rgb_index is not None else None
                    except CubeFormatError as error:
                        failures.append((str(path), str(error)))
                        continue
                    source = path.relative_to(src).as_posix() if path != src else path.name
                    writer.write_batch(_scene_batch(schema, name, cube, scene_wavelengths, source, rgb))
                    split_stats.add(name, cube)
                    del cube
            stats[split_key] = split_stats

        if failures and not skip_bad:
            raise DatasetBuildError(
                f"{len(failures)} scene(s) failed to load; nothing was written (pass skip_bad=True to write the "
                "others):\n" + "\n".join(f"  {path}: {reason}" for path, reason in failures),
                failures,
            )
        if failures:
            logger.warning("Skipped %d scene(s): %s", len(failures), "; ".join(f"{p}: {r}" for p, r in failures))
        written = {split_key: stat for split_key, stat in stats.items() if stat.scenes}
        if not written:
            raise DatasetBuildError(f"No scene of {src} could be written.", failures)

        # 3. Save as a DatasetDict (save_to_disk copies the streams into its shard layout).
        info = datasets.DatasetInfo(description=_DESCRIPTION, features=features)
        dataset_dict = datasets.DatasetDict(
            {
                split_key: datasets.Dataset.from_file(str(tmp_dir / f"{split_key}.arrow"), info=info, split=split_key)
                for split_key in written
            }
        )
        dataset_dict.save_to_disk(str(output_dir))
        del dataset_dict
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if created:
            shutil.rmtree(output_dir, ignore_errors=True)
        raise
    shutil.rmtree(tmp_dir, ignore_errors=True)

    metadata = {
        "format": format,
        "source": str(src),
        "split": split_name,
        "response": response,
        "rgb_dir": None if rgb_dir is None else str(rgb_dir),
        "wavelengths": None if reference_wavelengths is None else reference_wavelengths.tolist(),
        "splits": {split_key: stat.to_dict() for split_key, stat in written.items()},
        "skipped": [{"path": path, "reason": reason} for path, reason in failures],
        "missing": missing,
        "unlisted": unlisted,
    }
    (output_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return datasets.load_from_disk(str(output_dir))


def _resolve_wavelengths(
    path: Path, cube: np.ndarray, stored: np.ndarray | None, default: list[float] | None
) -> np.ndarray:
    if stored is not None:
        return stored
    if default is not None:
        if len(default) != cube.shape[-1]:
            raise CubeFormatError(f"{path}: {cube.shape[-1]} bands but {len(default)} wavelengths were given.")
        return np.asarray(default, dtype=np.float64)
    if cube.shape[-1] == 31:
        return 400.0 + 10.0 * np.arange(31)  # the NTIRE / CAVE / ICVL band set
    raise CubeFormatError(f"{path}: stores no wavelengths for its {cube.shape[-1]} bands; pass wavelengths=[...].")


def _load_rgb(path: Path, name: str, cube: np.ndarray, rgb_index: dict[str, Path]) -> tuple[bytes, str]:
    from PIL import Image

    rgb_path = _find_rgb(name, rgb_index)
    if rgb_path is None:
        raise CubeFormatError(f"{path}: no RGB image named {name}.png/.jpg or {name}_*.png/.jpg in the RGB folder.")
    data = rgb_path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except OSError as error:
        raise CubeFormatError(f"{rgb_path}: cannot read the RGB image ({error}).") from error
    if (height, width) != cube.shape[:2]:
        raise CubeFormatError(f"{rgb_path}: RGB size {(height, width)} differs from the cube's {cube.shape[:2]}.")
    return data, rgb_path.name


def _scene_batch(
    schema: pa.Schema,
    name: str,
    cube: np.ndarray,
    wavelengths: np.ndarray,
    source: str,
    rgb: tuple[bytes, str] | None,
) -> pa.RecordBatch:
    values = pa.array(cube.reshape(-1))  # zero-copy wrap of the float32 buffer
    columns = {
        "name": pa.array([name]),
        "cube": pa.LargeListArray.from_arrays(pa.array([0, len(values)], pa.int64()), values),
        "shape": pa.array([list(cube.shape)], schema.field("shape").type),
        "wavelengths": pa.array([wavelengths.astype(np.float32).tolist()], schema.field("wavelengths").type),
        "source": pa.array([source]),
    }
    if "rgb" in schema.names:
        columns["rgb"] = pa.array([{"bytes": rgb[0], "path": rgb[1]}], schema.field("rgb").type)
    return pa.RecordBatch.from_arrays([columns[name] for name in schema.names], schema=schema)


# ----------------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------------


def _first_chunk(column: pa.ChunkedArray) -> pa.Array:
    return next(chunk for chunk in column.chunks if len(chunk))


def get_cube(dataset: datasets.Dataset, index: int) -> np.ndarray:
    r"""
    One scene of a dataset written by [`build_dataset`], as a zero-copy view.

    For a dataset loaded with `datasets.load_from_disk`, the array points into the memory-mapped Arrow file: only the
    pages that are read (for instance by a crop) are loaded, and nothing is copied.

    Args:
        dataset (`datasets.Dataset`):
            One split.
        index (`int`):
            Row index.

    Returns:
        `np.ndarray`: read-only `(H, W, bands)` float32 array.
    """
    row = dataset.with_format("arrow")[index]  # a one-row slice of the (memory-mapped) table
    values = _first_chunk(row.column("cube")).flatten()
    shape = _first_chunk(row.column("shape"))[0].as_py()
    return values.to_numpy(zero_copy_only=True).reshape(shape)


def _rgb_bytes(dataset: datasets.Dataset, index: int) -> bytes | None:
    if "rgb" not in dataset.column_names:
        return None
    value = _first_chunk(dataset.with_format("arrow")[index].column("rgb"))[0]
    return None if not value.is_valid else value["bytes"].as_py()


def get_paired_rgb(dataset: datasets.Dataset, index: int) -> np.ndarray | None:
    """The paired RGB image of row `index` (given to `hsr data prepare --rgb-dir`) as `(H, W, 3)` uint8, or None."""
    return PatchDataset._decode(_rgb_bytes(dataset, index))


class _ArrowCubeIndex:
    """Byte offsets of every cube (and RGB) inside the Arrow files of a dataset, for reads without memory-mapping.

    A memory-mapped crop is fast but its pages stay in the process's resident set until the kernel needs them back,
    so iterating crops over many scenes makes RSS look like the whole dataset. Reading the crop's rows with plain
    file reads keeps the process at one patch; the page cache still serves repeated reads.
    """

    def __init__(self, filenames: list[str]):
        self.filenames = filenames
        rows = []
        for file_id, filename in enumerate(filenames):
            rows.extend((file_id, *row) for row in self._scan(filename))
        # [file id, cube offset, RGB offset, RGB length (-1: none)]
        self.rows = np.array(rows, dtype=np.int64).reshape(-1, 4)

    @staticmethod
    def _scan(filename: str) -> list[tuple[int, int, int]]:
        """`(cube offset, RGB offset, RGB length)` of each row of one Arrow file."""
        rows = []
        # Buffers read from a memory map point into it, so `address - base` is their position in the file.
        with pa.memory_map(filename) as source:
            base = source.read_buffer(1).address
            source.seek(0)
            try:
                batches = list(pa.ipc.open_stream(source))
            except pa.ArrowInvalid:  # the random-access file format instead of datasets' stream format
                reader = pa.ipc.open_file(source)
                batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
            for batch in batches:
                cubes = batch.column("cube")
                values = cubes.values  # the child array, ignoring the parent's offset (`offsets` carry it)
                start = values.buffers()[1].address - base + values.offset * 4
                offsets = cubes.offsets.to_numpy()
                rgbs = batch.column("rgb") if "rgb" in batch.schema.names else None
                if rgbs is not None:
                    # `flatten` applies the struct's offset; the binary child keeps its own in `.offset`.
                    images = rgbs.flatten()[rgbs.type.get_field_index("bytes")]
                    _, image_offsets, image_data = images.buffers()
                    image_offsets = np.frombuffer(image_offsets, dtype=np.int32)[images.offset :]
                for j in range(batch.num_rows):
                    rgb_offset, rgb_length = 0, -1
                    if rgbs is not None and rgbs[j].is_valid:
                        rgb_offset = image_data.address - base + int(image_offsets[j])
                        rgb_length = int(image_offsets[j + 1] - image_offsets[j])
                    rows.append((start + int(offsets[j]) * 4, rgb_offset, rgb_length))
        return rows


class PatchDataset(torch.utils.data.Dataset):
    r"""
    Random paired (RGB, cube) patches from a dataset written by [`build_dataset`], as `[-1, 1]` tensors.

    A map-style dataset of `sum(patches_per_scene)` items, so that accelerate can shard it and resume by skipping
    batches. Item `i` reads only one scene (the first `patches_per_scene[0]` items the first scene, and so on), and from
    it only the rows of one random crop; the crop, the flip and the 90° rotation are drawn from `(seed, epoch, i)`, so
    an item is the same wherever and whenever it is read (call [`set_epoch`] to draw new crops). When the row has a
    paired RGB image it is cropped alongside; otherwise the RGB is rendered from the cube patch with
    `hsr_diffusers.spectral.render_rgb`.

    With `stack_thin_scenes`, scenes thinner than `patch_size` (the ICVL strips, 8-11 lines) give patches stacked from
    several random crops of the scene's full height (or width), cut to `patch_size`: every pixel of the patch is a real (RGB, spectrum) pair,
    none is repeated or padded, so the loss weighs real data only and the networks get the square patches they take.
    The seams between crops are edges in RGB and cube alike.

    For each patch without a paired RGB, in this order: the optional `relighting` turns reflectance into radiance
    under a drawn light (for rows where `relight_scenes` is set), the optional `exposure` scales the patch from its own
    clean RGB (never from a statistic of the spectra alone), then the RGB is rendered (`degradation` or `rgb_mode`).

    Args:
        dataset (`datasets.Dataset`, `str` or `os.PathLike`):
            One split, or the folder written by [`build_dataset`] (then `split` picks the split and the recorded
            response becomes the default).
        patch_size (`int`, *optional*, defaults to 64):
            Side of the square crops; at most the smallest scene side unless `stack_thin_scenes` is set.
        patches_per_scene (`int` or `list[int]`, *optional*, defaults to 1):
            Crops per scene and epoch, one number for all scenes or one per scene (how a mix of sources is weighted,
            see [`source_patch_counts`]). A scene with 0 is never read.
        response (`str` or `np.ndarray`, *optional*):
            Response used to render RGB for rows without a paired RGB (any name or array
            `hsr_diffusers.spectral.load_response` accepts). Defaults to the dataset's recorded response, else
            `"cie1964_ntire2020"`.
        rgb_mode (`str`, *optional*, defaults to `"ntire2020_clean"`):
            `render_rgb` mode: `"ntire2020_clean"` (8-bit, as the challenge), `"linear"` or `"real_world"`.
        seed (`int`, *optional*, defaults to 0):
            Seed of the crops, augmentations and `"real_world"` noise.
        augment (`bool`, *optional*, defaults to `True`):
            Random 90° rotations and flips (all 8 symmetries of the square).
        in_memory (`bool`, *optional*, defaults to `False`):
            Load every cube into RAM up front. Faster per item but memory grows with the dataset: the baseline that the
            streaming reads are measured against.
        split (`str`, *optional*, defaults to `"train"`):
            Split to read when `dataset` is a folder.
        degradation (`PhotoDegradation`, *optional*):
            Renders RGB the way a photo is made (camera, noise, mosaic, JPEG; see
            `hsr_diffusers.data.degradation`), drawn per item from `(seed, epoch, i)`, instead of `rgb_mode`. Rows with a
            paired RGB image keep it.
        relighting (`Relighting`, *optional*):
            Renders reflectance patches as radiance under an illuminant drawn per item from `(seed, epoch, i)` (see
            `hsr_diffusers.data.degradation.Relighting`).
        relight_scenes (`list[bool]`, *optional*):
            Which scenes hold reflectance and are relit (a mix of CAVE reflectance and ICVL radiance relights only
            CAVE). Defaults to every scene when `relighting` is given.
        exposure (`str`, *optional*, defaults to `"none"`):
            `"none"` keeps the stored level. `"rgb_max"` scales each patch (cube and RGB together) so that the maximum of
            its clean linear RGB over pixels and channels is a level drawn log-uniformly in `exposure_range`, as an
            auto-exposure that sees only the image would: natural radiance (ICVL strips span a factor of ten in level)
            and relit reflectance then reach the network at the levels of photos. Per patch, near-black patches (CAVE's
            dark backgrounds, mostly noise) are lifted to the level of bright ones. `"scene_rgb_max"` draws the level the
            same way but for the scene's RGB maximum (its stored scene, before relighting), so that each patch keeps its
            brightness within the scene, as in a photo of the whole scene.
        exposure_range (`tuple[float, float]`, *optional*, defaults to `(0.25, 1.0)`):
            Range of the RGB peak level for `exposure="rgb_max"` and `"scene_rgb_max"`.
        stack_thin_scenes (`bool`, *optional*, defaults to `False`):
            Accept scenes thinner than `patch_size` and stack several crops of them into each patch (above).

    Items are `{"rgb": tensor [3, P, P], "cube": tensor [bands, P, P]}`, float32 in [-1, 1] (`2 x - 1` of the [0, 1]
    values; uint8 RGB is divided by 255 first). Cube and linear RGB values outside [0, 1] are clipped.
    """

    def __init__(
        self,
        dataset: datasets.Dataset | str | os.PathLike,
        patch_size: int = 64,
        patches_per_scene: int = 1,
        response: str | np.ndarray | None = None,
        rgb_mode: str = "ntire2020_clean",
        seed: int = 0,
        augment: bool = True,
        in_memory: bool = False,
        split: str = "train",
        degradation: PhotoDegradation | None = None,
        relighting: Relighting | None = None,
        relight_scenes: list[bool] | None = None,
        exposure: str = "none",
        exposure_range: tuple[float, float] = (0.25, 1.0),
        stack_thin_scenes: bool = False,
    ):
        from hsr_diffusers.spectral import DEFAULT_RESPONSE, RENDER_MODES, RGB_SCALE, load_response

        if isinstance(dataset, (str, os.PathLike)):
            recorded = read_metadata(dataset).get("response")
            loaded = datasets.load_from_disk(str(dataset))
            dataset = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
            response = response if response is not None else recorded
        if rgb_mode not in RENDER_MODES:
            raise ValueError(f"Unknown rgb_mode {rgb_mode!r}; choose one of {RENDER_MODES}.")
        if exposure not in EXPOSURE_MODES:
            raise ValueError(f"Unknown exposure {exposure!r}; choose one of {EXPOSURE_MODES}.")
        if not 0 < exposure_range[0] <= exposure_range[1] <= 1:
            raise ValueError(f"exposure_range must satisfy 0 < low <= high <= 1, got {exposure_range}.")
        self.dataset = dataset
        self.patch_size = patch_size
        self.rgb_mode = rgb_mode
        self.seed = seed
        self.augment = augment
        self.in_memory = in_memory
        self.degradation = degradation
        self.relighting = relighting
        self.exposure = exposure
        self.exposure_range = tuple(float(v) for v in exposure_range)
        self._scene_rgb_peaks = {}  # scene -> peak of its clean linear RGB (`scene_rgb_max`), read once per process
        self.epoch = 0

        small = dataset.with_format("numpy", columns=["shape", "wavelengths"])
        self.shapes = np.asarray(small[:]["shape"], dtype=np.int64).reshape(-1, 3)  # [num_scenes, 3]
        self.wavelengths = np.asarray(small[0]["wavelengths"], dtype=np.float64)
        if len(self.shapes) == 0:
            raise ValueError("The dataset has no scenes.")
        smallest = int(self.shapes[:, :2].min())
        if patch_size < 1 or (patch_size > smallest and not stack_thin_scenes):
            raise ValueError(
                f"patch_size must be between 1 and the smallest scene side ({smallest}), got {patch_size}; "
                "stack_thin_scenes=True fills patches with several crops of thinner scenes."
            )
        counts = np.broadcast_to(np.asarray(patches_per_scene, dtype=np.int64), (len(self.shapes),))
        if np.ndim(patches_per_scene) == 0 and counts[0] < 1:
            raise ValueError(f"patches_per_scene must be at least 1, got {patches_per_scene}.")
        if counts.min() < 0 or counts.sum() < 1:
            raise ValueError(f"patches_per_scene must be non-negative with a positive total, got {patches_per_scene}.")
        self.patches_per_scene = patches_per_scene if np.ndim(patches_per_scene) == 0 else counts.tolist()
        self._first_item = np.concatenate([[0], np.cumsum(counts)])  # item range of scene s: [first[s], first[s+1])
        self.relight_scenes = np.ones(len(self.shapes), dtype=bool) if relight_scenes is None else None
        if relight_scenes is not None:
            self.relight_scenes = np.asarray(relight_scenes, dtype=bool)
            if self.relight_scenes.shape != (len(self.shapes),):
                raise ValueError(
                    f"relight_scenes needs one flag per scene ({len(self.shapes)}), got {relight_scenes}."
                )
        # Loaded once: render_rgb accepts the (bands, 3) array and skips the lookup of a named curve on every item.
        self.response = load_response(response if response is not None else DEFAULT_RESPONSE, self.wavelengths)
        self._rgb_matrix = (self.response / RGB_SCALE).astype(np.float32)  # linear RGB = cube @ matrix

        self._index = None
        self._cubes = self._rgbs = None
        self._files: dict[int, object] = {}
        self._pid = None
        if in_memory:
            self._cubes = [np.array(get_cube(dataset, i)) for i in range(len(dataset))]
            self._rgbs = [self._decode(_rgb_bytes(dataset, i)) for i in range(len(dataset))]
        elif dataset.cache_files and getattr(dataset, "_indices", None) is None:
            # A file-backed dataset without a select/shuffle indices mapping: rows are the file rows in order.
            index = _ArrowCubeIndex([cache["filename"] for cache in dataset.cache_files])
            if len(index.rows) == len(dataset):
                self._index = index

    def __len__(self) -> int:
        return int(self._first_item[-1])

    def set_epoch(self, epoch: int) -> None:
        """Draws new crops and augmentations: item `i` depends on `(seed, epoch, i)`."""
        self.epoch = epoch

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"], state["_pid"] = {}, None  # file handles are reopened in each DataLoader worker
        return state

    @staticmethod
    def _decode(data: bytes | bytearray | None) -> np.ndarray | None:
        if data is None:
            return None
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))

    def _file(self, file_id: int):
        if self._pid != os.getpid():  # each DataLoader worker process opens its own handles
            self._files, self._pid = {}, os.getpid()
        if file_id not in self._files:
            self._files[file_id] = open(self._index.filenames[file_id], "rb", buffering=0)
        return self._files[file_id]

    def _scene_rgb_peak(self, scene: int) -> float:
        """The maximum of a stored scene's clean linear RGB over its pixels and channels (cached)."""
        if scene not in self._scene_rgb_peaks:
            height, width, _ = (int(v) for v in self.shapes[scene])
            cube = self._read_crop(scene, 0, 0, height, width)
            self._scene_rgb_peaks[scene] = float((cube @ self._rgb_matrix).max())
        return self._scene_rgb_peaks[scene]

    def _read_crop(self, scene: int, top: int, left: int, crop_height: int, crop_width: int) -> np.ndarray:
        height, width, bands = (int(v) for v in self.shapes[scene])
        if self._cubes is not None:
            return self._cubes[scene][top : top + crop_height, left : left + crop_width]
        if self._index is None:
            return np.array(get_cube(self.dataset, scene)[top : top + crop_height, left : left + crop_width])
        file_id, offset = int(self._index.rows[scene, 0]), int(self._index.rows[scene, 1])
        file = self._file(file_id)
        patch = np.empty((crop_height, crop_width, bands), dtype=np.float32)  # [h, w, bands]
        for row in range(crop_height):  # one read per crop row: w pixels x bands floats are contiguous in the file
            self._read_into(file, memoryview(patch[row]).cast("B"), offset + ((top + row) * width + left) * bands * 4)
        return patch

    @staticmethod
    def _read_into(file, buffer: memoryview, offset: int) -> None:
        if hasattr(os, "preadv"):  # positional read: no shared file position, safe across threads
            count = os.preadv(file.fileno(), [buffer], offset)
        else:
            file.seek(offset)
            count = file.readinto(buffer)
        if count != len(buffer):
            raise OSError(
                f"{file.name}: read {count} of {len(buffer)} bytes at offset {offset}; is the file truncated?"
            )

    def _read_rgb(self, scene: int) -> np.ndarray | None:
        if self._rgbs is not None:
            return self._rgbs[scene]
        if self._index is None:
            return self._decode(_rgb_bytes(self.dataset, scene))
        file_id, _, offset, length = (int(v) for v in self._index.rows[scene])
        if length < 0:
            return None
        data = bytearray(length)
        self._read_into(self._file(file_id), memoryview(data), offset)
        return self._decode(data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from hsr_diffusers.spectral import render_rgb

        if not 0 <= index < len(self):
            raise IndexError(f"Index {index} out of range for {len(self)} patches.")
        scene = int(np.searchsorted(self._first_item, index, side="right")) - 1
        height, width, _ = (int(v) for v in self.shapes[scene])
        size = self.patch_size
        crop_height, crop_width = min(size, height), min(size, width)
        rng = np.random.default_rng((self.seed, self.epoch, index))
        top = int(rng.integers(0, height - crop_height + 1))
        left = int(rng.integers(0, width - crop_width + 1))
        rotations, flip = int(rng.integers(4)), bool(rng.integers(2))

        paired = self._read_rgb(scene)
        cube = self._read_crop(scene, top, left, crop_height, crop_width)  # [h, w, bands]
        rgb = None if paired is None else paired[top : top + crop_height, left : left + crop_width]  # [h, w, 3]
        if (crop_height, crop_width) != (size, size):
            cube, rgb = self._stack_crops(scene, cube, rgb, paired, rng)  # [P, P, bands], [P, P, 3]
        if rgb is None and self.relighting is not None and self.relight_scenes[scene]:
            cube = self.relighting(cube, self.wavelengths, rng)
        if rgb is None and self.exposure != "none":
            peak = (
                float((cube @ self._rgb_matrix).max()) if self.exposure == "rgb_max" else self._scene_rgb_peak(scene)
            )
            level = np.exp(rng.uniform(np.log(self.exposure_range[0]), np.log(self.exposure_range[1])))
            cube = cube * np.float32(level / max(peak, 1e-6))

        if rgb is None and self.degradation is not None:
            rgb = self.degradation(cube, self.response, self.wavelengths, rng)
        elif rgb is None:
            seed = int(rng.integers(2**31)) if self.rgb_mode == "real_world" else None
            rgb = render_rgb(cube, self.response, mode=self.rgb_mode, wavelengths=self.wavelengths, seed=seed)
        rgb = rgb / np.float32(255.0) if rgb.dtype == np.uint8 else rgb

        if self.augment:
            cube, rgb = (np.rot90(array, rotations, axes=(0, 1)) for array in (cube, rgb))
            if flip:
                cube, rgb = cube[:, ::-1], rgb[:, ::-1]

        def to_tensor(array: np.ndarray) -> torch.Tensor:
            array = np.clip(array.astype(np.float32, copy=False), 0.0, 1.0) * 2 - 1
            return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))  # [C, P, P]

        return {"rgb": to_tensor(rgb), "cube": to_tensor(cube)}

    def _stack_crops(
        self, scene: int, cube: np.ndarray, rgb: np.ndarray | None, paired: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Fills a `patch_size` square with random crops of a thin scene, the first being `cube` (and `rgb`)."""
        height, width, _ = (int(v) for v in self.shapes[scene])
        size = self.patch_size
        crop_height, crop_width = cube.shape[:2]
        rows, columns = -(-size // crop_height), -(-size // crop_width)
        cube_pieces, rgb_pieces = [[cube]], [[rgb]]
        for piece in range(1, rows * columns):
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            if piece % columns == 0:
                cube_pieces.append([])
                rgb_pieces.append([])
            cube_pieces[-1].append(self._read_crop(scene, top, left, crop_height, crop_width))
            rgb_pieces[-1].append(
                None if paired is None else paired[top : top + crop_height, left : left + crop_width]
            )

        def join(pieces: list[list[np.ndarray]]) -> np.ndarray:
            return np.concatenate([np.concatenate(row, axis=1) for row in pieces], axis=0)[:size, :size]

        cube = join(cube_pieces)
        if paired is not None:
            rgb = join(rgb_pieces)
        return cube, rgb
