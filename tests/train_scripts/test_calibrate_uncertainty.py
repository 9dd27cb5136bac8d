"""`train_scripts/calibrate_uncertainty.py`: per-band σ factors fitted on training crops, stored in the pipeline."""

import json
import shutil

import numpy as np
import pytest

from hsr_diffusers import HSRDiffusionPipeline, HSRPipeline


calibrate_uncertainty = pytest.importorskip("calibrate_uncertainty")

CARD = "# A DDPM\n\nSome text.\n\n## Evaluation\n\nNumbers.\n"


@pytest.fixture()
def model_dir(tiny_ddpm_release, tmp_path):
    """A writable copy of the tiny residual DDPM release, with a model card."""
    folder = tmp_path / "ddpm"
    shutil.copytree(tiny_ddpm_release, folder)
    (folder / "README.md").write_text(CARD)
    (folder / "train_meta.json").write_text('{"train_steps": 2}')
    return folder


def run(folder, data, *extra, train_data=None):
    argv = ["--model", str(folder), "--train_data_dir", *(train_data or [str(data)])]
    argv += ["--crop_size", "16", "--crops_per_scene", "1"]
    return calibrate_uncertainty.main(calibrate_uncertainty.parse_args(argv + ["--num_samples", "2", *extra]))


def test_calibration_is_stored_restored_and_documented_in_the_card(model_dir, tiny_dataset):
    summary = run(model_dir, tiny_dataset, "--coverage", "0.8")
    scale = summary["uncertainty_scale"]
    assert len(scale) == 31 and all(s > 0 for s in scale)
    # Fitted per band as the coverage quantile of |error| / (2σ): on the crops it was fitted on, the target holds.
    assert summary["calibrated_within_2sigma"] == pytest.approx(0.8, abs=0.02)
    assert summary["raw_within_2sigma"] != summary["calibrated_within_2sigma"]

    # Without --output_dir a local folder is rewritten in place.
    loaded = HSRPipeline.from_pretrained(model_dir)
    assert loaded.config.uncertainty_scale == scale
    saved = json.loads((model_dir / "uncertainty_calibration.json").read_text())
    assert saved["uncertainty_scale"] == scale and saved["args"]["coverage"] == 0.8

    card = (model_dir / "README.md").read_text()
    assert card.startswith(CARD) and card.count("## Uncertainty calibration") == 1
    section = card[card.index("## Uncertainty calibration") :]
    assert f"{min(scale):.2f}-{max(scale):.2f}" in section and "80%" in section
    raw, calibrated = summary["raw_within_2sigma"], summary["calibrated_within_2sigma"]
    assert f"{raw:.1%} of the values were within ±2σ before calibration and {calibrated:.1%} after" in section
    assert "python train_scripts/calibrate_uncertainty.py --model" in section and "--coverage 0.8" in section

    # A second run measures the raw spread again (the stored factors are divided out), so it finds the same factors.
    again = run(model_dir, tiny_dataset, "--coverage", "0.8", "--dry_run")
    assert np.allclose(again["uncertainty_scale"], scale, rtol=1e-3)


def test_several_sources_with_thin_radiance_strips_are_calibrated_together(model_dir, tiny_dataset, tmp_path):
    # A raw folder of two radiance strips thinner than a crop (like the ICVL strips, at their stored levels).
    strips = tmp_path / "strips"
    strips.mkdir()
    rng = np.random.default_rng(0)
    for name in ("site_a", "site_b"):
        np.save(strips / f"{name}.npy", rng.uniform(0.01, 0.3, (6, 40, 31)).astype(np.float32))
    summary = run(model_dir, tiny_dataset, "--dry_run", train_data=[str(tiny_dataset), str(strips)])
    only_dataset = run(model_dir, tiny_dataset, "--dry_run")
    assert summary["num_scenes"] == only_dataset["num_scenes"] + 2
    # Every value of the 6-high, 16-wide crops of the strips counts: one clean and one photo crop per strip.
    assert summary["num_values"] == only_dataset["num_values"] + 2 * 2 * 6 * 16 * 31
    assert np.isfinite(summary["uncertainty_scale"]).all()


def test_a_split_per_source_is_checked(model_dir):
    with pytest.raises(SystemExit):
        calibrate_uncertainty.parse_args(
            ["--model", str(model_dir), "--train_data_dir", "a", "b", "--train_data_split", "icvl", "--dry_run"]
        )


def test_a_later_calibration_replaces_the_card_section(tmp_path):
    card = tmp_path / "README.md"
    card.write_text(CARD)
    calibrate_uncertainty.add_card_section(card, "## Uncertainty calibration\n\nfirst\n")
    calibrate_uncertainty.add_card_section(card, "## Uncertainty calibration\n\nsecond\n")
    text = card.read_text()
    assert text.startswith(CARD) and text.count("## Uncertainty calibration") == 1 and "second" in text
    assert "first" not in text


@pytest.mark.parametrize("model", ["hsr-diffusers/ddpm-cave", "some-org/some-ddpm"])
def test_bundled_names_and_hub_ids_need_an_output_dir(model, capsys):
    with pytest.raises(SystemExit):
        calibrate_uncertainty.parse_args(["--model", model, "--train_data_dir", "data"])
    assert "pass --output_dir" in capsys.readouterr().err
    # A dry run writes nothing, so it needs no output folder.
    assert calibrate_uncertainty.parse_args(["--model", model, "--train_data_dir", "data", "--dry_run"]).dry_run


def test_the_bundled_folder_itself_needs_an_output_dir(capsys):
    from hsr_diffusers.pipelines.auto_pipeline import list_pretrained, resolve_pretrained

    if "hsr-diffusers/ddpm-cave" not in list_pretrained():
        pytest.skip("the bundled DDPM is not installed")
    with pytest.raises(SystemExit):
        calibrate_uncertainty.parse_args(
            ["--model", resolve_pretrained("hsr-diffusers/ddpm-cave"), "--train_data_dir", "x"]
        )
    assert "bundled inside the installed package" in capsys.readouterr().err


def test_output_dir_receives_the_calibrated_pipeline_from_a_raw_cave_folder(model_dir, raw_cave_folder, tmp_path):
    before = {path.name: path.read_bytes() for path in model_dir.rglob("*") if path.is_file()}
    output = tmp_path / "calibrated"
    summary = run(model_dir, raw_cave_folder, "--output_dir", str(output))

    # The model folder is untouched; the output holds a loadable pipeline with the factors and the annotated card.
    assert {path.name: path.read_bytes() for path in model_dir.rglob("*") if path.is_file()} == before
    pipe = HSRPipeline.from_pretrained(output)
    assert isinstance(pipe, HSRDiffusionPipeline) and pipe.estimator is not None
    assert pipe.config.uncertainty_scale == summary["uncertainty_scale"]
    assert pipe.config.residual_scale == HSRPipeline.from_pretrained(model_dir).config.residual_scale
    card = (output / "README.md").read_text()
    assert card.startswith(CARD) and "## Uncertainty calibration" in card
    assert (output / "train_meta.json").read_bytes() == (model_dir / "train_meta.json").read_bytes()
    # The raw download was prepared with the built-in split: only its two training scenes were read.
    assert summary["num_scenes"] == 2 and "crops of 2 scenes" in card
    assert not (output / "prepared").exists()


def test_dry_run_writes_nothing(model_dir, tiny_dataset):
    before = (model_dir / "model_index.json").read_text()
    run(model_dir, tiny_dataset, "--dry_run")
    assert (model_dir / "model_index.json").read_text() == before
    assert (model_dir / "README.md").read_text() == CARD
    assert not (model_dir / "uncertainty_calibration.json").exists()
    with pytest.raises(SystemExit):
        calibrate_uncertainty.parse_args(["--model", "x", "--train_data_dir", "y", "--coverage", "1.5"])
