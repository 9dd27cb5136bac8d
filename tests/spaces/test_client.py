"""The demo served on 127.0.0.1 and driven over HTTP with gradio_client: upload, run, spectra, downloads, limits."""

import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import sanitize_parameter_names

from hsr_diffusers.data import load_cube_with_wavelengths

from .conftest import DDPM, GAN, download_to_read


WAVELENGTHS = list(range(400, 701, 10))


def test_api_names_say_what_each_value_is(served_demo):
    """`Client.view_api()` names every parameter and return value from its label: no `value_23`, no name twice."""
    info = Client(served_demo, verbose=False).view_api(print_info=False, return_format="dict")
    names = {}
    for endpoint, spec in info["named_endpoints"].items():
        parameters = [sanitize_parameter_names(p["parameter_name"] or p["label"]) for p in spec["parameters"]]
        returns = [sanitize_parameter_names(p["label"]) for p in spec["returns"]]
        for values in (parameters, returns):
            assert len(set(values)) == len(values), (endpoint, values)
            assert not [name for name in values if re.fullmatch(r"(value|parameter)_\d+", name)], (endpoint, values)
        names[endpoint] = parameters, returns
    predict_returns = [
        "cube_preview_srgb_under_d65",
        "summary",
        "band_index",
        "band_image",
        "spectra_of_clicked_pixels",
        "cube_rerendered_to_rgb",
        "rerendering_error",
        "uncertainty",
        "cube_files",
    ]
    assert names == {
        "/predict": (
            ["image", "model_name", "steps", "samples", "seed", "input_is_linear", "rgb_consistency", "downscale"],
            predict_returns,
        ),
        "/spectrum_at": (["x", "y"], ["spectra_of_clicked_pixels", "spectrum_values"]),
        "/band": (["band"], ["band_image"]),
        "/download": (["format"], ["cube_files"]),
    }


def test_upload_run_download_and_spectrum(served_demo, image_files, tmp_path):
    client = Client(served_demo, verbose=False, download_files=str(tmp_path / "downloads"))
    assert {"/predict", "/spectrum_at", "/band", "/download"} <= set(
        client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    )

    outputs = client.predict(handle_file(image_files["photo"]), DDPM, 2, 2, 0, False, True, True, api_name="/predict")
    preview, status = outputs[0], outputs[1]
    assert Path(preview).is_file()
    assert "Reconstructed 31 bands (400–700 nm) of a 32×24 image" in status

    cubes = {}
    for format in (".npy", ".h5", ".mat", "ENVI (.zip)"):
        paths = client.predict(format, api_name="/download")
        cube, wavelengths = load_cube_with_wavelengths(download_to_read(paths, tmp_path / format.strip(".() ")))
        wavelengths = list(wavelengths)
        assert cube.shape == (24, 32, 31) and cube.dtype == np.float32
        assert wavelengths == WAVELENGTHS, format
        cubes[format] = cube
    for cube in cubes.values():
        np.testing.assert_array_equal(cube, cubes[".h5"])

    # The spectrum endpoint reads the session's cube: same values as the download, plus σ over the 2 samples.
    (
        _,
        spectrum,
    ) = client.predict(7, 3, api_name="/spectrum_at")
    assert (spectrum["x"], spectrum["y"]) == (7, 3) and spectrum["wavelengths"] == WAVELENGTHS
    np.testing.assert_allclose(spectrum["reflectance"], cubes[".h5"][3, 7], atol=1e-6)
    assert len(spectrum["std"]) == 31 and min(spectrum["std"]) >= 0

    band = client.predict(4, api_name="/band")
    assert band["label"] == "Band 5 of 31: 440 nm"
    with pytest.raises(AppError, match=r"Pixel \(40, 3\) is outside the 32×24 image"):
        client.predict(40, 3, api_name="/spectrum_at")


def test_pixelgan_and_a_new_session_start_empty(served_demo, image_files):
    client = Client(served_demo, verbose=False)
    with pytest.raises(AppError, match="Run a reconstruction first"):
        client.predict(0, 0, api_name="/spectrum_at")
    outputs = client.predict(handle_file(image_files["photo"]), GAN, 1, 1, 0, False, True, True, api_name="/predict")
    assert "with `tiny/pixelgan` (PixelGAN)" in outputs[1]
    _, spectrum = client.predict(0, 0, api_name="/spectrum_at")
    assert spectrum["std"] is None and len(spectrum["reflectance"]) == 31


@pytest.mark.parametrize(
    "name, message",
    [
        ("gray", "The image is grayscale"),
        ("rgba", "RGBA with transparent pixels"),
        ("corrupt", "'corrupt.png': Cannot read the file as an image: it is corrupt or not an image file"),
    ],
)
def test_bad_uploads_give_readable_errors(served_demo, image_files, name, message):
    client = Client(served_demo, verbose=False)
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(image_files[name]), GAN, 1, 1, 0, False, True, True, api_name="/predict")


def test_uploads_above_max_file_size_are_refused(app, served_demo, tmp_path):
    assert app.MAX_FILE_SIZE == "20mb"
    big = tmp_path / "big.png"
    with open(big, "wb") as file:
        file.truncate(20 * 1024 * 1024 + 1024)
    client = Client(served_demo, verbose=False)
    with pytest.raises(ValueError, match="exceeds the maximum file size of 20971520 bytes"):
        client.predict(handle_file(big), GAN, 1, 1, 0, False, True, True, api_name="/predict")
    # The server refuses it too, whatever the client does.
    with open(big, "rb") as file:
        response = httpx.post(f"{served_demo}gradio_api/upload", files={"files": ("big.png", file)}, timeout=30)
    assert response.status_code == 413


def test_predict_opens_only_uploaded_files(served_demo, image_files):
    """`/predict` takes the image unprocessed (`preprocess=False`), so this checks that Gradio still refuses a path on
    the server that no one uploaded, as it does for processed inputs."""
    url = f"{served_demo}gradio_api/call/predict"
    image = {"path": str(image_files["photo"]), "meta": {"_type": "gradio.FileData"}}
    response = httpx.post(url, json={"data": [image, GAN, 1, 1, 0, False, True, True]}, timeout=30)
    events = httpx.get(f"{url}/{response.json()['event_id']}", timeout=30).text
    assert "event: error" in events and "Reconstructed" not in events
