"""The Space with the models it ships (`app.MODELS`, bundled with the package) on a crop of an example photo: `predict`
at the edges of every control, and the demo served on 127.0.0.1 driven through gradio_client at the UI's defaults
(every endpoint, every download format). The tiny-pipeline tests (test_app.py, test_client.py) are the unit tests;
these run what a user runs. The bundled weights may be retrained, so nothing here depends on their numbers: the checks
are properties every release must have (shapes, ranges, RGB consistency, agreement between endpoints)."""

import re
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from hsr_diffusers import HSRDiffusionPipeline, list_pretrained
from hsr_diffusers.data import load_cube, load_cube_with_wavelengths
from hsr_diffusers.spectral import srgb_to_camera_rgb

from ..testing_utils import slow
from .conftest import BUNDLED_DDPM, BUNDLED_GAN, CROP_BOX, EXAMPLE_PHOTO, download_to_read


HEIGHT, WIDTH = CROP_BOX[3] - CROP_BOX[1], CROP_BOX[2] - CROP_BOX[0]
MODELS = [BUNDLED_DDPM, BUNDLED_GAN]


def crop_array(photo_crop: Path) -> np.ndarray:
    return np.asarray(PIL.Image.open(photo_crop).convert("RGB"))


def check_cube(result, pipe, shape: tuple[int, int], samples: int):
    """Properties of every reconstruction, whatever the weights."""
    assert result.cube.shape == (*shape, pipe.num_bands) and result.cube.dtype == np.float32
    assert np.all(np.isfinite(result.cube)) and result.cube.min() >= 0 and result.cube.max() <= 1
    assert result.wavelengths == list(pipe.config.wavelengths)
    if isinstance(pipe, HSRDiffusionPipeline) and samples > 1:
        assert result.uncertainty.shape == result.cube.shape
        assert result.uncertainty.min() >= 0 and result.uncertainty.max() > 0
    else:
        assert result.uncertainty is None
    assert result.preview.shape == result.rerendered_srgb.shape == (*shape, 3)


def test_the_demo_serves_every_bundled_model(app):
    assert list(app.MODELS) == MODELS and set(MODELS) <= set(list_pretrained())


# Each control at its edges (the other controls at the UI's values). `None` stands for the model's default steps; the
# most steps run on an 8×8 corner of the crop, where a step is cheap (100 steps × 8 samples would take seconds more and
# adds nothing the two edges apart do not cover).
CONTROL_EDGES = {
    "fewest_steps_and_samples": {"steps": 1, "samples": 1},
    "default_steps_most_samples": {"steps": None, "samples": "max"},
    "most_steps": {"steps": "max", "samples": 1, "size": 8},
    "downscale_off": {"downscale": False},
    "linear_input": {"input_is_linear": True},
    "consistency_off": {"rgb_consistency": False},
}


@pytest.mark.parametrize("edge", list(CONTROL_EDGES))
@pytest.mark.parametrize("model", MODELS)
def test_predict_at_the_edges_of_every_control(app, bundled_pipelines, photo_crop, model, edge):
    controls = {"steps": None, "samples": 4, "seed": 0, **CONTROL_EDGES[edge]}
    controls["steps"] = app.MAX_STEPS if controls["steps"] == "max" else controls["steps"]
    controls["samples"] = app.MAX_SAMPLES if controls["samples"] == "max" else controls["samples"]
    image = crop_array(photo_crop)
    size = controls.pop("size", None)
    if size:
        image = image[:size, :size]
    pipe = bundled_pipelines[model]
    if controls.get("input_is_linear"):
        # A linear camera-RGB image, as an NTIRE "clean" PNG is: the photo taken to the model's camera space. (The
        # photo's own sRGB values, read as linear, are colours no reflectance can produce.)
        image = srgb_to_camera_rgb(image / 255.0, pipe.config.response, pipe.config.wavelengths)
        image = (image * 255 + 0.5).astype(np.uint8)

    result = app.predict(image, model, **controls, pipelines=bundled_pipelines)

    check_cube(result, pipe, image.shape[:2], controls["samples"])
    if isinstance(pipe, HSRDiffusionPipeline):
        steps = controls["steps"] or pipe.config.default_num_inference_steps
        assert f"{steps} steps, {controls['samples']} sample(s), seed 0" in result.summary
    if controls.get("input_is_linear"):
        np.testing.assert_array_equal(result.camera_rgb, image / np.float32(255))
    if controls.get("rgb_consistency", True):
        # The cube renders back to the model's input, and the re-rendered image, shown in the input's encoding,
        # to the photo as uploaded (pixels whose colour no reflectance can produce aside).
        assert np.median(np.abs(result.rerendered - result.camera_rgb)) < 0.5 / 255
        assert np.median(np.abs(result.rerendered_srgb.astype(int) - image)) <= 1
    else:
        assert np.abs(result.rerendered - result.camera_rgb).max() > 1 / 255


@pytest.mark.parametrize("model", MODELS)
def test_predict_downscales_or_refuses(app, bundled_pipelines, photo_crop, model):
    # A limit of 0.001 MP makes the 64×48 crop (0.003 MP) a large image.
    result = app.predict(photo_crop, model, pipelines=bundled_pipelines, max_megapixels=0.001)
    scale = (0.001e6 / (HEIGHT * WIDTH)) ** 0.5
    check_cube(result, bundled_pipelines[model], (int(HEIGHT * scale), int(WIDTH * scale)), 1)
    assert f"Downscaled from {WIDTH}×{HEIGHT}" in result.summary
    with pytest.raises(gr.Error, match="without downscaling"):
        app.predict(photo_crop, model, downscale=False, pipelines=bundled_pipelines, max_megapixels=0.001)


@pytest.fixture(scope="module")
def client(served_bundled_demo, tmp_path_factory):
    return Client(served_bundled_demo, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.mark.parametrize("model", MODELS)
def test_every_endpoint_at_the_ui_defaults(app, bundled_pipelines, client, photo_crop, model, tmp_path):
    pipe = bundled_pipelines[model]
    is_diffusion = isinstance(pipe, HSRDiffusionPipeline)
    photo = crop_array(photo_crop)

    # /predict with the photo and the model only: every other control at the value the page shows.
    preview, summary, _, band, _, rerendered, difference, uncertainty, files = client.predict(
        handle_file(photo_crop), model_name=model, api_name="/predict"
    )
    assert (
        f"Reconstructed {pipe.num_bands} bands" in summary and f"of a {WIDTH}×{HEIGHT} image with `{model}`" in summary
    )
    if is_diffusion:
        assert f"(DDPM, {pipe.config.default_num_inference_steps} steps, 4 sample(s), seed 0)" in summary
    mean_error = float(re.search(r"RGB re-rendering error: mean ([0-9.]+)", summary).group(1))
    assert mean_error < 1.0  # in 8-bit levels
    for path in (preview, rerendered, difference):
        assert PIL.Image.open(path).size == (WIDTH, HEIGHT)
    assert np.median(np.abs(np.asarray(PIL.Image.open(rerendered).convert("RGB")).astype(int) - photo)) <= 1
    assert (uncertainty is not None) == is_diffusion and files is None
    assert band["label"] == "Band 16 of 31: 550 nm"

    # /download in every format, read back by the package's reader: one cube, in [0, 1], with its wavelengths.
    cubes = {}
    for format in app.EXPORT_FORMATS:
        path = download_to_read(client.predict(format, api_name="/download"), tmp_path / re.sub(r"\W", "", format))
        cube, wavelengths = load_cube_with_wavelengths(path)
        np.testing.assert_array_equal(load_cube(path), cube)
        assert cube.shape == (HEIGHT, WIDTH, pipe.num_bands) and 0 <= cube.min() <= cube.max() <= 1, format
        assert list(wavelengths) == list(pipe.config.wavelengths), format
        cubes[format] = cube
    cube = cubes[".h5"]
    for format, other in cubes.items():
        np.testing.assert_array_equal(other, cube, err_msg=format)

    # /spectrum_at and /band read the same cube.
    _, spectrum = client.predict(WIDTH - 1, HEIGHT // 2, api_name="/spectrum_at")
    np.testing.assert_allclose(spectrum["reflectance"], cube[HEIGHT // 2, WIDTH - 1], atol=1e-6)
    assert (spectrum["std"] is not None) == is_diffusion
    with pytest.raises(AppError, match=rf"Pixel \({WIDTH}, 0\) is outside the {WIDTH}×{HEIGHT} image"):
        client.predict(WIDTH, 0, api_name="/spectrum_at")
    band = client.predict(pipe.num_bands - 1, api_name="/band")
    assert band["label"] == f"Band {pipe.num_bands} of {pipe.num_bands}: {pipe.config.wavelengths[-1]:g} nm"
    white = np.percentile(cube, 99.5)
    expected = np.clip(cube[..., -1] / white, 0, 1) * 255
    grey = np.asarray(PIL.Image.open(band["value"]).convert("L")).astype(float)
    assert np.abs(grey - expected).max() <= 1


@slow
@pytest.mark.parametrize("model", MODELS)
def test_the_preview_looks_like_the_uploaded_photo(app, bundled_pipelines, model, tmp_path):
    # The sRGB preview of the cube (under D65) against the photo as uploaded, on the saucer corner of the example
    # photo: the models take linear camera RGB, so a photo whose sRGB reached them unconverted came back with its red
    # saucer crimson (mean colour difference over 40 levels). Metamerism between the camera space and the eye leaves
    # a little (saturated colours), hence the tolerance, far below that.
    path = tmp_path / "saucer.png"
    with PIL.Image.open(EXAMPLE_PHOTO) as image:
        image.convert("RGB").crop((0, 96, 208, 256)).save(path)
    upload = np.asarray(PIL.Image.open(path)).astype(float)
    result = app.predict(str(path), model, samples=1, pipelines=bundled_pipelines)
    assert np.abs(result.preview - upload).mean() < 3
    unconverted = app.predict(str(path), model, samples=1, input_is_linear=True, pipelines=bundled_pipelines)
    assert np.abs(unconverted.preview - upload).mean() > 20
