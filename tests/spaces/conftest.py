"""Fixtures of the Space tests: the demo module, tiny pipelines, test images and a demo served on 127.0.0.1."""

import importlib.util
import os
import socket
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from diffusers import DDPMScheduler

from hsr_diffusers import HSRDiffusionPipeline, HSRPixelGANPipeline
from hsr_diffusers.spectral import render_rgb

from ..pipelines.test_pipeline_hsr_diffusion import tiny_unet
from ..pipelines.test_pipeline_hsr_pixelgan import tiny_generator
from ..testing_utils import smooth_cube


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

SPACE_DIR = Path(__file__).resolve().parents[2] / "spaces" / "hsr-demo"
DDPM, GAN = "tiny/ddpm", "tiny/pixelgan"


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
    gan = HSRPixelGANPipeline(unet=tiny_generator())
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def served_demo(app, pipelines):
    """The demo launched in-process on 127.0.0.1 (about 1 s); yields its URL and closes it at the end of the session."""
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
