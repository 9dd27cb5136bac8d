"""`hsr evaluate` and its `train_scripts/evaluate.py` wrapper, run in-process on tiny saved pipelines."""

import csv
import importlib.util
import io
import json
from pathlib import Path

import pytest
import torch

from hsr_diffusers import HSRFeedForwardPipeline, HSRPixelGANGenerator, RootPolynomialRegression
from hsr_diffusers.cli import main
from hsr_diffusers.data import make_synthetic_dataset
from hsr_diffusers.spectral import render_rgb
from tests.testing_utils import smooth_cube


REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_evaluate")
    dataset = make_synthetic_dataset(root / "data", num_train=1, num_validation=2, height=16, width=16)
    torch.manual_seed(0)
    HSRFeedForwardPipeline(
        unet=HSRPixelGANGenerator(in_channels=3, out_channels=31, num_downs=3, ngf=4)
    ).save_pretrained(root / "gan")
    cube = smooth_cube(16, 16, seed=3)
    regression = RootPolynomialRegression(degree=2).fit(render_rgb(cube) / 255.0, cube)
    HSRFeedForwardPipeline(unet=regression).save_pretrained(root / "root_poly")
    return root, dataset


def test_evaluate_writes_markdown_csv_and_json(setup, tmp_path, capsys):
    root, dataset = setup
    out = tmp_path / "out"
    args = ["evaluate", str(root / "gan"), str(root / "root_poly"), "--data", str(dataset), "--crop", "2"]
    assert main([*args, "--output-dir", str(out)]) == 0

    printed = capsys.readouterr().out
    markdown = (out / "results.md").read_text()
    assert markdown in printed and "Wrote" in printed
    assert "| gan | HSRPixelGANGenerator |" in markdown and "| root_poly | RootPolynomialRegression |" in markdown
    assert "a border crop of 2 px" in markdown and "## Per scene" in markdown
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert [(row["method"], row["scene"]) for row in rows] == [
        ("gan", "scene_001"),
        ("root_poly", "scene_001"),
        ("gan", "scene_002"),
        ("root_poly", "scene_002"),
    ]
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["crop"] == 2 and saved["methods"]["gan"]["source"] == str(root / "gan")
    assert saved["mean"]["root_poly"]["rmse"] == pytest.approx(
        sum(float(row["rmse"]) for row in rows if row["method"] == "root_poly") / 2
    )


def test_train_scripts_wrapper_runs_the_same_code(setup, tmp_path):
    root, dataset = setup
    spec = importlib.util.spec_from_file_location("evaluate_script", REPO_ROOT / "train_scripts" / "evaluate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = [str(root / "root_poly"), "--data", str(dataset), "--names", "floor", "--max-scenes", "1"]
    assert script.main([*argv, "--output-dir", str(tmp_path / "a")]) == 0
    assert main(["evaluate", *argv, "--output-dir", str(tmp_path / "b")]) == 0

    def metrics_of(folder):
        row = json.loads((folder / "results.json").read_text())["per_image"][0]
        return {key: value for key, value in row.items() if key != "time_s"}

    assert metrics_of(tmp_path / "a") == metrics_of(tmp_path / "b")
    assert metrics_of(tmp_path / "a")["method"] == "floor"


def test_bad_invocations_exit_with_1(setup, tmp_path, capsys, monkeypatch):
    root, dataset = setup
    monkeypatch.chdir(tmp_path)  # the default --output-dir is relative
    model = str(root / "gan")
    assert main(["evaluate", model, "--data", str(dataset), "--names", "a", "b"]) == 1
    assert "2 --names for 1 models" in capsys.readouterr().err
    assert main(["evaluate", model, model, "--data", str(dataset)]) == 1
    assert "duplicate model names ['gan']" in capsys.readouterr().err
    assert main(["evaluate", model, "--data", str(tmp_path / "missing")]) == 1
    assert "Dataset folder not found" in capsys.readouterr().err
    assert main(["evaluate", model, "--data", str(dataset), "--split", "test"]) == 1
    assert "no split 'test'" in capsys.readouterr().err
    assert not (tmp_path / "hsr_evaluation").exists()
