"""`hsr reconstruct` and the `examples/` folder, run in-process with the bundled models on a crop of an example photo,
and with tiny pipelines saved to a temporary folder for the details; one two-process `accelerate launch` run."""

import _thread
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import tifffile
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from hsr_diffusers import HSRDiffusionPipeline, HSRFeedForwardPipeline, HSRPipeline, HSRPixelGANGenerator, srgb_preview
from hsr_diffusers.cli import main
from hsr_diffusers.cli import reconstruct as reconstruct_module
from hsr_diffusers.data import load_cube, load_cube_with_wavelengths
from hsr_diffusers.data.io import SAVE_SUFFIXES, cube_file_paths
from hsr_diffusers.spectral import srgb_to_camera_rgb
from tests.data.test_photos import write_png16
from tests.testing_utils import slow, smooth_cube, tiny_ddpm_unet


REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
WAVELENGTHS = np.arange(400.0, 701.0, 10.0)


@pytest.fixture(scope="module")
def ddpm(tmp_path_factory) -> Path:
    unet = tiny_ddpm_unet(attention=False)
    path = tmp_path_factory.mktemp("ddpm")
    HSRDiffusionPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pixelgan(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pixelgan")
    HSRFeedForwardPipeline(unet=HSRPixelGANGenerator(out_channels=31, num_downs=3, ngf=4)).save_pretrained(path)
    return path


def photo_array(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """An sRGB uint8 photo of a smooth reflectance scene."""
    return srgb_preview(smooth_cube(height, width, seed=seed))


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "in" / "photo.png"
    path.parent.mkdir()
    PIL.Image.fromarray(photo_array()).save(path)
    return path


def reconstruct(*args) -> int:
    return main(["reconstruct", *map(str, args)])


def linearise(srgb8: np.ndarray) -> np.ndarray:
    # The pipeline scales uint8 in float32 before the conversion. The tiny random model amplifies rounding
    # differences, so the test follows the same precision.
    return srgb_to_camera_rgb(srgb8.astype(np.float32) / 255.0, "cie1964_ntire2020")


def test_the_cube_is_the_pipeline_output_for_the_photo_in_camera_rgb(ddpm, photo, tmp_path):
    pipe = HSRDiffusionPipeline.from_pretrained(ddpm)
    pipe.set_progress_bar_config(disable=True)
    srgb8 = photo_array()
    expected = pipe(linearise(srgb8), num_inference_steps=2, generator=torch.Generator().manual_seed(0)).cubes[0]
    assert reconstruct(photo, "-o", tmp_path / "srgb", "--model", ddpm, "--steps", 2) == 0
    cube, _ = load_cube_with_wavelengths(tmp_path / "srgb" / "photo.h5")  # h5 is the default format
    np.testing.assert_allclose(cube, expected, atol=1e-6)

    # --input-space linear hands the pixel values to the model unchanged.
    raw = pipe(srgb8, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).cubes[0]
    assert reconstruct(photo, "-o", tmp_path / "lin", "--model", ddpm, "--steps", 2, "--input-space", "linear") == 0
    cube, _ = load_cube_with_wavelengths(tmp_path / "lin" / "photo.h5")
    np.testing.assert_allclose(cube, raw, atol=1e-6)
    assert np.abs(raw - expected).max() > 0.01


def test_samples_write_the_spread_and_the_seed_repeats(ddpm, photo, tmp_path):
    for out in ("a", "b"):
        args = [photo, "-o", tmp_path / out, "--model", ddpm, "--steps", 2, "--samples", 2, "--seed", 3]
        assert reconstruct(*args, "--format", "npy") == 0
    first, second = np.load(tmp_path / "a" / "photo.npy"), np.load(tmp_path / "b" / "photo.npy")
    np.testing.assert_array_equal(first, second)
    spread, wavelengths = load_cube_with_wavelengths(tmp_path / "a" / "photo_std.npy")
    assert spread.shape == (24, 32, 31) and spread.min() >= 0 and spread.max() > 0
    np.testing.assert_allclose(wavelengths, WAVELENGTHS)
    assert (tmp_path / "a" / "photo_spectra.png").is_file()


def test_bad_files_get_one_error_line_each_and_the_others_are_written(ddpm, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    PIL.Image.fromarray(photo_array()).save(folder / "a_good.png")
    (folder / "b_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)
    PIL.Image.fromarray(photo_array()[..., 0]).save(folder / "c_gray.png")
    rgba = np.dstack([photo_array(), np.full((24, 32), 255, np.uint8)])
    rgba[0, 0, 3] = 0
    PIL.Image.fromarray(rgba).save(folder / "d_transparent.png")
    PIL.Image.fromarray(photo_array()).save(folder / "e_truncated.jpg")
    data = (folder / "e_truncated.jpg").read_bytes()
    (folder / "e_truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not an image, ignored in a folder")
    bitmap = tmp_path / "f_bitmap.bmp"
    PIL.Image.fromarray(photo_array()).save(bitmap)

    out = tmp_path / "out"
    status = reconstruct(folder, bitmap, tmp_path / "missing.png", "-o", out, "--model", ddpm, "--steps", 2)
    assert status == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    for name, reason in [
        ("b_corrupt.png", "Cannot read the file as an image"),
        ("c_gray.png", "The image is grayscale"),
        ("d_transparent.png", "transparent"),
        ("e_truncated.jpg", "truncated"),
        ("f_bitmap.bmp", "unsupported file type"),
        ("missing.png", "no such file"),
    ]:
        matching = [line for line in lines if name in line]
        assert len(matching) == 1 and reason in matching[0], (name, lines)
    assert not any("notes.txt" in line for line in lines)
    assert sorted(p.name for p in out.iterdir()) == [
        "a_good.h5",
        "a_good_bands.png",
        "a_good_preview.png",
        "a_good_spectra.png",
    ]
    assert "1 image(s) reconstructed" in captured.out and "6 failed:" in captured.out
    summary = captured.out.split("6 failed:")[1]  # the failures again, after the table, one line each
    assert all(name in summary for name in ("b_corrupt.png", "c_gray.png", "f_bitmap.bmp", "missing.png"))


def test_outputs_are_not_overwritten_without_the_flag(ddpm, photo, tmp_path, capsys):
    out = tmp_path / "out"
    assert reconstruct(photo, "-o", out, "--model", ddpm, "--steps", 2) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()

    assert reconstruct(photo, "-o", out, "--model", ddpm, "--steps", 2, "--seed", 1) == 1
    error = capsys.readouterr().err
    assert len([line for line in error.splitlines() if "photo.png" in line]) == 1
    assert "exists" in error and "--overwrite" in error
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    assert reconstruct(photo, "-o", out, "--model", ddpm, "--steps", 2, "--seed", 1, "--overwrite") == 0
    assert (out / "photo.h5").read_bytes() != before["photo.h5"]


def test_16_bit_png_and_tiff_keep_16_bits(ddpm, tmp_path, capsys):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 65536, size=(24, 32, 3), dtype=np.uint16)
    write_png16(tmp_path / "deep.png", array)
    tifffile.imwrite(tmp_path / "deep.tif", array, photometric="rgb")
    with pytest.warns(FutureWarning, match="read_photo"):
        np.testing.assert_array_equal(reconstruct_module.read_image(tmp_path / "deep.png"), array)
    # read_photo keeps all 16 bits (tests/data/test_photos.py); through the command the model sees them, and a TIFF
    # cube written next to a TIFF input never replaces it.
    pipe = HSRDiffusionPipeline.from_pretrained(ddpm)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(array, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).cubes[0]
    input_bytes = (tmp_path / "deep.tif").read_bytes()
    args = ["--model", ddpm, "--steps", 2, "--input-space", "linear", "--format", "tiff", "-o", tmp_path]
    assert reconstruct(tmp_path / "deep.png", tmp_path / "deep.tif", *args) == 0
    assert (tmp_path / "deep.tif").read_bytes() == input_bytes
    for output in ("deep_png.tif", "deep_tif.tif"):
        cube, _ = load_cube_with_wavelengths(tmp_path / output)
        np.testing.assert_allclose(cube, expected, atol=1e-6)


def test_large_images_are_tiled_automatically(ddpm, tmp_path, capsys):
    path = tmp_path / "big.png"
    PIL.Image.fromarray(photo_array(80, 96)).save(path)
    common = [path, "--model", ddpm, "--steps", 2, "--format", "npy"]
    # 0.001 MP asks for 31 px tiles; the smallest tile that fits the 32 px overlap is 72 px.
    assert reconstruct(*common, "-o", tmp_path / "auto", "--max-megapixels", 0.001) == 0
    assert "72 px" in capsys.readouterr().out
    assert reconstruct(*common, "-o", tmp_path / "tiled", "--tile-size", 72) == 0
    assert reconstruct(*common, "-o", tmp_path / "whole") == 0
    auto = np.load(tmp_path / "auto" / "big.npy")
    assert auto.shape == (80, 96, 31)
    np.testing.assert_array_equal(auto, np.load(tmp_path / "tiled" / "big.npy"))
    assert np.abs(auto - np.load(tmp_path / "whole" / "big.npy")).max() > 1e-4


def test_pixelgan_model_and_unusable_model(pixelgan, photo, tmp_path, capsys):
    out = tmp_path / "out"
    assert reconstruct(photo, "-o", out, "--model", pixelgan, "--steps", 5, "--format", "mat") == 0
    assert "--steps ignored" in capsys.readouterr().err
    cube, wavelengths = load_cube_with_wavelengths(out / "photo.mat")
    assert cube.shape == (24, 32, 31)
    np.testing.assert_allclose(wavelengths, WAVELENGTHS)

    assert reconstruct(photo, "-o", out, "--model", tmp_path / "no_such_model") == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "cannot load model" in error


@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, DDPMScheduler])
def test_tiled_run_with_samples_equals_the_pipeline_bit_for_bit(scheduler_class, tmp_path, monkeypatch):
    # Several tile groups, two samples: the CLI streams the rows that the pipeline's `callback_on_tile_end` hands over
    # to the file, and must write exactly the cube (mean and spread, seams included) that the pipeline returns for the
    # photo, also with a scheduler that adds noise at every step (DDPM).
    model = tmp_path / "model"
    unet = tiny_ddpm_unet(attention=False)
    scheduler = scheduler_class(num_train_timesteps=1000)
    HSRDiffusionPipeline(unet=unet, scheduler=scheduler, default_tile_overlap=8).save_pretrained(model)
    pipe = HSRDiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    # 24-px tiles overlapping by 8 px: 2 x 3 tiles on 40 x 56 px. Groups of two tiles (x 2 samples) instead of the
    # 256 x 256 px default: three groups, the second one across the two rows of tiles.
    assert pipe.image_processor.num_tiles(40, 56, 24, 8) == 6
    monkeypatch.setattr(HSRDiffusionPipeline, "TILE_BATCH_PIXELS", 2 * 2 * 24 * 24)
    PIL.Image.fromarray(photo_array(40, 56, seed=3)).save(tmp_path / "wide.png")
    expected = pipe(
        PIL.Image.open(tmp_path / "wide.png"),
        num_inference_steps=2,
        num_samples=2,
        tile_size=24,
        generator=torch.Generator().manual_seed(5),
    )
    args = ["--model", model, "--steps", 2, "--samples", 2, "--seed", 5, "--tile-size", 24, "--format", "envi"]
    assert reconstruct(tmp_path / "wide.png", "-o", tmp_path / "out", *args) == 0
    np.testing.assert_array_equal(load_cube(tmp_path / "out" / "wide.hdr"), expected.cubes[0])
    np.testing.assert_array_equal(load_cube(tmp_path / "out" / "wide_std.hdr"), expected.uncertainty[0])


def test_feedforward_tiled_run_equals_the_pipeline_bit_for_bit(tmp_path, monkeypatch):
    model = tmp_path / "model"
    torch.manual_seed(0)
    generator = HSRPixelGANGenerator(out_channels=31, num_downs=3, ngf=4)
    HSRFeedForwardPipeline(unet=generator, default_tile_overlap=4).save_pretrained(model)
    pipe = HSRPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    monkeypatch.setattr(type(pipe), "TILE_BATCH_PIXELS", 2 * 24 * 24)  # two tiles per network call
    PIL.Image.fromarray(photo_array(40, 56, seed=4)).save(tmp_path / "wide.png")
    expected = pipe(PIL.Image.open(tmp_path / "wide.png"), tile_size=24).cubes[0]
    assert reconstruct(tmp_path / "wide.png", "-o", tmp_path / "out", "--model", model, "--tile-size", 24) == 0
    np.testing.assert_array_equal(load_cube(tmp_path / "out" / "wide.h5"), expected)


# ---------------------------------------------------------------------------------------------- many processes
def launch_two_cpu_processes(args: list, timeout: float = 240) -> subprocess.CompletedProcess:
    """`accelerate launch -m hsr_diffusers.cli ...` with two CPU ranks (gloo), as train_scripts/README.md documents."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # a free port: the default 29500 may be held by another run on this machine
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(port), "--num_machines", "1", "--num_cpu_threads_per_process", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hsr_diffusers.cli", *map(str, args),
    ]  # fmt: skip
    # Own session, so that a hung rank can be killed with its launcher instead of outliving the test.
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the two-process run did not finish within {timeout} s:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@slow
def test_accelerate_launch_shards_the_photos_over_two_processes(pixelgan, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        PIL.Image.fromarray(photo_array(seed=index)).save(folder / f"photo_{index}.png")
    (folder / "photo_9_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)
    out = tmp_path / "out"
    result = launch_two_cpu_processes(["reconstruct", folder, "-o", out, "--model", pixelgan, "--format", "npy"])
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-3000:]  # a file failed: the run says so at the end
    # Every good photo written exactly once (a second writer would have failed on the existing file).
    for index in range(3):
        assert load_cube(out / f"photo_{index}.npy").shape == (24, 32, 31)
    assert not list(out.glob("photo_9*"))
    assert "3 image(s) reconstructed into" in result.stdout and "by 2 processes, 1 failed:" in result.stdout
    assert "photo_9_corrupt.png: Cannot read the file as an image" in result.stdout  # the summary names the failure
    assert [line for line in result.stderr.splitlines() if "photo_9_corrupt.png" in line]  # reported when it failed
    processes = {line.split()[-2] for line in result.stdout.splitlines() if line.startswith(str(folder))}
    assert processes == {"0", "1"}, result.stdout  # both ranks had a share


def test_example_script_and_licences(ddpm, photo, tmp_path, monkeypatch, capsys):
    images = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    assert 2 <= len(images) <= 3
    licences = (EXAMPLES / "LICENSE.md").read_text()
    for name in images:
        assert f"`{name}`" in licences
        with PIL.Image.open(EXAMPLES / name) as image:
            assert image.mode == "RGB" and 256 <= max(image.size) <= 384

    preview = tmp_path / "preview.png"
    argv = ["reconstruct_photo.py", "--model", str(ddpm), "--image", str(photo), "--preview", str(preview)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLES / "reconstruct_photo.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "cube: shape (24, 32, 31)" in printed and "centre pixel (12, 16)" in printed and "700 nm" in printed
    with PIL.Image.open(preview) as image:
        assert image.size == (32, 24)


# ---------------------------------------------------------------------------------------------- what ships
@pytest.fixture(scope="module")
def coffee_crop(tmp_path_factory) -> Path:
    """A 48x64 crop of the bundled example photo: one tile of the bundled DDPM."""
    path = tmp_path_factory.mktemp("coffee") / "coffee.png"
    with PIL.Image.open(EXAMPLES / "coffee.png") as image:
        image.convert("RGB").crop((160, 100, 224, 148)).save(path)
    return path


@pytest.fixture(scope="module")
def bundled_ddpm() -> HSRDiffusionPipeline:
    return HSRPipeline.from_pretrained("hsr-diffusers/ddpm-cave")


@pytest.mark.parametrize("format", sorted(SAVE_SUFFIXES))
def test_bundled_default_model_writes_every_format(format, coffee_crop, bundled_ddpm, tmp_path, monkeypatch, capsys):
    # The bundled DDPM is loaded once for all formats (test_bundled_pixelgan_and_samples_of_the_bundled_ddpm loads it
    # through the command); the command must still ask for it by name.
    requested = []

    def from_pretrained(name, **kwargs):
        requested.append(name)
        return bundled_ddpm

    monkeypatch.setattr(HSRPipeline, "from_pretrained", from_pretrained)
    out = tmp_path / "out"
    assert reconstruct(coffee_crop, "-o", out, "--format", format) == 0
    assert requested == ["hsr-diffusers/ddpm-cave"]  # the default model: the bundled DDPM
    cube_path = out / f"coffee{SAVE_SUFFIXES[format]}"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.name for p in cube_file_paths(cube_path, format)]
        + [f"coffee_{x}.png" for x in ("bands", "preview", "spectra")]
    )
    cube, wavelengths = load_cube_with_wavelengths(cube_path)
    assert cube.shape == (48, 64, 31) and np.isfinite(cube).all() and 0 <= cube.min() and cube.max() <= 1
    assert cube.std() > 0.01  # a real reconstruction, not a constant
    np.testing.assert_allclose(wavelengths, WAVELENGTHS)
    np.testing.assert_array_equal(load_cube(cube_path), cube)
    if format == "envi":
        import spectral  # a test dependency: the ENVI header as third-party tools read it

        image = spectral.open_image(str(cube_path))
        assert image.shape == (48, 64, 31) and image.bands.band_unit.lower() == "nanometers"
        np.testing.assert_allclose(image.bands.centers, WAVELENGTHS)
        np.testing.assert_array_equal(np.asarray(image.load()), cube)
    for plot in ("preview", "bands", "spectra"):
        with PIL.Image.open(out / f"coffee_{plot}.png") as image:
            assert image.format == "PNG"
            if plot == "preview":
                assert image.size == (64, 48) and image.mode == "RGB"
            else:
                assert min(image.size) > 100  # a figure, not an empty file
    summary = capsys.readouterr().out
    assert "coffee.png" in summary and "64x48" in summary and "1 image(s) reconstructed" in summary


def test_bundled_pixelgan_and_samples_of_the_bundled_ddpm(coffee_crop, tmp_path):
    assert reconstruct(coffee_crop, "-o", tmp_path / "gan", "--model", "hsr-diffusers/pixelgan-cave") == 0
    cube = load_cube(tmp_path / "gan" / "coffee.h5")
    assert cube.shape == (48, 64, 31) and 0 <= cube.min() and cube.max() <= 1 and cube.std() > 0.01

    assert reconstruct(coffee_crop, "-o", tmp_path / "ddpm", "--samples", 2, "--format", "npy") == 0
    spread = load_cube(tmp_path / "ddpm" / "coffee_std.npy")
    assert spread.shape == (48, 64, 31) and spread.min() >= 0 and spread.max() > 0


@pytest.mark.parametrize("model", ["./missing_dir", "missing/dir/", "a/b/c"])
def test_a_missing_model_folder_is_named_without_the_hub(model, photo, tmp_path, capsys):
    start = time.perf_counter()
    assert reconstruct(photo, "-o", tmp_path / "out", "--model", model) == 2
    assert time.perf_counter() - start < 10  # no network retries
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "no such folder" in error and model in error
    assert "huggingface.co" not in error


def test_an_uncached_hub_id_fails_fast_offline(photo, tmp_path, capsys):
    # tests/conftest.py sets HF_HUB_OFFLINE=1, as a user without network would.
    start = time.perf_counter()
    assert reconstruct(photo, "-o", tmp_path / "out", "--model", "some-org/some-model") == 2
    assert time.perf_counter() - start < 10
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "HF_HUB_OFFLINE is set" in error and "some-org/some-model" in error


def test_only_formats_written_whole_need_the_cube_in_memory(monkeypatch):
    # A machine with 64 GiB available, whatever this one has (and whether or not it has /proc/meminfo).
    monkeypatch.setattr(reconstruct_module, "_available_memory", lambda: 64 * 2**30)
    check_memory = reconstruct_module.check_memory
    huge = (200_000, 200_000, 31)  # 4.5 TiB of float32
    for format in ("h5", "npy", "envi", "tiff"):
        check_memory(*huge, format, samples=4)  # streamed: no limit from the cube's size
    for format in ("npz", "mat"):  # .mat above 2 GB is MATLAB 7.3, streamed; npz is always whole
        with pytest.raises(MemoryError, match=f"--format {format}") if format == "npz" else nullcontext():
            check_memory(*huge, format, samples=1)
    # 20000 x 20000 x 31 float32 is 46 GiB: the cube and its spread, each with the writer's copy, need 185 GiB.
    with pytest.raises(MemoryError, match=r"184\.8 GiB, and 64\.0 GiB are available; use h5, npy, envi or tiff"):
        check_memory(20_000, 20_000, 31, "npz", samples=2)
    check_memory(2_000, 2_000, 31, "npz", samples=2)  # 1.8 GiB fits
    check_memory(4_000, 4_000, 31, "mat", samples=1)  # MATLAB 5.0 (below 2 GB) is held whole: 3.7 GiB fits
    monkeypatch.setattr(reconstruct_module, "_available_memory", lambda: 2 * 2**30)
    with pytest.raises(MemoryError, match="--format mat"):
        check_memory(4_000, 4_000, 31, "mat", samples=1)  # ... but not in 2 GiB
    monkeypatch.setattr(reconstruct_module, "_available_memory", lambda: None)  # unknown: no check
    check_memory(20_000, 20_000, 31, "npz", samples=2)


# ---------------------------------------------------------------------------------------------- crashes and resuming
def run_in_subprocess(args: list) -> subprocess.Popen:
    """`python -m hsr_diffusers.cli reconstruct ...` as a user runs it, in its own session (signals reach it alone)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "hsr_diffusers.cli", "reconstruct", *map(str, args)]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def wait_for(path: Path, process: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process is not None and process.poll() is not None:
            pytest.fail(
                f"the run ended (status {process.returncode}) before {path} appeared:\n{process.stderr.read()}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def final_names(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if not p.name.startswith("."))


@slow  # a subprocess: 5-10 s. Fast lane: the killed CubeWriter of tests/data/test_io.py, the Ctrl-C test below.
def test_a_run_killed_while_writing_leaves_no_output_and_the_next_run_resumes(ddpm, tmp_path, capsys):
    # What an out-of-memory kill does: SIGKILL, no chance to clean up.
    PIL.Image.fromarray(photo_array(96, 128)).save(tmp_path / "big.png")
    out = tmp_path / "out"
    process = run_in_subprocess([tmp_path / "big.png", "-o", out, "--model", ddpm, "--steps", 200, "--format", "npy"])
    try:
        wait_for(out / ".big.partial" / ".big.partial.npy", process)  # the cube file is open and being filled
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert final_names(out) == []  # nothing under an output name, the cube least of all
    assert [p.name for p in out.iterdir()] == [".big.partial"]

    assert reconstruct(tmp_path / "big.png", "-o", out, "--model", ddpm, "--steps", 1, "--format", "npy") == 0
    assert sorted(p.name for p in out.iterdir()) == final_names(out)  # the killed run's folder is gone
    assert final_names(out) == [
        "big.npy",
        "big.wavelengths.npy",
        "big_bands.png",
        "big_preview.png",
        "big_spectra.png",
    ]
    assert load_cube(out / "big.npy").any(axis=(1, 2)).all()  # every row written: no zero rows of a half-written file


def test_skip_existing_resumes_a_folder_and_reports_what_it_skipped(ddpm, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, name in enumerate(("a.png", "b.png")):
        PIL.Image.fromarray(photo_array(seed=index)).save(folder / name)
    out = tmp_path / "out"
    common = [folder, "-o", out, "--model", ddpm, "--steps", 2]
    assert reconstruct(*common) == 0
    finished = {p.name: p.read_bytes() for p in out.iterdir()}
    # A run that was killed during b: b's outputs never reached OUT, its staging folder did.
    for path in out.glob("b*"):
        path.unlink()
    (out / ".b.partial").mkdir()
    (out / ".b.partial" / ".b.partial.h5").write_bytes(b"half a cube")
    capsys.readouterr()

    assert reconstruct(folder / "a.png", *common[1:]) == 1  # without the flag, a's outputs are in the way
    assert "--skip-existing" in capsys.readouterr().err
    assert reconstruct(*common, "--skip-existing") == 0
    printed = capsys.readouterr().out
    assert "1 image(s) reconstructed" in printed and "1 skipped" in printed
    (a_line,) = [line for line in printed.splitlines() if "a.png" in line]
    assert "skipped: outputs exist" in a_line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith("a")} == {
        name: data for name, data in finished.items() if name.startswith("a")
    }
    assert final_names(out) == sorted(finished) and not (out / ".b.partial").exists()
    load_cube(out / "b.h5")

    # Some outputs but not all is not "done": an error that names them, unless --overwrite redoes the image.
    (out / "b_spectra.png").unlink()
    assert reconstruct(*common, "--skip-existing") == 1
    assert "b.h5" in capsys.readouterr().err
    assert reconstruct(*common, "--skip-existing", "--overwrite") == 0
    assert (out / "b_spectra.png").is_file()


def test_overwrite_removes_outputs_the_new_run_does_not_write(ddpm, photo, tmp_path):
    # photo_std.png is another input: its cube photo_std.h5 is what `photo.png --samples 2` called its spread.
    PIL.Image.fromarray(photo_array(seed=1)).save(photo.parent / "photo_std.png")
    out = tmp_path / "out"
    assert reconstruct(photo, "-o", out, "--model", ddpm, "--steps", 2, "--samples", 2) == 0
    assert (out / "photo_std.h5").is_file()
    assert reconstruct(photo, "-o", out, "--model", ddpm, "--steps", 2, "--overwrite") == 0
    assert final_names(out) == ["photo.h5", "photo_bands.png", "photo_preview.png", "photo_spectra.png"]

    assert reconstruct(photo, "-o", out, "--model", ddpm, "--steps", 2, "--samples", 2, "--overwrite") == 0
    both = [photo, photo.parent / "photo_std.png"]
    assert reconstruct(*both, "-o", out, "--model", ddpm, "--steps", 2, "--overwrite") == 0
    cube, spread_or_cube = load_cube(out / "photo.h5"), load_cube(out / "photo_std.h5")
    assert spread_or_cube.mean() > 0.1 and cube.shape == spread_or_cube.shape  # now the second photo's cube, kept


def test_ctrl_c_ends_with_a_summary_and_status_130(ddpm, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    PIL.Image.fromarray(photo_array()).save(folder / "a_small.png")
    PIL.Image.fromarray(photo_array(192, 256)).save(folder / "b_big.png")  # seconds at 200 steps
    out = tmp_path / "out"

    def press_ctrl_c_during_b():
        wait_for(out / ".b_big.partial" / ".b_big.partial.h5")
        _thread.interrupt_main(signal.SIGINT)  # as the terminal delivers Ctrl-C: SIGINT to the main thread

    presser = threading.Thread(target=press_ctrl_c_during_b, daemon=True)
    presser.start()
    assert reconstruct(folder, "-o", out, "--model", ddpm, "--steps", 200) == 130
    presser.join()
    captured = capsys.readouterr()
    assert "Interrupted: 1 image(s) reconstructed" in captured.out and "--skip-existing" in captured.out
    assert "a_small.png" in captured.out and "Traceback" not in captured.err
    assert final_names(out) == ["a_small.h5", "a_small_bands.png", "a_small_preview.png", "a_small_spectra.png"]
    assert not (out / ".b_big.partial").exists()  # the image in progress is discarded


@slow
def test_sigint_to_a_real_run_gives_a_summary_and_no_traceback(ddpm, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    PIL.Image.fromarray(photo_array()).save(folder / "a_small.png")
    PIL.Image.fromarray(photo_array(192, 256)).save(folder / "b_big.png")  # seconds at 200 steps
    out = tmp_path / "out"
    process = run_in_subprocess([folder, "-o", out, "--model", ddpm, "--steps", 200])
    try:
        wait_for(out / ".b_big.partial" / ".b_big.partial.h5", process)
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 130, stderr[-3000:]
    assert "Interrupted: 1 image(s) reconstructed" in stdout and "Traceback" not in stderr
    assert final_names(out) == ["a_small.h5", "a_small_bands.png", "a_small_preview.png", "a_small_spectra.png"]
    assert not (out / ".b_big.partial").exists()
