"""`hsr_diffusers.evaluation` on tiny pipelines and a synthetic dataset, and `benchmarks/cave_tables.py` end to end.

Every number of the evaluator is checked against a direct call of the metric function on an independently made
prediction; the calibration is checked on cases whose answer is known by construction.
"""

import csv
import importlib.util
import io
import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image

from hsr_diffusers import (
    HSRDiffusionPipeline,
    HSRFeedForwardPipeline,
    HSRPixelGANGenerator,
    RootPolynomialRegression,
    metrics,
)
from hsr_diffusers.data import build_dataset, get_cube, make_synthetic_dataset, save_cube
from hsr_diffusers.evaluation import CalibrationStats, evaluate, uncertainty_calibration
from hsr_diffusers.spectral import render_rgb
from tests.testing_utils import smooth_cube, tiny_ddpm_unet


REPO_ROOT = Path(__file__).resolve().parents[1]
WAVELENGTHS = np.arange(400.0, 701.0, 10.0)


def tiny_ddpm() -> HSRDiffusionPipeline:
    return HSRDiffusionPipeline(unet=tiny_ddpm_unet(), scheduler=DDPMScheduler(num_train_timesteps=1000))


def tiny_gan() -> HSRFeedForwardPipeline:
    torch.manual_seed(0)
    return HSRFeedForwardPipeline(unet=HSRPixelGANGenerator(in_channels=3, out_channels=31, num_downs=3, ngf=4))


def root_poly() -> HSRFeedForwardPipeline:
    cube = smooth_cube(16, 16, seed=7)
    return HSRFeedForwardPipeline(unet=RootPolynomialRegression(degree=2).fit(render_rgb(cube) / 255.0, cube))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """1 training and 2 validation scenes of 24x20x31 (non-square, large enough for SSIM's 11x11 window)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("eval"), num_train=1, num_validation=2, height=24, width=20)


@pytest.fixture(scope="module")
def ddpm_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddpm")
    tiny_ddpm().save_pretrained(folder)
    return folder


def direct_prediction(pipe, rgb, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    output = pipe(rgb, **kwargs)
    return output.cubes[0], None if output.uncertainty is None else output.uncertainty[0]


def test_every_number_matches_direct_metric_calls(dataset, ddpm_dir):
    pipes = {"ddpm": ddpm_dir, "gan": tiny_gan(), "root_poly": root_poly()}
    result = evaluate(pipes, dataset, num_inference_steps=2, num_samples=3, seed=5)

    validation = datasets.load_from_disk(str(dataset))["validation"]
    assert result.scenes == list(validation["name"]) and len(result.rows) == 6
    ddpm = HSRDiffusionPipeline.from_pretrained(ddpm_dir)
    pooled = {"pred": [], "sigma": [], "target": []}
    for row in result.rows:
        index = result.scenes.index(row["scene"])
        cube = np.array(get_cube(validation, index))
        rgb = (render_rgb(cube, "cie1964_ntire2020") / 255.0).astype(np.float32)
        if row["method"] == "ddpm":
            generator = torch.Generator().manual_seed(5)
            pred, sigma = direct_prediction(ddpm, rgb, num_inference_steps=2, num_samples=3, generator=generator)
            pooled["pred"].append(pred), pooled["sigma"].append(sigma), pooled["target"].append(cube)
        else:
            pred, sigma = direct_prediction(pipes[row["method"]], rgb)
        expected = {
            "mrae": metrics.mrae(pred, cube, eps=1 / 65535),
            "rmse": metrics.rmse(pred, cube),
            "psnr": metrics.psnr(pred, cube),
            "sam": metrics.sam(pred, cube),
            "sam_deg": metrics.sam_degrees(pred, cube),
            "ssim": metrics.ssim(pred, cube),
            # Against the 8-bit RGB the pipeline saw, not the unquantised rendering.
            "backprojection_mrae": metrics.backprojection_mrae(pred, rgb, eps=1 / 255),
        }
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, rel=1e-6, abs=1e-12), (row["method"], row["scene"], name)
        assert row["time_s"] > 0 and row["nonfinite_values"] == 0
        assert ("within_1sigma" in row) == (row["method"] == "ddpm")

    means = result.means()
    for method in pipes:
        rows = [row for row in result.rows if row["method"] == method]
        assert means[method]["rmse"] == pytest.approx(np.mean([row["rmse"] for row in rows]))

    # The pooled calibration equals a direct computation over every value of both scenes.
    pred, sigma, target = (np.stack(pooled[key]) for key in ("pred", "sigma", "target"))
    error = np.abs(pred - target).ravel()
    calibration = result.calibration["ddpm"]
    assert list(result.calibration) == ["ddpm"]
    assert calibration["sigma_error_pearson"] == pytest.approx(np.corrcoef(sigma.ravel(), error)[0, 1], abs=1e-9)
    assert calibration["within_1sigma"] == pytest.approx(np.mean(error <= sigma.ravel()))
    assert calibration["within_2sigma"] == pytest.approx(np.mean(error <= 2 * sigma.ravel()))
    assert calibration["num_values"] == error.size


def test_crop_tiling_and_max_scenes_reach_the_metrics(dataset):
    pipe = root_poly()
    result = evaluate({"rp": pipe}, dataset, crop=3, tile_size=16, max_scenes=1)
    assert result.scenes == ["scene_001"] and result.settings["tile_overlap"] == 2
    cube = np.array(get_cube(datasets.load_from_disk(str(dataset))["validation"], 0))
    rgb = (render_rgb(cube) / 255.0).astype(np.float32)
    pred, _ = direct_prediction(pipe, rgb, tile_size=16, tile_overlap=2)
    row = result.rows[0]
    assert row["rmse"] == pytest.approx(metrics.rmse(pred, cube, crop=3), rel=1e-6)
    assert row["ssim"] == pytest.approx(metrics.ssim(pred, cube, crop=3), rel=1e-6)
    assert row["rmse"] != pytest.approx(metrics.rmse(pred, cube), rel=1e-6)


def test_calibration_known_answers():
    # sigma and |error| with zero covariance by construction: Pearson 0, 2 of 4 within 1 sigma, 3 of 4 within 2 sigma.
    sigma = np.array([1.0, 2.0, 1.0, 2.0])
    target = np.zeros(4)
    pred = np.array([1.0, -1.0, 3.0, -3.0])  # |error| = 1, 1, 3, 3
    values = uncertainty_calibration(pred, sigma, target)
    assert values["sigma_error_pearson"] == pytest.approx(0.0, abs=1e-12)
    assert values["within_1sigma"] == 0.5 and values["within_2sigma"] == 0.75 and values["num_values"] == 4

    # |error| = 1.5 sigma everywhere: perfectly correlated, never within 1 sigma, always within 2.
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.01, 0.1, size=(6, 5, 31))
    target = rng.uniform(0, 1, size=(6, 5, 31))
    pred = target + 1.5 * sigma * rng.choice([-1.0, 1.0], size=sigma.shape)
    values = uncertainty_calibration(pred, sigma, target)
    assert values["sigma_error_pearson"] == pytest.approx(1.0)
    assert values["within_1sigma"] == 0.0 and values["within_2sigma"] == 1.0

    # Streaming over images pools exactly like one call on everything.
    stats = CalibrationStats()
    stats.update(pred[:2], sigma[:2] * 3, target[:2])
    stats.update(pred[2:], sigma[2:], target[2:])
    together = uncertainty_calibration(pred, np.concatenate([sigma[:2] * 3, sigma[2:]]), target)
    for key, value in stats.result().items():
        assert value == pytest.approx(together[key], rel=1e-12)

    # Undefined or invalid cases are NaN, not dropped.
    assert math.isnan(uncertainty_calibration(pred, np.full_like(sigma, 0.05), target)["sigma_error_pearson"])
    pred[0, 0, 0] = np.nan
    assert all(math.isnan(v) for k, v in uncertainty_calibration(pred, sigma, target).items() if k != "num_values")


def test_each_pipeline_runs_with_its_own_defaults_unless_overridden(dataset):
    ddpm, gan = tiny_ddpm(), tiny_gan()
    ddpm.register_to_config(default_num_inference_steps=3, default_tile_size=16, default_tile_overlap=4)
    gan.register_to_config(default_tile_size=16, default_tile_overlap=2)
    result = evaluate({"ddpm": ddpm, "gan": gan}, dataset, max_scenes=1)
    assert result.methods["ddpm"]["run_with"] == "3 steps, tiles 16/4"
    assert result.methods["gan"]["run_with"] == "tiles 16/2"
    assert "| ddpm | UNet2DModel | " in result.mean_table() and "| 3 steps, tiles 16/4 |" in result.mean_table()
    cube = np.array(get_cube(datasets.load_from_disk(str(dataset))["validation"], 0))
    rgb = (render_rgb(cube) / 255.0).astype(np.float32)
    generator = torch.Generator().manual_seed(0)
    expected = direct_prediction(ddpm, rgb, num_inference_steps=3, tile_size=16, tile_overlap=4, generator=generator)
    row = next(row for row in result.rows if row["method"] == "ddpm")
    assert row["rmse"] == pytest.approx(metrics.rmse(expected[0], cube), rel=1e-6)

    overridden = evaluate({"ddpm": ddpm, "gan": gan}, dataset, max_scenes=1, num_inference_steps=2, tile_size=24)
    assert overridden.methods["ddpm"]["run_with"] == "2 steps, tiles 24/3"
    assert overridden.methods["gan"]["run_with"] == "tiles 24/3"


def test_nan_predictions_are_reported_not_dropped(dataset, tmp_path):
    broken = RootPolynomialRegression(degree=2)
    with torch.no_grad():
        broken.weight.fill_(float("nan"))
    result = evaluate({"ok": root_poly(), "broken": HSRFeedForwardPipeline(unet=broken)}, dataset)
    rows = [row for row in result.rows if row["method"] == "broken"]
    assert all(math.isnan(row["mrae"]) and row["nonfinite_values"] == 24 * 20 * 31 for row in rows)
    assert math.isnan(result.means()["broken"]["rmse"]) and not math.isnan(result.means()["ok"]["rmse"])
    markdown = result.to_markdown()
    assert "| broken | RootPolynomialRegression | 0.000186 | whole image | NaN | NaN |" in markdown
    assert "**Warning:** predictions with NaN or Inf values" in markdown
    saved = json.loads(result.to_json(tmp_path / "r.json").read_text())  # Python's json reads NaN back
    assert math.isnan(saved["mean"]["broken"]["mrae"])
    table = list(csv.DictReader(io.StringIO(result.to_csv(tmp_path / "r.csv").read_text())))
    assert [row["mrae"] for row in table if row["method"] == "broken"] == ["nan", "nan"]


def test_paired_rgb_is_what_the_pipelines_see(tmp_path):
    """A dataset with paired RGB images: the evaluator uses them (not a rendering) for input and back-projection."""
    rng = np.random.default_rng(1)
    for index in range(2):
        cube = smooth_cube(16, 16, seed=index)
        save_cube(tmp_path / "cubes" / f"s{index}.npy", cube, WAVELENGTHS)
        noisy = np.clip(render_rgb(cube).astype(int) + rng.integers(-6, 7, size=(16, 16, 3)), 0, 255)
        (tmp_path / "rgb").mkdir(exist_ok=True)
        Image.fromarray(noisy.astype(np.uint8)).save(tmp_path / "rgb" / f"s{index}.png")
    build_dataset(tmp_path / "cubes", tmp_path / "data", split={"validation": ["s0", "s1"]}, rgb_dir=tmp_path / "rgb")

    pipe = root_poly()
    result = evaluate({"rp": pipe}, tmp_path / "data", rgb_consistency=False)
    for index, row in enumerate(result.rows):
        rgb = np.asarray(Image.open(tmp_path / "rgb" / f"s{index}.png"), dtype=np.float32) / 255.0
        pred, _ = direct_prediction(pipe, rgb, rgb_consistency=False)
        cube = smooth_cube(16, 16, seed=index)
        assert row["rmse"] == pytest.approx(metrics.rmse(pred, cube), rel=1e-6)
        assert row["backprojection_mrae"] == pytest.approx(metrics.backprojection_mrae(pred, rgb, eps=1 / 255))


def test_tables_and_files(dataset, tmp_path):
    result = evaluate({"gan": tiny_gan(), "rp": root_poly()}, dataset)
    markdown = result.to_markdown()
    assert "`target + 1/65535`" in markdown and "`rgb + 1/255`" in markdown
    mean_rows = [line for line in markdown.splitlines() if line.startswith("| gan |") or line.startswith("| rp |")]
    assert len(mean_rows) == 2
    # Per-scene table: a row per scene and a mean row, a column group (MRAE, RMSE, SAM) per method.
    per_scene = markdown.split("## Per scene")[1].strip().splitlines()
    assert per_scene[0] == (
        "| Scene | gan MRAE ↓ | gan RMSE ↓ | gan SAM (°) ↓ | rp MRAE ↓ | rp RMSE ↓ | rp SAM (°) ↓ |"
    )
    assert [line.split(" | ")[0] for line in per_scene[2:]] == ["| scene_001", "| scene_002", "| **Mean**"]
    row = next(r for r in result.rows if r["method"] == "rp" and r["scene"] == "scene_002")
    assert f"| {row['mrae']:.4f} | {row['rmse']:.4f} | {row['sam_deg']:.2f} |" in per_scene[3]
    assert "Uncertainty calibration" not in markdown

    paths = result.save(tmp_path / "out")
    assert paths["md"].read_text() == markdown
    table = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert [(r["method"], r["scene"]) for r in table] == [(r["method"], r["scene"]) for r in result.rows]
    assert float(table[0]["sam"]) == result.rows[0]["sam"]
    saved = json.loads(paths["json"].read_text())
    assert saved["settings"]["mrae_eps"] == 1 / 65535 and saved["methods"]["rp"]["num_parameters"] == 6 * 31
    assert saved["mean"]["gan"]["ssim"] == pytest.approx(result.means()["gan"]["ssim"])


def test_bad_arguments(dataset):
    with pytest.raises(ValueError, match="no split 'test'"):
        evaluate({"rp": root_poly()}, dataset, split="test")
    with pytest.raises(ValueError, match="No pipeline"):
        evaluate({}, dataset)
    wrong_bands = HSRFeedForwardPipeline(
        unet=RootPolynomialRegression(degree=1, out_channels=16), wavelengths=list(range(400, 701, 20))
    )
    with pytest.raises(ValueError, match="predicts bands at"):
        evaluate({"x": wrong_bands}, dataset)


# ---------------------------------------------------------------------------------------------------- cave_tables.py
def load_cave_tables():
    spec = importlib.util.spec_from_file_location("cave_tables", REPO_ROOT / "benchmarks" / "cave_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cave_tables_reads_training_budgets_from_json_not_from_the_card(tmp_path):
    cave_tables = load_cave_tables()
    folder = tmp_path / "run"
    folder.mkdir()
    # A card whose prose states a budget: read by people only.
    (folder / "README.md").write_text("- **train_steps**: 8000\n\nbatch 16, 8000 steps; 95.3 minutes of training.\n")
    assert cave_tables.read_training_budget(folder) == {}

    (folder / "checkpoint-900" / "nested").mkdir(parents=True)
    (folder / "checkpoint-1200").mkdir()
    (folder / "checkpoint-1200" / "train_meta.json").write_text(json.dumps({"wall_time_minutes": 12.345}))
    assert cave_tables.read_training_budget(folder) == {"train_steps": "1200", "wall_time_minutes": "12.3"}

    # The folder's own train_meta.json wins over the checkpoints; keys outside the budget are ignored.
    facts = {"train_steps": 3400, "batch_size": 16, "wall_time_minutes": "45.6", "seed": 0, "hardware": "1 CPU"}
    (folder / "train_meta.json").write_text(json.dumps(facts))
    budget = cave_tables.read_training_budget(folder)
    assert budget == {"train_steps": "3400", "batch_size": "16", "wall_time_minutes": "45.6", "hardware": "1 CPU"}


@pytest.mark.parametrize("name", ["hsr-diffusers/ddpm-cave", "hsr-diffusers/pixelgan-cave"])
def test_bundled_models_record_their_training_budget(name):
    budget = load_cave_tables().read_training_budget(name)
    assert set(budget) >= {"train_steps", "batch_size", "wall_time_minutes", "hardware", "training_command"}
    assert "train_scripts/" in budget["training_command"]


def test_cave_tables_end_to_end(dataset, ddpm_dir, tmp_path, capsys):
    from script_model_card import write_model_card  # train_scripts/, on the test path (pyproject.toml)

    cave_tables = load_cave_tables()
    # A GAN folder with the facts a training run records, a DDPM folder with only checkpoints.
    gan_dir = tmp_path / "gan"
    tiny_gan().save_pretrained(gan_dir)
    facts = {
        "training_command": "accelerate launch train_scripts/train_pixelgan.py --max_train_steps 8000",
        "hardware": "1 process(es) on CPU (x86_64, 2 cores), torch 2.13.0+cpu",
        "wall_time_minutes": "95.3",
        "train_steps": 8000,
        "batch_size": 16,
    }
    # The card and the facts file, as a training run writes them; the table reads the facts file.
    write_model_card(gan_dir, facts, REPO_ROOT / "model_cards" / "templates" / "hsr-pixelgan-cave.md")
    assert json.loads((gan_dir / "train_meta.json").read_text())["train_steps"] == 8000
    (ddpm_dir / "checkpoint-500").mkdir(exist_ok=True)
    (ddpm_dir / "checkpoint-500" / "train_meta.json").write_text(json.dumps({"wall_time_minutes": 42.04}))

    output = tmp_path / "results" / "cave_tables.md"
    argv = ["--data", str(dataset), "--models", f"ddpm={ddpm_dir}", f"gan={gan_dir}", "--steps", "2"]
    argv += ["--samples", "2", "--tile-size", "16", "--floor", "gan", "--output", str(output)]
    assert cave_tables.main(argv) == 0

    report = output.read_text()
    assert report == capsys.readouterr().out.split("Wrote ")[0].rstrip("\n") + "\n"
    assert "python benchmarks/cave_tables.py --data" in report and f"gan={gan_dir}" in report
    assert "the final checkpoint of a fixed training budget; no checkpoint or stopping step was picked" in report
    assert "Mean over the validation scenes" in report  # the default split, named in the summary
    assert "torch " + torch.__version__ in report
    assert f"| gan | `{gan_dir}` | 8000 | 16 | 95.3 | 1 process(es) on CPU" in report
    assert f"| ddpm | `{ddpm_dir}` | 500 | not recorded | 42.0 | not recorded |" in report
    assert "- **gan**: `accelerate launch train_scripts/train_pixelgan.py --max_train_steps 8000`" in report
    for section in ("### Mean over scenes", "### Per scene", "### Uncertainty calibration"):
        assert section in report
    assert "| ddpm | 2 |" in report  # the calibration row: 2 samples
    assert output.with_suffix(".json").is_file() and not output.with_suffix(".csv").exists()
    # Every input condition, one evaluation per held-out camera, and the summary against the floor.
    for condition in ("clean", "noise_jpeg"):
        assert f"## Condition `{condition}`" in report
    for camera in cave_tables.HELD_OUT_CAMERAS:
        assert f"## Condition `cameras`: camera {camera}" in report
    summary = json.loads(output.with_suffix(".json").read_text())["summary"]
    assert set(summary) == {"clean", "noise_jpeg", "cameras"}
    assert summary["clean"]["ddpm"]["rmse"] != summary["noise_jpeg"]["ddpm"]["rmse"]
    assert 0 <= summary["noise_jpeg"]["ddpm"]["within_2sigma"] <= 1 and "within_2sigma" not in summary["clean"]["gan"]
    gan_row = next(line for line in report.splitlines() if line.startswith("| gan | 0."))
    cells = [cell.strip() for cell in gan_row.split("|")]
    assert cells.count("1.00") == 6  # the floor against itself, RMSE and SAM under three conditions

    commands = cave_tables.arad_protocol_commands()
    assert commands.startswith("# ARAD-HS protocol (NTIRE 2020 clean track, 450 training / 10 validation scenes)")
    assert "hsr data prepare --format arad NTIRE2020 data/arad_hs --split ntire2020" in commands
    assert "train_ddpm.py" in commands and "train_pixelgan.py" in commands and "train_regression.py" in commands
    assert "--model_config awan" in commands and "--model_config mst_plus_plus" in commands
    assert "\nhsr evaluate runs/arad_hs/ddpm" in commands  # dedented: ready to paste
