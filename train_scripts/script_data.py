"""Data and starting models of the training scripts: dataset folders (raw ones prepared on the fly), splits, patch
datasets and loaders, the released pipeline to fine-tune and the closed-form estimator.
"""

import argparse
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import script_args
import torch

from hsr_diffusers.data import PatchDataset, build_dataset, get_cube, get_split, read_metadata
from hsr_diffusers.data.io import CUBE_SUFFIXES, CubeFormatError, find_cave_band_files
from hsr_diffusers.models import RootPolynomialRegression, fit_root_polynomial
from hsr_diffusers.spectral import DEFAULT_RESPONSE


logger = logging.getLogger(__name__)


def raw_folder_layout(folder: Path, split: str | None = None) -> tuple[str, dict | None]:
    """
    The `build_dataset` format and split of a raw folder: `"folder"` when it holds cube files, `"cave"` when it holds
    CAVE scene folders of band PNGs (the layouts `load_cube` reads). A CAVE folder with the built-in split's
    validation scenes gets that split's validation and all its other scenes for training, a folder of the ICVL strips
    the built-in `"icvl"` split (whole sites validate); otherwise every scene trains. `split` names a built-in split
    to use instead (`"auto"` or None: the detected one); its scenes missing from the folder are left out.
    """
    files = [path for path in folder.rglob("*") if path.is_file() and not path.name.startswith(".")]
    cube_files = [path for path in files if path.suffix.lower() in CUBE_SUFFIXES]
    cube_files = [path for path in cube_files if not path.name.endswith(".wavelengths.npy")]
    if cube_files:
        stems = {path.stem for path in cube_files}
        if split not in (None, "auto"):
            return "folder", _present(get_split(split), stems)
        icvl = get_split("icvl")
        if stems <= set(icvl["train"]) | set(icvl["validation"]) and stems & set(icvl["validation"]):
            return "folder", _present(icvl, stems)
        return "folder", None
    names = []
    for directory in sorted({path.parent for path in files if path.suffix.lower() == ".png"}):
        try:
            bands = find_cave_band_files(directory)
        except CubeFormatError:
            continue
        if bands[0].parent == directory:  # the nested download layout is found at its inner folder
            prefix = bands[0].name.rsplit("_", 1)[0]
            names.append(prefix[: -len("_ms")] if prefix.endswith("_ms") else prefix)
    if not names:
        raise CubeFormatError(
            f"--train_data_dir {folder} holds no dataset written by `hsr data prepare`, no cube files "
            f"({', '.join(CUBE_SUFFIXES)}) and no CAVE scene folders of band PNGs (<scene>_ms_NN.png)."
        )
    if split not in (None, "auto"):
        return "cave", _present(get_split(split), set(names))
    validation = [name for name in get_split("cave")["validation"] if name in names]
    if len(validation) < len(get_split("cave")["validation"]):
        return "cave", None
    return "cave", {"train": [name for name in names if name not in validation], "validation": validation}


def _present(split: dict[str, list[str]], names: set[str]) -> dict[str, list[str]]:
    return {key: [name for name in scenes if name in names] for key, scenes in split.items()}


def prepare_data_dir(data_dir: str | Path, prepared: Path, response: str, split: str | None = None) -> Path:
    """
    `--train_data_dir` as a dataset folder: one written by `hsr data prepare` as it is, a raw folder (cube files or CAVE
    scene folders, see `raw_folder_layout`) prepared with `build_dataset` into `prepared` unless that exists already.
    The dataset is written to `<prepared>.tmp` and renamed when complete, so an interrupted preparation is redone.
    """
    path = Path(data_dir)
    if not path.exists():
        raise FileNotFoundError(f"--train_data_dir {path} does not exist.")
    if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
        return path
    if prepared.exists():
        logger.info(f"Using {prepared}, prepared earlier from {path}")
        return prepared
    layout, split = raw_folder_layout(path, split)
    logger.info(f"Preparing {path} ({layout} format) into {prepared}")
    partial = prepared.with_name(prepared.name + ".tmp")
    if partial.exists():
        shutil.rmtree(partial)
    build_dataset(path, partial, format=layout, split=split, response=response)
    os.replace(partial, prepared)
    return prepared


def default_prepared_dir(data_dir: str | Path, response: str, split: str | None = None) -> Path:
    """
    Where a raw `--train_data_dir` is prepared without `--prepared_data_dir`: a folder of the 🤗 datasets cache
    (`HF_DATASETS_CACHE`, by default `~/.cache/huggingface/datasets`), named after the raw folder and a digest of its
    absolute path, its files (names, sizes, modification times) and the response. The same data finds the same folder
    (a resumed run, another output folder); changed data gets a new one.
    """
    folder = Path(data_dir).resolve()
    files = sorted(
        (str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
    )
    key = {"folder": str(folder), "files": files, "response": response}
    if split not in (None, "auto"):  # only then, so that folders prepared before the flag existed are found again
        key["split"] = split
    key = json.dumps(key)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(datasets.config.HF_DATASETS_CACHE) / "hsr_diffusers_prepared" / f"{folder.name}-{digest}"


def data_dirs(args) -> list[str]:
    """`--train_data_dir` as a list (one folder, as older callers pass it, or several)."""
    value = args.train_data_dir
    return [value] if isinstance(value, (str, os.PathLike)) else list(value)


def prepared_dir(args, response: str, index: int = 0) -> Path:
    """
    Where raw source `index` of `--train_data_dir` is prepared: `--prepared_data_dir` (with several sources, its
    subfolder `<index>-<folder name>`), else `<output_dir>/prepared_dataset` for a one-source run started before the
    data moved out of the output folder (so that it resumes on the same data), else `default_prepared_dir`. Released
    pipeline folders never hold the data.
    """
    folders = data_dirs(args)
    split = args.train_data_split[index] if getattr(args, "train_data_split", None) else None
    if args.prepared_data_dir is not None:
        if len(folders) == 1:
            return Path(args.prepared_data_dir)
        return Path(args.prepared_data_dir) / f"{index}-{Path(folders[index]).resolve().name}"
    legacy = Path(args.output_dir) / "prepared_dataset"
    if legacy.is_dir() and len(folders) == 1:
        return legacy
    return default_prepared_dir(folders[index], response, split)


def load_splits(args, accelerator) -> tuple[datasets.Dataset, datasets.Dataset | None, str, list[float]]:
    """
    The training and validation splits, the response to render RGB with and the dataset's wavelengths. Several
    `--train_data_dir` sources are concatenated in their order (validation too); `args.source_sizes` records the
    training scenes of each source, `args.validation_source_sizes` its validation scenes (for `validation_order`) and
    `args.source_formats` the format each was prepared from (for the source weights and relighting of
    `make_train_dataset`).
    """
    if args.dataset_name is not None:
        sources = [(datasets.load_dataset(args.dataset_name), None)]
    else:
        # A raw folder is prepared once, outside the output folder (main process first, then the others read it).
        response = args.response or DEFAULT_RESPONSE
        splits = getattr(args, "train_data_split", None) or [None] * len(data_dirs(args))
        sources = []
        for index, folder in enumerate(data_dirs(args)):
            with accelerator.main_process_first():
                path = prepare_data_dir(folder, prepared_dir(args, response, index), response, splits[index])
            sources.append((datasets.load_from_disk(str(path)), read_metadata(path)))
    trains, validations = [], []
    for loaded, _ in sources:
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({args.train_split: loaded})
        if args.train_split not in loaded:
            raise ValueError(f"The dataset has no split {args.train_split!r}; it has {list(loaded)}.")
        trains.append(loaded[args.train_split])
        if loaded.get(args.validation_split) is not None and len(loaded[args.validation_split]):
            validations.append(loaded[args.validation_split])
    train = trains[0] if len(trains) == 1 else datasets.concatenate_datasets(trains)
    if len(train) == 0:
        raise ValueError("The training split is empty.")
    validation = None if not validations else validations[0]
    if len(validations) > 1:
        validation = datasets.concatenate_datasets(validations)
    args.source_sizes = [len(split) for split in trains]
    args.validation_source_sizes = [len(split) for split in validations]
    args.source_formats = [(metadata or {}).get("format") for _, metadata in sources]
    recorded = (sources[0][1] or {}).get("response")
    return train, validation, args.response or recorded or DEFAULT_RESPONSE, dataset_wavelengths(train)


def validation_order(args, split: datasets.Dataset | None) -> list[int]:
    """
    The indices of the validation scenes that validation scores, `--max_validation_scenes` of them: the sources take
    turns (first scene of each, then the second, ...), so that a few scenes still cover every source of a mix.
    """
    if split is None:
        return []
    sizes = getattr(args, "validation_source_sizes", None) or [len(split)]
    starts = np.cumsum([0, *sizes[:-1]])
    order = [int(start) + k for k in range(max(sizes)) for start, size in zip(starts, sizes) if k < size]
    return order[: max(args.max_validation_scenes, 0)]


def source_patch_counts(source_sizes: list[int], patches_per_scene: int, weights: list[float] | None) -> list[int]:
    """
    Patches per scene and epoch for a mix of sources with `source_sizes` scenes each: `patches_per_scene` for every
    scene without `weights`; with them, the epoch keeps `patches_per_scene x all scenes` patches and source `k` gets
    the share `weights[k] / sum(weights)` of them, spread evenly over its scenes (at least one per scene of a source
    with a positive weight, so that every scene is seen).
    """
    if weights is None:
        return [patches_per_scene] * sum(source_sizes)
    total = patches_per_scene * sum(source_sizes)
    counts = []
    for size, weight in zip(source_sizes, weights):
        patches = round(total * weight / sum(weights))
        base, extra = divmod(patches, size)
        per_scene = [base + (scene < extra) for scene in range(size)]
        counts += [max(count, 1) if weight > 0 else 0 for count in per_scene]
    return counts


def dataset_wavelengths(split: datasets.Dataset) -> list[float]:
    values = split.with_format("numpy", columns=["wavelengths"])[0]["wavelengths"]
    # Whole-nanometre bands as ints, so that the pipeline config matches its `list[int]` annotation.
    return [int(w) if float(w).is_integer() else float(w) for w in values]


def make_train_dataset(args, split: datasets.Dataset, response: str) -> PatchDataset:
    """The training patches: the sources of `load_splits` weighted, relit and exposed as the flags say."""
    source_sizes = getattr(args, "source_sizes", None) or [len(split)]
    source_formats = getattr(args, "source_formats", None) or [None] * len(source_sizes)
    relight = getattr(args, "relight", "none")
    relit_sources = [relight == "all" or (relight == "cave" and kind == "cave") for kind in source_formats]
    if relight == "cave" and not any(relit_sources):
        raise ValueError("--relight cave, but no --train_data_dir was prepared from CAVE folders.")
    return PatchDataset(
        split,
        patch_size=args.resolution,
        patches_per_scene=source_patch_counts(
            source_sizes, args.patches_per_scene, getattr(args, "train_data_weights", None)
        ),
        response=response,
        rgb_mode=args.rgb_mode,
        seed=args.seed,
        in_memory=args.in_memory,
        degradation=script_args.make_degradation(args),
        relighting=script_args.make_relighting(args),
        relight_scenes=[flag for flag, size in zip(relit_sources, source_sizes) for _ in range(size)],
        exposure=getattr(args, "exposure", "none"),
        exposure_range=tuple(getattr(args, "exposure_level_range", (0.25, 1.0))),
        stack_thin_scenes=True,
    )


def make_train_dataloader(args, train_dataset, accelerator) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        train_dataset,
        batch_size=args.train_batch_size,
        shuffle=True,
        num_workers=args.dataloader_num_workers,
        drop_last=len(train_dataset) >= args.train_batch_size * accelerator.num_processes,
    )


def resolve_model(name_or_path: str) -> str:
    """A flag's model as `from_pretrained` finds it: bundled names map to their folder, offline."""
    from hsr_diffusers.pipelines.auto_pipeline import resolve_pretrained

    return resolve_pretrained(name_or_path)


def load_released(args, pipeline_class, wavelengths: list):
    """The released pipeline that `--pretrained_model_name_or_path` fine-tunes (bundled names resolve offline)."""
    released = pipeline_class.from_pretrained(resolve_model(args.pretrained_model_name_or_path))
    if list(released.config.wavelengths) != list(wavelengths):
        raise ValueError(
            f"{args.pretrained_model_name_or_path} has wavelengths {released.config.wavelengths}, the data {wavelengths}."
        )
    args.residual = "root_poly" if released.estimator is not None else "none"
    return released


def estimator_cubes(args, train_split, response: str, num_patches: int = 256):
    """
    What the estimator is fitted on: the stored training scenes, each divided by its maximum, or, when the run relights
    reflectance, `num_patches` relit training patches drawn as training draws them (epoch 0, seeded, at their stored
    level), so that the estimate is fitted on the radiance the network will see. The closed form does not depend on
    exposure, but its least squares weighs bright pixels more: scaled per patch (`--exposure rgb_max`), near-black
    patches lifted to full level dominated the fit, and at their stored levels the dim ICVL strips counted for little
    beside CAVE's reflectance. Per scene, the CAVE + ICVL estimate matches the floor that `benchmarks/icvl_tables.py`
    fits (benchmarks/results/third_generation.md). Source weights do not apply: every scene gives the same number of
    pixels (`fit_root_polynomial`'s `pixels_per_scene`).
    """
    if getattr(args, "relight", "none") == "none":
        cubes = (np.asarray(get_cube(train_split, index), dtype=np.float32) for index in range(len(train_split)))
        return (cube / max(float(cube.max()), 1e-6) for cube in cubes)
    stored_levels = argparse.Namespace(**{**vars(args), "exposure": "none"})
    patches = make_train_dataset(stored_levels, train_split, response)
    order = np.random.default_rng(args.seed).permutation(len(patches))[:num_patches]
    return ((patches[int(index)]["cube"].numpy().transpose(1, 2, 0) + 1) / 2 for index in order)


def load_or_fit_estimator(
    args, accelerator, train_split, response, wavelengths, released=None
) -> RootPolynomialRegression | None:
    """
    The closed-form estimator of residual training (`--residual root_poly`), fitted once on the main process (or taken
    from the `released` pipeline being fine-tuned) and saved in `output_dir/estimator` so that a resumed run conditions
    on exactly the same estimate; None for `--residual none`.
    """
    if args.residual != "root_poly":
        return None
    estimator_dir = Path(args.output_dir) / "estimator"
    with accelerator.main_process_first():
        if released is not None:
            estimator = released.estimator
            if accelerator.is_main_process:
                estimator.save_pretrained(estimator_dir)
        elif (estimator_dir / "config.json").is_file():
            estimator = RootPolynomialRegression.from_pretrained(estimator_dir)
        else:
            estimator = fit_root_polynomial(
                estimator_cubes(args, train_split, response),
                response,
                wavelengths,
                args.rgb_mode,
                args.root_poly_degree,
                seed=args.seed,
            )
            if accelerator.is_main_process:
                estimator.save_pretrained(estimator_dir)
    return estimator.requires_grad_(False).to(accelerator.device)
