"""`HSRPipeline.from_pretrained`: every bundled model on a crop of an example photo, and the names that never reach
the Hub (paths that are not folders, Hub ids while offline)."""

import os
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from hsr_diffusers import HSRDiffusionPipeline, HSRPipeline, list_pretrained
from hsr_diffusers.pipelines.auto_pipeline import looks_like_path
from hsr_diffusers.spectral import srgb_to_camera_rgb


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """Linear camera RGB of a 48x64 crop of the example photo."""
    with PIL.Image.open(EXAMPLES / "coffee.png") as image:
        crop = np.asarray(image.convert("RGB").crop((160, 100, 224, 148)))
    return srgb_to_camera_rgb(crop / 255.0)


def test_models_are_bundled():
    assert "hsr-diffusers/ddpm-cave" in list_pretrained() and "hsr-diffusers/pixelgan-cave" in list_pretrained()


@pytest.mark.parametrize("name", list_pretrained())
def test_every_bundled_model_reconstructs_a_photo_crop(name, rgb):
    pipe = HSRPipeline.from_pretrained(name)
    pipe.set_progress_bar_config(disable=True)
    diffusion = isinstance(pipe, HSRDiffusionPipeline)
    kwargs = {"num_samples": 2, "generator": torch.Generator().manual_seed(0)} if diffusion else {}
    output = pipe(rgb, **kwargs)
    cube = output.cubes
    assert cube.shape == (1, 48, 64, 31) and cube.dtype == np.float32
    assert np.isfinite(cube).all() and 0 <= cube.min() and cube.max() <= 1
    assert cube.std() > 0.01  # a photo's spectra, not a constant
    if diffusion:  # two samples: their spread is the uncertainty
        assert output.uncertainty is not None and output.uncertainty.shape == cube.shape
        assert np.isfinite(output.uncertainty).all() and output.uncertainty.min() >= 0
    else:
        assert output.uncertainty is None


@pytest.mark.parametrize("name", ["org/name", "name", "hsr-diffusers/ddpm-cave"])
def test_hub_ids_do_not_look_like_paths(name):
    assert not looks_like_path(name)


@pytest.mark.parametrize(
    "name", ["./missing", "../missing", "/no/such/hsr_model", "~/no_such_hsr_model", "a/b/c", "missing/", Path("x/y")]
)
def test_a_path_that_is_not_a_folder_is_named_without_the_hub(name):
    assert looks_like_path(name)
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="no such folder") as info:
        HSRPipeline.from_pretrained(name)
    assert time.perf_counter() - start < 5
    assert str(name) in str(info.value) and "hsr-diffusers/ddpm-cave" in str(info.value)  # lists what would load


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="is a file, not a folder"):
        HSRPipeline.from_pretrained(str(tmp_path / "model.safetensors"))


def test_an_uncached_hub_id_fails_fast_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # tests/conftest.py
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set") as info:
        HSRPipeline.from_pretrained("some-org/some-hsr-model")
    assert time.perf_counter() - start < 5
    assert "some-org/some-hsr-model" in str(info.value)
