"""Unit tests of the Space: `predict` and its views on tiny pipelines, exports, the Blocks and the Space card. Nothing
here launches a server (see test_client.py and test_browser.py for that)."""

import ast
import re
import zipfile

import gradio as gr
import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import SpaceCard

from hsr_diffusers import HSRFeedForwardPipeline
from hsr_diffusers.data import load_cube_with_wavelengths
from hsr_diffusers.spectral import rendering_matrix, srgb_to_camera_rgb

from ..pipelines.test_pipeline_hsr_feedforward import tiny_generator
from .conftest import DDPM, GAN, SPACE_DIR, photo_array


WAVELENGTHS = list(range(400, 701, 10))


@pytest.fixture(scope="module")
def ddpm_result(app, pipelines, image_files):
    return app.predict(image_files["photo"], DDPM, steps=2, samples=3, seed=0, pipelines=pipelines)


def test_predict_ddpm_shapes_wavelengths_and_uncertainty(ddpm_result):
    result = ddpm_result
    assert result.cube.shape == (24, 32, 31) and result.cube.dtype == np.float32
    assert np.all(np.isfinite(result.cube)) and result.cube.min() >= 0 and result.cube.max() <= 1
    assert result.wavelengths == WAVELENGTHS
    assert result.uncertainty.shape == (24, 32, 31) and result.uncertainty.min() >= 0
    assert result.uncertainty.max() > 0
    assert result.preview.shape == result.rerendered_srgb.shape == (24, 32, 3)
    assert result.preview.dtype == np.uint8
    assert result.name == "photo_ddpm"
    assert "31 bands (400–700 nm)" in result.summary and "32×24" in result.summary


def test_predict_rerendering_and_colour_conversion(app, ddpm_result):
    result = ddpm_result
    # The re-rendered RGB is the cube through the training response, computed here independently.
    expected = result.cube.astype(np.float64) @ rendering_matrix("cie1964_ntire2020")
    np.testing.assert_allclose(result.rerendered, expected, atol=1e-5)
    # The photo is decoded from sRGB and mapped to the camera space; white and greys stay neutral.
    camera = srgb_to_camera_rgb(photo_array() / 255.0, "cie1964_ntire2020", WAVELENGTHS)
    np.testing.assert_allclose(result.camera_rgb, camera, atol=1e-6)
    # RGB consistency: the cube reproduces the camera RGB except where no cube in [0, 1] can.
    assert np.median(np.abs(result.rerendered - result.camera_rgb)) < 2e-3


def test_predict_seed_makes_it_deterministic(app, pipelines):
    photo = photo_array(8, 8)
    first = app.predict(photo, DDPM, steps=2, samples=1, seed=3, pipelines=pipelines)
    second = app.predict(photo, DDPM, steps=2, samples=1, seed=3, pipelines=pipelines)
    other = app.predict(photo, DDPM, steps=2, samples=1, seed=4, pipelines=pipelines)
    np.testing.assert_array_equal(first.cube, second.cube)
    assert np.abs(first.cube - other.cube).max() > 1e-3
    assert first.uncertainty is None


def test_predict_linear_input_matches_the_pipeline(app, pipelines, image_files):
    """With `input_is_linear`, predict hands the file's values to the pipeline unchanged."""
    result = app.predict(image_files["linear"], GAN, input_is_linear=True, pipelines=pipelines)
    rgb8 = np.asarray(PIL.Image.open(image_files["linear"]))
    expected = pipelines[GAN](rgb8).cubes[0]
    np.testing.assert_allclose(result.cube, expected, atol=1e-6)
    np.testing.assert_array_equal(result.camera_rgb, rgb8 / np.float32(255))
    assert result.uncertainty is None and result.wavelengths == WAVELENGTHS


def test_predict_tiles_images_larger_than_a_tile(app, pipelines):
    photo = photo_array(20, 28)
    pipe = pipelines[GAN]
    tiled = app.predict(
        photo, GAN, input_is_linear=True, rgb_consistency=False, pipelines=pipelines, tile_size=16, tile_overlap=4
    )
    expected = pipe(photo, rgb_consistency=False, tile_size=16, tile_overlap=4).cubes[0]
    whole = pipe(photo, rgb_consistency=False).cubes[0]
    np.testing.assert_allclose(tiled.cube, expected, atol=1e-6)
    assert np.abs(tiled.cube - whole).max() > 1e-3
    assert "(tiled)" in tiled.summary
    untiled = app.predict(
        photo, GAN, input_is_linear=True, rgb_consistency=False, pipelines=pipelines, tile_size=64, tile_overlap=4
    )
    np.testing.assert_allclose(untiled.cube, whole, atol=1e-6)
    assert "(tiled)" not in untiled.summary


def test_predict_downscales_or_refuses_large_images(app, pipelines):
    photo = photo_array(40, 40)
    result = app.predict(photo, GAN, pipelines=pipelines, max_megapixels=0.0004)
    assert result.cube.shape == (20, 20, 31)
    assert "Downscaled from 40×40 to 20×20" in result.summary
    with pytest.raises(gr.Error, match=r"40×40 \(0\.0 MP\); this demo accepts up to 0\.0004 MP without downscaling"):
        app.predict(photo, GAN, downscale=False, pipelines=pipelines, max_megapixels=0.0004)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("gray", {}, "The image is grayscale"),
        ("rgba", {}, "RGBA with transparent pixels"),
        ("corrupt", {}, "'corrupt.png': Cannot read the file as an image: it is corrupt or not an image file"),
        (None, {}, "No image: upload a photo"),
        ("photo", {"model_name": "no/such-model"}, "Unknown model 'no/such-model'"),
        ("photo", {"model_name": "missing/model"}, "missing/model could not be loaded"),
        ("photo", {"steps": 0}, "Use 1 to 100 steps and 1 to 8 samples, got 0 and 1"),
        ("photo", {"samples": 99}, "Use 1 to 100 steps and 1 to 8 samples, got 2 and 99"),
        ("photo", {"seed": -1}, "Use a seed from 0 to 4294967295, got -1"),
    ],
)
def test_predict_bad_inputs_give_readable_errors(app, pipelines, image_files, name, kwargs, message):
    arguments = {"model_name": DDPM, "steps": 2, "samples": 1, **kwargs}
    image = None if name is None else image_files[name]
    with pytest.raises(gr.Error) as error:
        app.predict(image, pipelines=pipelines, **arguments)
    assert message in error.value.message
    assert "/tmp" not in error.value.message  # no server paths in what the user sees


def test_truncated_file_gives_readable_error(app, pipelines, tmp_path):
    path = tmp_path / "cut.jpg"
    PIL.Image.fromarray(photo_array(64, 64)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:1500])  # the header survives, the pixel data does not
    with pytest.raises(gr.Error, match="truncated or corrupt"):
        app.predict(path, GAN, pipelines=pipelines)


def test_decompression_bombs_are_refused_before_decoding(app, pipelines, image_files, monkeypatch):
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)  # the 32×24 photo now counts as a bomb
    with pytest.raises(gr.Error, match="'photo.png': The image has too many pixels to open"):
        app.predict(image_files["photo"], GAN, pipelines=pipelines)


def test_empty_number_boxes_fall_back_to_defaults(app, pipelines):
    result = app.predict(photo_array(8, 8), GAN, steps=None, samples=None, seed=None, pipelines=pipelines)
    assert result.cube.shape == (8, 8, 31)
    # The DDPM's steps default to the model's own, not to a number of the demo's.
    steps = pipelines[DDPM].config.default_num_inference_steps
    result = app.predict(photo_array(8, 8), DDPM, steps=None, samples=None, seed=None, pipelines=pipelines)
    assert f"(DDPM, {steps} steps, 1 sample(s), seed 0)" in result.summary


def test_importing_the_app_writes_no_files(app):
    # Gradio writes `<file>.pyi` beside any module defining a Component subclass unless the app prevents it.
    assert sorted(p.name for p in SPACE_DIR.iterdir() if p.suffix in (".py", ".pyi")) == [
        "app.py",
        "make_screenshot.py",
    ]


def test_the_space_holds_no_test_code_and_no_mocks():
    """The Space folder is what gets uploaded: its scripts use gradio's public API and import nothing from `tests/`."""
    for path in SPACE_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        modules = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        modules += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [m for m in modules if m.split(".")[0] in ("tests", "mock") or m.startswith("unittest")], path.name
        assert not [m for m in modules if m.startswith("gradio.") and m not in ("gradio.themes",)], path.name
        uses_sys_path = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys"
        ]
        assert not uses_sys_path, f"{path.name} edits or reads sys.path"


def test_spectrum_at(app, ddpm_result):
    result = ddpm_result
    figure, values, points = app.spectrum_at(5, 7, result, [])
    assert (values["x"], values["y"]) == (5, 7) and values["wavelengths"] == WAVELENGTHS
    np.testing.assert_allclose(values["reflectance"], result.cube[7, 5], atol=1e-7)
    np.testing.assert_allclose(values["std"], result.uncertainty[7, 5], atol=1e-7)
    assert points == [(5, 7)]
    # Several pixels on one plot, with a ±σ band each; a repeated click moves the pixel to the end.
    figure, _, points = app.spectrum_at(1.2, 2.6, result, points)
    figure, _, points = app.spectrum_at(5, 7, result, points)
    assert points == [(1, 3), (5, 7)]
    axes = figure.axes[0]
    assert len(axes.lines) == 2 and len(axes.collections) == 2
    np.testing.assert_allclose(axes.lines[1].get_ydata(), result.cube[7, 5])
    for index in range(app.MAX_POINTS + 3):
        _, _, points = app.spectrum_at(index, 0, result, points)
    assert len(points) == app.MAX_POINTS and points[-1] == (app.MAX_POINTS + 2, 0)
    with pytest.raises(gr.Error, match=r"Pixel \(32, 0\) is outside the 32×24 image"):
        app.spectrum_at(32, 0, result, [])
    with pytest.raises(gr.Error, match="Run a reconstruction first"):
        app.spectrum_at(0, 0, None, [])


def test_band_and_heat_map_images(app, ddpm_result):
    result = ddpm_result
    grey, label = app.band_image(result, 15)
    assert label == "Band 16 of 31: 550 nm"
    white = np.percentile(result.cube, 99.5)
    assert result.white == pytest.approx(white)
    np.testing.assert_array_equal(grey, (np.clip(result.cube[..., 15] / white, 0, 1) * 255 + 0.5).astype(np.uint8))
    assert app.band_image(result, 99)[1] == "Band 31 of 31: 700 nm"
    assert app.difference_image(result).shape == app.uncertainty_image(result).shape == (24, 32, 3)


@pytest.mark.parametrize("format", [".npy", ".npz", ".h5", ".mat", ".tif", "ENVI (.zip)"])
def test_export_cube_round_trips(app, ddpm_result, tmp_path, format):
    paths = app.export_cube(ddpm_result, format, tmp_path)
    assert all(path.is_file() for path in paths)
    if format == "ENVI (.zip)":
        (archive,) = paths
        assert archive.name == "photo_ddpm_envi.zip"
        with zipfile.ZipFile(archive) as bundle:
            assert sorted(bundle.namelist()) == ["photo_ddpm.hdr", "photo_ddpm.img"]
            bundle.extractall(tmp_path / "unzipped")
        cube, wavelengths = load_cube_with_wavelengths(tmp_path / "unzipped" / "photo_ddpm.hdr")
    else:
        assert paths[0].name == f"photo_ddpm{format}"
        if format == ".npy":
            assert paths[1].name == "photo_ddpm.wavelengths.npy"
            np.testing.assert_array_equal(np.load(paths[0]), ddpm_result.cube)
        cube, wavelengths = load_cube_with_wavelengths(paths[0])
    np.testing.assert_array_equal(cube, ddpm_result.cube)
    assert list(wavelengths) == WAVELENGTHS


def test_build_demo_wires_endpoints_and_limits(app, pipelines, image_files):
    demo = app.build_demo(pipelines, examples=[])
    assert isinstance(demo, gr.Blocks)
    endpoints = {fn.api_name: fn for fn in demo.fns.values()}
    assert {"predict", "spectrum_at", "band", "download"} <= set(endpoints)
    assert endpoints["predict"].concurrency_limit == app.CONCURRENCY_LIMIT
    assert demo._queue.max_size == app.QUEUE_SIZE
    dropdown = next(block for block in demo.blocks.values() if isinstance(block, gr.Dropdown))
    assert dropdown.value == DDPM
    assert ("missing/model (unavailable)", "missing/model") in dropdown.choices
    assert "missing/model could not be loaded" in str(demo.config)
    with_examples = app.build_demo(pipelines, examples=[str(image_files["photo"])])
    assert any(isinstance(block, gr.Dataset) for block in with_examples.blocks.values())


def test_load_pipelines_tolerates_missing_models(app, tmp_path):
    torch.manual_seed(0)
    HSRFeedForwardPipeline(unet=tiny_generator()).save_pretrained(tmp_path / "gan")
    pipelines = app.load_pipelines(("hsr-diffusers/no-such-model", str(tmp_path / "gan")), device="cpu")
    assert isinstance(pipelines[str(tmp_path / "gan")], HSRFeedForwardPipeline)
    assert pipelines["hsr-diffusers/no-such-model"].startswith("The model hsr-diffusers/no-such-model could not be")


def test_examples_are_readable_photos(app):
    for path in app.find_examples():
        with PIL.Image.open(path) as image:
            assert image.mode in ("RGB", "RGBA", "P"), f"{path} is {image.mode}"


def test_space_card_front_matter(app):
    card = SpaceCard.load(SPACE_DIR / "README.md")
    data = card.data
    assert data.sdk == "gradio" and data.app_file == "app.py" and (SPACE_DIR / data.app_file).is_file()
    assert re.fullmatch(r"\d+\.\d+\.\d+", data.sdk_version)
    assert data.sdk_version.split(".")[0] == gr.__version__.split(".")[0]
    assert data.license == "apache-2.0" and data.title and data.emoji
    assert data.colorFrom and data.colorTo and isinstance(data.pinned, bool)
    assert isinstance(data.python_version, str) and re.fullmatch(r"3\.\d+", data.python_version)
    assert list(data.models) == list(app.MODELS)
    # The rest of requirements.txt is checked by test_requirements.py.
    assert f"gradio=={data.sdk_version}" in (SPACE_DIR / "requirements.txt").read_text().split()


def test_export_formats_are_every_format_the_package_writes(app):
    from hsr_diffusers.data.io import SAVE_SUFFIXES

    assert sorted(app.EXPORT_FORMATS.values()) == sorted(SAVE_SUFFIXES)


def test_photos_are_read_like_the_command_line_reads_them(app, pipelines, tmp_path):
    # hsr_diffusers.data.read_photo: a portrait photo stored sideways with an EXIF orientation comes out upright, and a
    # 16-bit photo is downscaled in 16 bits.
    image = PIL.Image.fromarray(photo_array(24, 32))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    image.save(tmp_path / "sideways.jpg", exif=exif)
    assert app.predict(tmp_path / "sideways.jpg", GAN, pipelines=pipelines).cube.shape == (32, 24, 31)
    deep = (photo_array(40, 40).astype(np.uint16) * 257)[..., :3]
    array, _, note = app._read_image(deep, max_megapixels=0.0004, downscale=True)
    assert array.dtype == np.uint16 and array.shape == (20, 20, 3) and "Downscaled" in note
