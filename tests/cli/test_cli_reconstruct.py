"""`hsr reconstruct` and the `examples/` folder, run in-process with tiny pipelines saved to a temporary folder."""

import runpy
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import tifffile
import torch
from diffusers import DDPMScheduler

from hsr_diffusers import HSRDiffusionPipeline, HSRPixelGANGenerator, HSRPixelGANPipeline, srgb_preview
from hsr_diffusers.cli import main
from hsr_diffusers.cli.reconstruct import read_image
from hsr_diffusers.data import load_cube_with_wavelengths
from hsr_diffusers.spectral import srgb_to_camera_rgb
from tests.testing_utils import smooth_cube, tiny_ddpm_unet


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WAVELENGTHS = np.arange(400.0, 701.0, 10.0)
CUBE_SUFFIXES = {"h5": ".h5", "npy": ".npy", "mat": ".mat", "envi": ".hdr", "tiff": ".tif"}


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
    HSRPixelGANPipeline(unet=HSRPixelGANGenerator(out_channels=31, num_downs=3, ngf=4)).save_pretrained(path)
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


def write_png16(path: Path, array: np.ndarray) -> None:
    """A 16-bit RGB/RGBA PNG written byte by byte (Pillow cannot write one)."""
    height, width, channels = array.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("format", sorted(CUBE_SUFFIXES))
def test_every_format_writes_the_cube_with_wavelengths_and_the_plots(format, ddpm, photo, tmp_path, capsys):
    out = tmp_path / "out"
    assert reconstruct(photo, "-o", out, "--model", ddpm, "--steps", 2, "--format", format) == 0
    cube, wavelengths = load_cube_with_wavelengths(out / f"photo{CUBE_SUFFIXES[format]}")
    assert cube.shape == (24, 32, 31) and 0 <= cube.min() and cube.max() <= 1
    np.testing.assert_allclose(wavelengths, WAVELENGTHS)
    if format == "envi":
        header = (out / "photo.hdr").read_text()
        assert "wavelength = {400, 410," in header and "wavelength units = Nanometers" in header
        assert (out / "photo.img").stat().st_size == 24 * 32 * 31 * 4
        spectral = pytest.importorskip("spectral")
        image = spectral.open_image(str(out / "photo.hdr"))
        np.testing.assert_allclose(image.bands.centers, WAVELENGTHS)
        np.testing.assert_array_equal(np.asarray(image.load()), cube)
    for plot in ("preview", "bands", "spectra"):
        with PIL.Image.open(out / f"photo_{plot}.png") as image:
            assert image.format == "PNG"
            if plot == "preview":
                assert image.size == (32, 24) and image.mode == "RGB"
            else:
                assert min(image.size) > 100  # a figure, not an empty file
    assert not list(out.glob("*_std*"))  # one sample: no spread to write
    summary = capsys.readouterr().out
    assert "file" in summary and "photo.png" in summary and "24" in summary and "1 image(s) reconstructed" in summary


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
        ("b_corrupt.png", "cannot read the image"),
        ("c_gray.png", "grayscale"),
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
    assert "1 image(s) reconstructed" in captured.out and "6 failed" in captured.out


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
    for name in ("deep.png", "deep.tif"):
        loaded = read_image(tmp_path / name)
        assert loaded.dtype == np.uint16
        np.testing.assert_array_equal(loaded, array)
    rgba = np.dstack([array, np.full((24, 32), 65535, np.uint16)])
    write_png16(tmp_path / "deep_rgba.png", rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "deep_rgba.png"), rgba)

    # Through the command, the model sees all 16 bits; a TIFF cube written next to a TIFF input never replaces it.
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
