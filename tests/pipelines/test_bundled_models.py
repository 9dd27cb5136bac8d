"""The models that ship inside the package load offline by short name and produce sane cubes."""

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from hsr_diffusers import HSRDiffusionPipeline, HSRFeedForwardPipeline, HSRPipeline, list_pretrained, metrics
from hsr_diffusers.pipelines.auto_pipeline import resolve_pretrained
from hsr_diffusers.spectral import render_rgb, srgb_to_camera_rgb

from ..testing_utils import CAVE_DIR, requires_cave, slow, smooth_cube


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUNDLED = {"hsr-diffusers/ddpm-cave": HSRDiffusionPipeline, "hsr-diffusers/pixelgan-cave": HSRFeedForwardPipeline}


def test_bundled_models_are_listed_and_small():
    assert set(BUNDLED) <= set(list_pretrained())
    total = sum(f.stat().st_size for name in BUNDLED for f in Path(resolve_pretrained(name)).rglob("*") if f.is_file())
    assert total < 50 * 2**20
    for name in BUNDLED:
        folder = Path(resolve_pretrained(name))
        assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pkl"))
        assert json.loads((folder / "model_index.json").read_text())["wavelengths"] == list(range(400, 701, 10))
        card = (folder / "README.md").read_text()
        assert "pipeline_tag: image-to-image" in card and "train_" in card


@pytest.fixture(scope="module")
def photo_crop() -> PIL.Image.Image:
    """A 48x64 crop of the example photo: one tile of the bundled DDPM."""
    with PIL.Image.open(EXAMPLES / "coffee.png") as image:
        return image.convert("RGB").crop((160, 100, 224, 148))


@pytest.mark.parametrize("name", list_pretrained())
def test_every_bundled_model_loads_offline_and_reconstructs(name, photo_crop):
    pipe = HSRPipeline.from_pretrained(name)
    assert isinstance(pipe, BUNDLED.get(name, (HSRDiffusionPipeline, HSRFeedForwardPipeline)))
    pipe.set_progress_bar_config(disable=True)
    diffusion = pipe.is_sampler

    # A photo, with the model's own default steps and tiles: converted by the pipeline, with the model's response.
    def kwargs():
        return {"num_samples": 2, "generator": torch.Generator().manual_seed(0)} if diffusion else {}

    output = pipe(photo_crop, **kwargs())
    srgb = np.asarray(photo_crop, dtype=np.float32) / 255
    camera_rgb = srgb_to_camera_rgb(srgb, pipe.config.response, pipe.config.wavelengths)
    np.testing.assert_array_equal(output.cubes, pipe(camera_rgb, **kwargs()).cubes)
    cube = output.cubes
    assert cube.shape == (1, 48, 64, 31) and cube.dtype == np.float32
    assert np.isfinite(cube).all() and 0 <= cube.min() and cube.max() <= 1
    assert cube.std() > 0.01  # a photo's spectra, not a constant
    if diffusion:  # two samples: their spread is the uncertainty
        assert output.uncertainty is not None and output.uncertainty.shape == cube.shape
        assert np.isfinite(output.uncertainty).all() and output.uncertainty.min() >= 0
    else:
        assert output.uncertainty is None

    # An 8-bit NTIRE-clean render of a cube: the reconstruction renders back to it within one level.
    rgb8 = render_rgb(smooth_cube(24, 24, seed=1))
    kwargs = {"num_inference_steps": 2, "generator": torch.Generator().manual_seed(0)} if diffusion else {}
    pred = pipe(rgb8, **kwargs).cubes[0]
    assert pred.shape == (24, 24, 31) and np.isfinite(pred).all()
    assert np.abs(render_rgb(pred, mode="linear") - rgb8 / 255).max() <= 1 / 255


def test_unknown_bundled_name_goes_to_the_hub_loader():
    # Other ids under the bundled models' org are not bundled: they are handed to the Hub loader, which fails fast
    # offline (HF_HUB_OFFLINE=1, tests/conftest.py) and says why.
    assert resolve_pretrained("hsr-diffusers/not-a-model") == "hsr-diffusers/not-a-model"
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set") as info:
        HSRPipeline.from_pretrained("hsr-diffusers/not-a-model")
    assert str(info.value).startswith("hsr-diffusers/not-a-model: not a local folder or a bundled model")


@slow
@requires_cave
@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_models_beat_the_root_polynomial_floor_on_cave_validation(name):
    from hsr_diffusers.data import load_cube

    pipe = HSRPipeline.from_pretrained(name)
    pipe.set_progress_bar_config(disable=True)
    for scene in ("feathers", "glass_tiles"):
        cube = load_cube(CAVE_DIR / f"{scene}_ms")
        rgb = render_rgb(cube) / np.float32(255)
        kwargs = {"generator": torch.Generator().manual_seed(0)} if "ddpm" in name else {}
        pred = pipe(rgb, **kwargs).cubes[0]  # the model's own default steps and tiles, as shipped
        with torch.no_grad():  # the pipeline's own (projected) closed-form estimate: the floor the network must beat
            estimate = pipe.prepare_estimate(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
        assert metrics.sam(pred, cube) < metrics.sam(estimate, cube)


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_model_cards_have_hub_metadata_and_the_measured_table(name):
    from huggingface_hub import ModelCard

    # The card's one home is the model's folder (its README.md, as on the Hub); model_cards/ holds only templates.
    path = Path(resolve_pretrained(name)) / "README.md"
    data = ModelCard.load(path).data
    assert data.pipeline_tag == "image-to-image" and data.license and data.datasets and data.metrics
    assert {"hyperspectral", "spectral-reconstruction", "diffusers"} <= set(data.tags)
    text = path.read_text()
    assert "cave_tables.py" in text and "| RMSE ↓ |" not in text.split("## Evaluation")[0]
    assert "{" not in text.split("## Evaluation")[1].split("```")[0]  # no unfilled template fields


@requires_cave
@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_models_reproduce_a_real_scene_crop_within_one_level(name):
    # A dark corner of a validation scene, NTIRE-clean: 8-bit values near 0, hundreds of them outside the camera's
    # gamut after truncation. With `rgb_consistency` the output must re-render within 1/255 everywhere.
    from hsr_diffusers.data import load_cube

    rgb8 = render_rgb(load_cube(CAVE_DIR / "feathers_ms")[376:424, 376:424])
    pipe = HSRPipeline.from_pretrained(name)
    pipe.set_progress_bar_config(disable=True)
    # The same call for both kinds: the feed-forward pipeline accepts and ignores the sampling arguments.
    output = pipe(rgb8, num_inference_steps=1, num_samples=2, generator=torch.Generator().manual_seed(0))
    assert output.cubes.shape == (1, 48, 48, 31) and output.cubes.min() >= 0 and output.cubes.max() <= 1
    assert np.abs(render_rgb(output.cubes[0], mode="linear") - rgb8 / 255).max() <= 1 / 255
