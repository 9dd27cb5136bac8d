"""`benchmarks/ddpm_defaults.py`, `sampling_steps.py`, `throughput.py` and `real_scenes.py` on tiny saved pipelines and
fixture data."""

# benchmarks/ is on the test path (pyproject.toml), as it is on a benchmark's own when it runs.
import json

import common
import ddpm_defaults
import numpy as np
import pytest
import real_scenes
import sampling_steps
import throughput
import torch
from diffusers import DDIMScheduler
from PIL import Image

from hsr_diffusers import HSRDiffusionPipeline, HSRFeedForwardPipeline, HSRPixelGANGenerator, MSTPlusPlus
from hsr_diffusers.data import make_synthetic_dataset

from ..testing_utils import slow, smooth_cube, tiny_ddpm_unet


@pytest.fixture(autouse=True)
def restore_torch_settings():
    """`throughput.worker` and `real_scenes.main` switch autograd off (and the latter sets one thread) for their whole
    process; here they run inside the test process."""
    threads = torch.get_num_threads()
    yield
    torch.set_grad_enabled(True)
    torch.set_num_threads(threads)


def test_rule_picks_the_fastest_configuration_within_tolerance():
    rows = [
        {"steps": 10, "tile": "256:32", "rmse": 0.100, "sam": 0.200, "seconds_per_mp": 100.0},
        {"steps": 2, "tile": "256:32", "rmse": 0.101, "sam": 0.203, "seconds_per_mp": 20.0},
        {"steps": 1, "tile": "64:16", "rmse": 0.110, "sam": 0.201, "seconds_per_mp": 5.0},  # RMSE 10 % off: out
        {"steps": 1, "tile": "128:16", "rmse": 0.100, "sam": 0.250, "seconds_per_mp": 8.0},  # SAM 25 % off: out
    ]
    assert ddpm_defaults.choose(rows, tolerance=0.02) is rows[1]
    assert ddpm_defaults.choose(rows, tolerance=0.5) is rows[2]


def test_photo_input_is_the_models_camera_rgb_of_the_requested_size():
    from hsr_diffusers.spectral import srgb_to_camera_rgb

    pipe = HSRFeedForwardPipeline(unet=MSTPlusPlus(out_channels=31, num_stages=1), response="canon_40d")
    rgb = common.photo_rgb(pipe, 50, 70)
    assert rgb.shape == (50, 70, 3) and rgb.dtype == np.float32
    assert 0 <= rgb.min() and rgb.max() <= 1 and rgb.std() > 0.01
    # Converted with the model's own response, not the default one.
    srgb = common.photo_srgb(50, 70) / np.float32(255)
    np.testing.assert_array_equal(rgb, srgb_to_camera_rgb(srgb, "canon_40d"))
    assert np.abs(rgb - srgb_to_camera_rgb(srgb)).max() > 0.01


@pytest.fixture()
def tiny_ddpm_dir(tmp_path):
    unet = tiny_ddpm_unet()
    pipe = HSRDiffusionPipeline(
        unet=unet,
        scheduler=DDIMScheduler(),
        default_tile_size=32,
        default_tile_overlap=8,
        default_num_inference_steps=2,
    )
    pipe.save_pretrained(tmp_path / "ddpm")
    return tmp_path / "ddpm"


def test_ddpm_defaults_scores_every_configuration_of_every_model_and_writes_the_choice(
    tiny_ddpm_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    data = make_synthetic_dataset(tmp_path / "data", num_train=2, num_validation=1, height=40, width=40)
    student = HSRDiffusionPipeline.from_pretrained(tiny_ddpm_dir)
    student.unet.conv_out.bias.data += 0.5  # a second model (a stand-in for a distilled student)
    student.save_pretrained(tmp_path / "student")
    args = ddpm_defaults.parse_args(
        ["--model", str(tiny_ddpm_dir), str(tmp_path / "student"), "--data", str(data), "--crop_size", "24"]
        + ["--steps", "1", "2", "--tiles", "16:4", "24:4", "--timing_megapixels", "0.0016", "--output", "defaults"]
    )
    chosen = ddpm_defaults.main(args)
    # Both models are random, so which one wins is not the point here (the rule has its own test): the choice is one
    # of the scored rows, marked once in the table, and every time is a positive measurement.
    assert chosen["model"] in (str(tiny_ddpm_dir), str(tmp_path / "student")) and chosen["steps"] in (1, 2)
    assert chosen["tile"] in ("16:4", "24:4") and chosen["seconds_per_mp"] > 0
    text = (tmp_path / "results" / "defaults.md").read_text()
    assert text.count("| 16:4 |") == 4 and text.count("| 24:4 |") == 4 and "**Chosen:**" in text
    assert text.count("**yes**") == 1 and "| -" not in text
    assert "in float32; 2 fixed crops of the `train` scenes (24x24)" in text  # never the validation split


def test_fixed_crops_take_a_side_shorter_than_the_crop_whole(tmp_path):
    # ICVL strips are 8-11 lines high: their crops keep the whole height and are cut along the width only.
    data = make_synthetic_dataset(tmp_path / "data", num_train=2, num_validation=1, height=10, width=64)
    crops = common.fixed_crops(data, "train", 24, per_scene=2)
    assert [crop.shape[:2] for _, crop in crops] == [(10, 24)] * 4
    assert [name.split("@")[1] for name, _ in crops] == ["0,13", "0,27"] * 2


def test_sampling_steps_scores_a_student_against_its_teachers_reference(tiny_ddpm_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    data = make_synthetic_dataset(tmp_path / "data", num_train=1, num_validation=1, height=40, width=40)
    teacher = HSRDiffusionPipeline.from_pretrained(tiny_ddpm_dir)
    teacher.unet.conv_out.bias.data += 0.5
    teacher.save_pretrained(tmp_path / "teacher")
    args = sampling_steps.parse_args(
        ["--model", str(tiny_ddpm_dir), "--reference_model", str(tmp_path / "teacher"), "--data", str(data)]
        + ["--crop_size", "16", "--crops_per_scene", "1", "--reference_steps", "3", "--schedulers", "DDIM"]
        + ["--steps", "1", "--output", "steps"]
    )
    sampling_steps.main(args)
    text = (tmp_path / "results" / "steps.md").read_text()
    assert f"on `{tmp_path / 'teacher'}`" in text and "validation" in text
    rows = [line for line in text.splitlines() if line.startswith("| DD")]
    assert [row.split(" | ")[:4] for row in rows] == [
        ["| DDPM (method)", "3", "yes", "1"],
        ["| DDIM", "1", "yes", "1"],
        ["| DDIM", "1", "yes", "4"],
        ["| DDIM", "1", "no", "1"],
    ]
    reference, student = (float(rows[i].split(" | ")[5]) for i in (0, 1))
    assert reference != student  # scored on different models


def test_throughput_worker_runs_each_pipeline_with_its_own_tiling(tiny_ddpm_dir, tmp_path):
    torch.manual_seed(0)
    HSRFeedForwardPipeline(
        unet=HSRPixelGANGenerator(in_channels=3, out_channels=31, num_downs=3, ngf=4)
    ).save_pretrained(tmp_path / "gan")
    spec = {"name": "PixelGAN", "kind": "gan", "path": str(tmp_path / "gan"), "megapixels": 0.01, "steps": None}
    whole = throughput.worker({**spec, "tile_size": 128})
    tiled = throughput.worker({**spec, "tile_size": 96})  # larger than one 96-pixel tile: tiled to bound memory
    assert (whole["height"], whole["width"], whole["tile"], whole["steps"]) == (100, 100, None, None)
    assert tiled["tile"] == 96 and tiled["seconds"] > 0 and tiled["peak_mib"] > 0

    ddpm = throughput.worker({**spec, "name": "DDPM", "kind": "ddpm", "path": str(tiny_ddpm_dir), "tile_size": 512})
    assert (ddpm["tile"], ddpm["steps"]) == (32, 2)  # the pipeline's own defaults
    assert throughput._settings(ddpm) == "2 steps, tiles 32"
    bf16 = throughput.worker(
        {**spec, "kind": "ddpm", "path": str(tiny_ddpm_dir), "tile_size": 512, "dtype": "bfloat16"}
    )
    assert bf16["seconds"] > 0 and bf16["steps"] == 2


def write_cave_scenes(root, size: int) -> None:
    """Two CAVE scene folders (feathers, glass_tiles) of 16-bit band PNGs, `size` x `size`, under `root`."""
    for seed, scene in enumerate(("feathers", "glass_tiles")):
        folder = root / f"{scene}_ms"
        folder.mkdir(parents=True)
        bands = np.round(smooth_cube(size, size, seed=seed) * 65535).astype(np.uint16)
        for index in range(bands.shape[-1]):
            Image.fromarray(bands[..., index]).save(folder / f"{scene}_ms_{index + 1:02d}.png")


def test_real_scenes_times_every_pipeline_and_scores_consistency(tiny_ddpm_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(real_scenes, "RESULTS_DIR", tmp_path / "results")
    write_cave_scenes(tmp_path / "cave", 16)
    (tmp_path / "icvl").mkdir()
    for seed in range(4):  # ICVL strips: 12-bit radiance, a few lines high
        rad = np.round(smooth_cube(5, 40, seed=10 + seed) * 3000).astype(np.uint16)
        np.savez(tmp_path / "icvl" / f"strip_{seed}.npz", rad=rad, bands=np.arange(400, 701, 10, dtype=np.float32))
    torch.manual_seed(0)
    HSRFeedForwardPipeline(unet=HSRPixelGANGenerator(num_downs=3, ngf=4)).save_pretrained(tmp_path / "gan")
    HSRFeedForwardPipeline(unet=MSTPlusPlus(out_channels=31, num_stages=1)).save_pretrained(tmp_path / "mst")
    args = real_scenes.parse_args(
        ["--data_dir", str(tmp_path / "cave"), "--icvl_dir", str(tmp_path / "icvl"), "--size", "16"]
        + ["--ddpm", str(tiny_ddpm_dir), "--pixelgan", str(tmp_path / "gan"), "--mst", str(tmp_path / "mst")]
        + ["--repeats", "1", "--output", "scenes"]
    )
    real_scenes.main(args)

    text = (tmp_path / "results" / "scenes.md").read_text()
    assert "- Machine: " in text and "torch threads 1" in text and "best of 1 runs" in text
    inputs = ["CAVE feathers", "CAVE glass_tiles", "ICVL mosaic 1", "ICVL mosaic 2", "photo chelsea.jpg"]
    inputs += ["photo coffee.png", "photo rocket.jpg"]
    assert "7 inputs of 16x16" in text
    lines = [line for line in text.splitlines() if line.startswith("| ") and "x) |" in line]
    per_input = {line.split(" | ")[0][2:]: line for line in lines if not line.startswith("| input |")}
    assert sorted(per_input) == sorted(inputs)
    assert all(line.count("(1.00x)") >= 1 for line in per_input.values())  # MST++ against itself
    summary = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and " / " in line][1:]
    assert [row[0][2:] for row in summary[:3]] == ["PixelGAN", "PixelGAN, no projection", "DDPM"]
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| PixelGAN | ", "| DDPM | "))]
    consistency = [row for row in rows if len(row) > 2 and "%" in row[2]]
    # The NTIRE-clean inputs only: a photo's sRGB is not what it renders to.
    assert [row[:2] for row in consistency] == [
        [f"| {model}", name] for model in ("PixelGAN", "DDPM") for name in inputs[:4]
    ]
    for row in consistency:  # the shipped projection keeps every value within 1/255 of the input on smooth cubes
        assert row[2] == "0.00%" and float(row[4]) <= 1.0

    results = json.loads((tmp_path / "results" / "scenes.json").read_text())
    assert results["inputs"] == inputs
    for name in ("PixelGAN", "DDPM"):
        spread = results["summary"][name]["ratio_wall"]
        assert 0 < spread["min"] <= spread["median"] <= spread["max"]
        shares = [results["per_input"][i][name]["projection_share"] for i in inputs]
        assert all(0 < share < 1 for share in shares)  # the projections ran, inside the pipeline's time
    assert results["per_input"]["CAVE feathers"]["MST++"]["projection_wall"] == 0


def test_projection_speed_compares_two_projections_on_every_scene(tmp_path, monkeypatch):
    import projection_speed

    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    write_cave_scenes(tmp_path / "cave", 24)
    torch.manual_seed(0)
    HSRFeedForwardPipeline(unet=HSRPixelGANGenerator(num_downs=3, ngf=4)).save_pretrained(tmp_path / "gan")
    # The "previous" projection is this checkout's, so that both columns must agree exactly.
    previous = tmp_path / "previous_spectral.py"
    previous.write_text("from hsr_diffusers.spectral import bounded_rgb_projection  # noqa: F401\n")
    args = projection_speed.parse_args(
        ["--previous", str(previous), "--data_dir", str(tmp_path / "cave"), "--model", str(tmp_path / "gan")]
        + ["--repeats", "1", "--output", "speed", "--skip_first_call"]
    )
    projection_speed.main(args)

    text = (tmp_path / "results" / "speed.md").read_text()
    assert "on the 2 CAVE scenes" in text and "best of 1" in text
    rows = [
        line.split(" | ") for line in text.splitlines() if line.startswith("| feathers") or line.startswith("| glass")
    ]
    assert len(rows) == 2 and all(row[-1] == "0.0e+00 |" for row in rows)
    assert all(float(row[1]) > 0 and float(row[2]) > 0 for row in rows)
    assert "compiles the solver" not in text  # --skip_first_call


@slow
def test_first_projection_compiles_once_then_loads_from_the_cache():
    import projection_speed

    compiling, cached = projection_speed.first_projection_seconds()
    assert compiling > cached > 0
