"""Fixtures of the Space tests: the demo module, tiny pipelines and the bundled ones, test images (synthetic, and a crop
of an example photo) and the demo served on 127.0.0.1, once with the tiny pipelines and once with the bundled ones."""

import importlib.util
import os
import shutil
import socket
import sys
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from diffusers import DDPMScheduler

from hsr_diffusers import HSRDiffusionPipeline, HSRFeedForwardPipeline
from hsr_diffusers.spectral import render_rgb

from ..pipelines.test_pipeline_hsr_diffusion import tiny_unet
from ..pipelines.test_pipeline_hsr_feedforward import tiny_generator
from ..testing_utils import smooth_cube


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO_DIR = Path(__file__).resolve().parents[2]
SPACE_DIR = REPO_DIR / "spaces" / "hsr-demo"
DDPM, GAN = "tiny/ddpm", "tiny/pixelgan"
# The models the package ships and the demo serves (`app.MODELS`).
BUNDLED_DDPM, BUNDLED_GAN = "hsr-diffusers/ddpm-cave", "hsr-diffusers/pixelgan-cave"
# A 64×48 crop of an example photo: the cup's white rim, its red glaze, coffee and table. Small enough for one tile of
# either bundled model, real enough to have saturated whites and colours no smooth synthetic scene has.
EXAMPLE_PHOTO = REPO_DIR / "examples" / "coffee.png"
CROP_BOX = (196, 96, 260, 144)  # left, top, right, bottom


def load_app():
    """Imports `spaces/hsr-demo/app.py` (the folder name is not a valid package name) once per process."""
    if "hsr_demo_app" not in sys.modules:
        spec = importlib.util.spec_from_file_location("hsr_demo_app", SPACE_DIR / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["hsr_demo_app"] = module
        spec.loader.exec_module(module)
    return sys.modules["hsr_demo_app"]


def make_tiny_pipelines() -> dict:
    """A tiny DDPM and a tiny PixelGAN (random weights, as in the pipeline tests), plus a model that failed to load."""
    ddpm = HSRDiffusionPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=1000))
    gan = HSRFeedForwardPipeline(unet=tiny_generator())
    for pipe in (ddpm, gan):
        pipe.set_progress_bar_config(disable=True)
    return {DDPM: ddpm, GAN: gan, "missing/model": "The model missing/model could not be loaded (not bundled yet)."}


def photo_array(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """A white-balanced 8-bit sRGB 'photo': the sRGB preview of a smooth reflectance cube."""
    from hsr_diffusers.spectral import srgb_preview

    return srgb_preview(smooth_cube(height, width, seed=seed))


@pytest.fixture(scope="session")
def app():
    return load_app()


@pytest.fixture(scope="session")
def pipelines():
    return make_tiny_pipelines()


@pytest.fixture(scope="session")
def image_files(tmp_path_factory) -> dict[str, Path]:
    """Real image files: an sRGB photo, a linear camera-RGB PNG, grayscale, RGBA with transparency, and a corrupt PNG."""
    folder = tmp_path_factory.mktemp("images")
    files = {name: folder / f"{name}.png" for name in ("photo", "linear", "gray", "rgba", "corrupt")}
    PIL.Image.fromarray(photo_array()).save(files["photo"])
    PIL.Image.fromarray(render_rgb(smooth_cube(24, 32, seed=1))).save(files["linear"])
    PIL.Image.fromarray(photo_array()[..., 0]).save(files["gray"])
    rgba = np.dstack([photo_array(), np.full((24, 32), 128, np.uint8)])
    PIL.Image.fromarray(rgba, mode="RGBA").save(files["rgba"])
    # A PNG signature followed by garbage: named like an image, but no decoder can read it.
    files["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return files


@pytest.fixture(scope="session")
def photo_crop(tmp_path_factory) -> Path:
    """`CROP_BOX` of `examples/coffee.png`, saved as a PNG (what a user uploads)."""
    path = tmp_path_factory.mktemp("photo") / "coffee_crop.png"
    with PIL.Image.open(EXAMPLE_PHOTO) as image:
        image.convert("RGB").crop(CROP_BOX).save(path)
    return path


@pytest.fixture(scope="session")
def bundled_pipelines(app) -> dict:
    """The bundled models, loaded by the demo's own `load_pipelines` (about 0.3 s)."""
    pipelines = app.load_pipelines(device="cpu")
    failed = [pipe for pipe in pipelines.values() if isinstance(pipe, str)]
    assert not failed, failed
    for pipe in pipelines.values():
        pipe.set_progress_bar_config(disable=True)
    return pipelines


def download_to_read(paths: list[str], folder: Path) -> Path:
    """
    The file to read of one `/download` answer, as gradio_client saved it: the `.hdr` of an unzipped ENVI archive, or
    the `.npy` copied beside its `.wavelengths.npy` (the client saves each file of an answer in a folder of its own).
    """
    folder.mkdir(parents=True)
    path = Path(paths[0])
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as bundle:
            assert sorted(Path(name).suffix for name in bundle.namelist()) == [".hdr", ".img"]
            bundle.extractall(folder)
        return next(folder.glob("*.hdr"))
    if path.suffix == ".npy":
        sidecar = Path(paths[1])
        assert sidecar.name == path.stem + ".wavelengths.npy"
        for file in (path, sidecar):
            shutil.copy(file, folder / file.name)
        return folder / path.name
    assert len(paths) == 1
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(app, pipelines):
    """Launches `app.build_demo(pipelines)` in-process on 127.0.0.1 (about 1 s), yields its URL, then closes it."""
    demo = app.build_demo(pipelines, examples=[])
    port = free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        share=False,
        ssr_mode=False,
        max_file_size=app.MAX_FILE_SIZE,
        quiet=True,
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


# One server per set of pipelines for the whole session: the client and browser tests share it.
@pytest.fixture(scope="session")
def served_demo(app, pipelines):
    """The demo with the tiny pipelines."""
    yield from serve(app, pipelines)


@pytest.fixture(scope="session")
def served_bundled_demo(app, bundled_pipelines):
    """The demo as `app.py` runs it: the bundled models, in `app.MODELS` order."""
    yield from serve(app, bundled_pipelines)
