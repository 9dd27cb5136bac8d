"""The models that ship inside the package load offline by short name and produce sane cubes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hsr_diffusers import HSRDiffusionPipeline, HSRPipeline, HSRPixelGANPipeline, list_pretrained, metrics
from hsr_diffusers.pipelines.auto_pipeline import resolve_pretrained
from hsr_diffusers.spectral import render_rgb

from ..testing_utils import CAVE_DIR, requires_cave, slow, smooth_cube


BUNDLED = {"hsr-diffusers/ddpm-cave": HSRDiffusionPipeline, "hsr-diffusers/pixelgan-cave": HSRPixelGANPipeline}


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


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_model_loads_offline_and_reconstructs(name):
    pipe = HSRPipeline.from_pretrained(name)
    assert type(pipe) is BUNDLED[name]
    pipe.set_progress_bar_config(disable=True)
    cube = smooth_cube(24, 24, seed=1)
    rgb8 = render_rgb(cube)
    kwargs = {"num_inference_steps": 2, "generator": torch.Generator().manual_seed(0)} if "ddpm" in name else {}
    pred = pipe(rgb8, **kwargs).cubes[0]
    assert pred.shape == (24, 24, 31) and np.isfinite(pred).all()
    assert np.abs(render_rgb(pred, mode="linear") - rgb8 / 255).max() <= 1 / 255


def test_unknown_bundled_name_goes_to_the_hub_loader():
    # Other ids are not bundled: they are handed to huggingface_hub, which fails offline (HF_HUB_OFFLINE=1).
    assert resolve_pretrained("hsr-diffusers/not-a-model") == "hsr-diffusers/not-a-model"
    with pytest.raises(Exception):
        HSRPipeline.from_pretrained("hsr-diffusers/not-a-model")


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


@pytest.mark.parametrize("card", ["hsr-diffusion-cave.md", "hsr-pixelgan-cave.md"])
def test_model_cards_have_hub_metadata_and_the_measured_table(card):
    from huggingface_hub import ModelCard

    path = Path(__file__).resolve().parents[2] / "model_cards" / card
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
