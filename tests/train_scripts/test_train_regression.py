"""`train_scripts/train_regression.py` on cubes whose spectra are, by construction, a known root-polynomial of their RGB."""

import json

import numpy as np
import pytest

from hsr_diffusers import HSRFeedForwardPipeline, HSRPipeline, RootPolynomialRegression
from hsr_diffusers.data import build_dataset, save_cube
from hsr_diffusers.spectral import render_rgb, rendering_matrix


WAVELENGTHS = np.arange(400.0, 701.0, 10.0)


def ground_truth_dataset(root):
    r"""
    Cubes `c @ B` mixing three fixed spectra `B` with smooth positive weights `c`. Their RGB is `c @ (B M)` for the
    rendering matrix `M`, so `cube = rgb @ inv(B M) @ B` exactly: a degree-1 root polynomial (which the degree-2 model
    contains). Returns the dataset folder and the true `[3, 31]` weight.
    """
    bands = np.linspace(0.0, 1.0, 31)
    basis = np.stack([0.05 + 0.4 * np.exp(-((bands - centre) ** 2) / 0.05) for centre in (0.15, 0.5, 0.85)])
    truth = np.linalg.solve(basis @ rendering_matrix("cie1964_ntire2020"), basis)  # [3, 31]
    rng = np.random.default_rng(0)
    names = []
    for index in range(4):
        weights = rng.uniform(0.2, 1.0, size=(16, 16, 3))  # [H, W, 3]
        cube = (weights @ basis).astype(np.float32)
        assert render_rgb(cube, mode="linear").max() < 1.0  # nothing clipped: the relation is exact
        names.append(f"scene_{index}")
        save_cube(root / "cubes" / f"{names[-1]}.npy", cube, WAVELENGTHS)
    build_dataset(root / "cubes", root / "data", split={"train": names[:3], "validation": names[3:]})
    return root / "data", truth


@pytest.mark.parametrize(
    "rgb_mode, degree, tolerance",
    [
        ("linear", 1, 2e-3),  # exact RGB, the true model's own terms: the weights themselves are recovered
        ("ntire2020_clean", 2, 3e-2),  # 8-bit RGB as the training scripts render it, the default degree
    ],
)
def test_fit_recovers_the_ground_truth_and_loads(tmp_path, rgb_mode, degree, tolerance):
    import train_regression

    data, truth = ground_truth_dataset(tmp_path)
    out = tmp_path / "floor"
    argv = ["--train_data_dir", str(data), "--output_dir", str(out), "--rgb_mode", rgb_mode]
    train_regression.main(
        train_regression.parse_args([*argv, "--degree", str(degree), "--validation_tile_size", "16"])
    )

    pipe = HSRPipeline.from_pretrained(out)
    assert isinstance(pipe, HSRFeedForwardPipeline) and isinstance(pipe.unet, RootPolynomialRegression)
    assert pipe.unet.config.degree == degree and pipe.config.wavelengths == list(range(400, 701, 10))
    if degree == 1:
        weight = pipe.unet.weight.detach().double().numpy()  # [3, 31]
        assert np.abs(weight - truth).max() < 1e-2 * np.abs(truth).max()

    # On the unseen validation scene, the released pipeline (without the RGB-consistency projection) gives the cube.
    cube = np.load(tmp_path / "cubes" / "scene_3.npy")
    rgb = render_rgb(cube, mode=rgb_mode)
    rgb = rgb / 255.0 if rgb.dtype == np.uint8 else rgb
    pipe.set_progress_bar_config(disable=True)
    pred = pipe(rgb.astype(np.float32), rgb_consistency=False).cubes[0]
    assert np.abs(pred - cube).max() < tolerance

    card = (out / "README.md").read_text()
    assert "- **train_steps**: 0 (closed-form least squares" in card
    assert f"--rgb_mode {rgb_mode}" in card and "| MRAE | RMSE | PSNR | SAM |" in card
    assert not (out / "checkpoint-0").exists()
    facts = json.loads((out / "train_meta.json").read_text())
    assert (
        facts["train_steps"] == 0
        and facts["num_processes"] == 1
        and "train_regression.py" in facts["training_command"]
    )


def test_degree_flag_and_bad_arguments(tmp_path, tiny_dataset):
    import train_regression

    args = train_regression.parse_args(
        ["--train_data_dir", str(tiny_dataset), "--output_dir", str(tmp_path), "--degree", "3"]
    )
    train_regression.main(args)
    assert HSRPipeline.from_pretrained(tmp_path).unet.num_features == 13
    with pytest.raises(SystemExit):
        train_regression.parse_args(["--output_dir", str(tmp_path)])  # no data
    with pytest.raises(SystemExit):
        train_regression.parse_args(["--train_data_dir", "x", "--output_dir", str(tmp_path), "--degree", "4"])
