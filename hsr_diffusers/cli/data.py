"""`hsr data`: build 🤗 datasets from folders of hyperspectral cubes (`prepare`) and inspect cubes or datasets (`info`).

    hsr data prepare --format cave shared/data/cave data/cave --split cave
    hsr data prepare --format arad NTIRE2020/ data/arad_hs --split ntire2020 --rgb-dir NTIRE2020/clean --skip-bad
    hsr data info data/cave
    hsr data info ARAD_HS_0001.mat

`prepare` exits with status 1 and writes nothing when a scene fails to load, unless `--skip-bad` is given; it then
writes the others and lists what it skipped. The heavy imports (datasets, torch) happen when a command runs, not when
the parser is built.
"""

import argparse
import sys
from pathlib import Path

from hsr_diffusers.cli import choice_of


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers `hsr data` and its subcommands on the `hsr` subparsers."""
    parser = subparsers.add_parser(
        "data",
        help="prepare and inspect hyperspectral datasets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="data_command", required=True)

    prepare = commands.add_parser(
        "prepare",
        help="turn a folder of cubes into a datasets.DatasetDict on disk",
        description="Reads every scene of SRC, one at a time, and writes a datasets.DatasetDict to OUT (save_to_disk "
        "layout, loadable with datasets.load_from_disk and ready for push_to_hub), then prints a summary table.",
    )
    prepare.add_argument(
        "--format",
        required=True,
        type=choice_of("hsr_diffusers.data.dataset", "DATASET_FORMATS"),
        help="arad: .mat with `cube` (NTIRE 2020/2022); icvl: .mat with `rad` (scaled by 1/4095); "
        "cave: CAVE scene folders of PNG bands; folder: any .mat/.h5/.npy/.npz/ENVI/TIFF cube file.",
    )
    prepare.add_argument("src", type=Path, metavar="SRC", help="folder searched recursively for scenes")
    prepare.add_argument("out", type=Path, metavar="OUT", help="output folder of the dataset")
    prepare.add_argument(
        "--split",
        default=None,
        help="built-in split: ntire2020 (450/10), ntire2022 (MST++ lists, 897/50), ntire2022_full "
        "(900/50) or cave (10/2). Default: every scene in one `train` split.",
    )
    prepare.add_argument(
        "--response",
        default=None,
        help="camera response to render RGB with when a scene has no paired RGB (recorded in the "
        "dataset and used by PatchDataset), e.g. cie1964_ntire2020, canon_40d or a CSV file.",
    )
    prepare.add_argument(
        "--rgb-dir",
        type=Path,
        default=None,
        help="folder of RGB images paired by scene name (<name>.png/.jpg or <name>_clean.png).",
    )
    prepare.add_argument("--key", default=None, help="variable holding the cube in .mat/.h5/.npz files")
    prepare.add_argument("--expected-bands", type=int, default=None, help="fail scenes without this many bands")
    prepare.add_argument(
        "--skip-bad", action="store_true", help="write the dataset without the scenes that failed, and list them"
    )
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT")
    prepare.set_defaults(func=run_prepare)

    info = commands.add_parser(
        "info",
        help="describe a cube file or a prepared dataset",
        description="Prints the format, shape, value "
        "range and wavelengths of a cube file or CAVE folder, or the splits and build record of a prepared dataset.",
    )
    info.add_argument("path", type=Path, metavar="PATH", help="a cube file, a CAVE scene folder or a dataset folder")
    info.add_argument("--key", default=None, help="variable holding the cube in .mat/.h5/.npz files")
    info.set_defaults(func=run_info)
    return parser


def format_table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned text columns, the first row as header."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _shapes(shapes: list[list[int]], limit: int = 3) -> str:
    text = ", ".join("x".join(str(size) for size in shape) for shape in shapes[:limit])
    return text + (f" (+{len(shapes) - limit} more)" if len(shapes) > limit else "")


def _names(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def format_summary(metadata: dict) -> str:
    """The summary of a build record (`hsr_data.json`): scenes, shapes and value range per split, then what was left out."""
    rows = [("split", "scenes", "shape (H x W x bands)", "min", "max")]
    for split, stats in metadata["splits"].items():
        rows.append(
            (split, str(stats["num_scenes"]), _shapes(stats["shapes"]), f"{stats['min']:.4g}", f"{stats['max']:.4g}")
        )
    lines = [format_table(rows)]
    skipped = metadata.get("skipped", [])
    lines.append(f"skipped: {len(skipped)} scene(s)" + (":" if skipped else ""))
    lines += [f"  {item['path']}: {item['reason']}" for item in skipped]
    for split, names in metadata.get("missing", {}).items():
        lines.append(f"not found in the source ({split} split): {len(names)}: {_names(names)}")
    if metadata.get("unlisted"):
        lines.append(f"in no split, not written: {len(metadata['unlisted'])}: {_names(metadata['unlisted'])}")
    return "\n".join(lines)


def run_prepare(args: argparse.Namespace) -> int:
    from hsr_diffusers.data.dataset import DatasetBuildError, build_dataset, read_metadata

    try:
        build_dataset(
            args.src,
            args.out,
            format=args.format,
            split=args.split,
            response=args.response,
            rgb_dir=args.rgb_dir,
            key=args.key,
            expected_bands=args.expected_bands,
            skip_bad=args.skip_bad,
            overwrite=args.overwrite,
        )
    except DatasetBuildError as error:
        print(f"hsr data prepare: {error}", file=sys.stderr)
        if error.failures:
            print("Nothing was written. Fix these files or pass --skip-bad to leave them out.", file=sys.stderr)
        return 1
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"hsr data prepare: {error}", file=sys.stderr)
        return 1
    print(format_summary(read_metadata(args.out)))
    print(f"Wrote {args.out} (load it with datasets.load_from_disk).")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from hsr_diffusers.data.io import CUBE_FORMATS, CubeFormatError, detect_format, load_cube_with_wavelengths

    path = args.path
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        import datasets

        from hsr_diffusers.data.dataset import read_metadata

        print(datasets.load_from_disk(str(path)))
        metadata = read_metadata(path)
        if metadata:
            print(f"format: {metadata['format']}, source: {metadata['source']}, response: {metadata['response']}")
            print(format_summary(metadata))
        return 0
    try:
        kind = detect_format(path)
        cube, wavelengths = load_cube_with_wavelengths(path, key=args.key)
    except CubeFormatError as error:
        print(f"hsr data info: {error}", file=sys.stderr)
        return 1
    print(f"path:        {path}")
    print(f"format:      {kind} ({CUBE_FORMATS[kind].label})")
    print(f"shape:       {cube.shape[0]} x {cube.shape[1]} x {cube.shape[2]} (H x W x bands), float32")
    print(f"values:      min {cube.min():.4g}, max {cube.max():.4g}, mean {cube.mean():.4g}")
    if wavelengths is None:
        print("wavelengths: not stored")
    else:
        print(f"wavelengths: {wavelengths[0]:g} ... {wavelengths[-1]:g} nm ({len(wavelengths)} bands)")
    return 0
