"""`train_scripts/calibrate_uncertainty.py`: per-band σ factors fitted on training crops, stored in the pipeline."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from hsr_diffusers import HSRDiffusionPipeline, HSRPipeline
from hsr_diffusers.data import make_synthetic_dataset

from ..testing_utils import tiny_ddpm_unet


calibrate_uncertainty = pytest.importorskip("calibrate_uncertainty")


@pytest.fixture()
def tiny_pipeline_dir(tmp_path):
    pipe = HSRDiffusionPipeline(
        unet=tiny_ddpm_unet(),
        scheduler=DDIMScheduler(),
        default_num_inference_steps=2,
        default_tile_size=16,
        default_tile_overlap=4,
    )
    pipe.save_pretrained(tmp_path / "ddpm")
    return tmp_path / "ddpm"


def run(folder, data, *extra):
    argv = ["--model", str(folder), "--train_data_dir", str(data), "--crop_size", "16", "--crops_per_scene", "1"]
    return calibrate_uncertainty.main(calibrate_uncertainty.parse_args(argv + ["--num_samples", "2", *extra]))


def test_calibration_is_stored_and_restored(tiny_pipeline_dir, tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", num_train=2, num_validation=1, height=24, width=24)
    summary = run(tiny_pipeline_dir, data, "--coverage", "0.8")
    scale = summary["uncertainty_scale"]
    assert len(scale) == 31 and all(s > 0 for s in scale)
    # Fitted per band as the coverage quantile of |error| / (2σ): on the crops it was fitted on, the target holds.
    assert summary["calibrated_within_2sigma"] == pytest.approx(0.8, abs=0.02)
    assert summary["raw_within_2sigma"] != summary["calibrated_within_2sigma"]

    loaded = HSRPipeline.from_pretrained(tiny_pipeline_dir)
    assert loaded.config.uncertainty_scale == scale
    saved = json.loads((tiny_pipeline_dir / "uncertainty_calibration.json").read_text())
    assert saved["uncertainty_scale"] == scale and saved["args"]["coverage"] == 0.8

    # A second run measures the raw spread again (the stored factors are divided out), so it finds the same factors.
    again = run(tiny_pipeline_dir, data, "--coverage", "0.8", "--dry_run")
    assert np.allclose(again["uncertainty_scale"], scale, rtol=1e-3)


def test_dry_run_writes_nothing_and_validation_scenes_are_never_read(tiny_pipeline_dir, tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", num_train=1, num_validation=1, height=24, width=24)
    before = (tiny_pipeline_dir / "model_index.json").read_text()
    torch.manual_seed(0)
    run(tiny_pipeline_dir, data, "--dry_run")
    assert (tiny_pipeline_dir / "model_index.json").read_text() == before
    assert not (tiny_pipeline_dir / "uncertainty_calibration.json").exists()
    with pytest.raises(SystemExit):
        calibrate_uncertainty.parse_args(["--model", "x", "--train_data_dir", "y", "--coverage", "1.5"])
