"""`benchmarks/icvl_tables.py` on a tiny saved pipeline, one ICVL strip and one small CAVE crop of the shared data."""

import json

# benchmarks/ is on the test path (pyproject.toml), as it is on a benchmark's own when it runs.
import icvl_tables
import numpy as np
import torch

from hsr_diffusers import HSRFeedForwardPipeline, PixelMLP
from tests.testing_utils import CAVE_DIR, ICVL_DIR, requires_cave, requires_icvl


@requires_icvl
@requires_cave
def test_icvl_tables_scores_models_and_floors_per_scene(tmp_path):
    torch.manual_seed(0)
    HSRFeedForwardPipeline(unet=PixelMLP(hidden_channels=[8])).save_pretrained(tmp_path / "mlp")
    output = tmp_path / "tables.md"
    argv = ["--models", f"mlp={tmp_path / 'mlp'}", f"mlp_bf16={tmp_path / 'mlp'}", "--bfloat16", "mlp_bf16"]
    argv += ["--trained-on", "mlp=nothing", "--floors", "floor_icvl"]
    argv += ["--icvl-dir", str(ICVL_DIR), "--cave-dir", str(CAVE_DIR), "--max-scenes", "1", "--cave-crop", "16"]
    assert icvl_tables.main([*argv, "--output", str(output)]) == 0

    payload = json.loads(output.with_suffix(".json").read_text())
    assert payload["command"].startswith("python benchmarks/icvl_tables.py --models mlp=")
    rows = payload["rows"]
    assert len(rows) == 3 * 2 * 2  # methods x conditions x (one ICVL strip, one CAVE scene)
    # The same weights in bfloat16: close to the float32 scores, but computed differently.
    full, half = ([r["rmse"] for r in rows if r["method"] == name] for name in ("mlp", "mlp_bf16"))
    assert full != half and np.allclose(full, half, rtol=0.05)
    assert {row["scene"] for row in rows} == {"eve_0331-1601", "balloons"}
    floor = next(
        r for r in rows if r["method"] == "floor_icvl" and r["dataset"] == "icvl" and r["condition"] == "clean"
    )
    untrained = next(r for r in rows if r["method"] == "mlp" and r["dataset"] == "icvl" and r["condition"] == "clean")
    assert 0 < floor["rmse"] < untrained["rmse"]  # the fitted floor beats an untrained network
    text = output.read_text()
    assert "| mlp | nothing |" in text and "| floor_icvl | icvl36 |" in text
    assert "## Per scene, ICVL, `noise_jpeg` input" in text and "## Training budgets" in text


def test_models_and_labels_are_checked():
    import pytest

    with pytest.raises(SystemExit):
        icvl_tables.parse_args(["--models", "floor_cave=somewhere"])
    with pytest.raises(SystemExit):
        icvl_tables.parse_args(["--trained-on", "unknown=cave"])
    with pytest.raises(SystemExit):
        icvl_tables.parse_args(["--models", "a=x", "--bfloat16", "b"])


@requires_icvl
@requires_cave
def test_cave_scenes_can_be_scored_as_radiance_under_a_light():
    argv = ["--cave-dir", str(CAVE_DIR), "--icvl-dir", str(ICVL_DIR), "--max-scenes", "1", "--cave-crop", "8"]
    reflectance = icvl_tables.validation_scenes(icvl_tables.parse_args(argv))
    under_a = icvl_tables.validation_scenes(icvl_tables.parse_args([*argv, "--cave-illuminant", "A"]))
    assert (
        [scene for _, scene, _ in under_a] == [scene for _, scene, _ in reflectance] == ["eve_0331-1601", "balloons"]
    )
    assert np.array_equal(under_a[0][2], reflectance[0][2])  # the ICVL strip is radiance already
    ratio = under_a[1][2] / np.maximum(reflectance[1][2], 1e-6)
    assert ratio[..., -1].mean() > 2 * ratio[..., 0].mean()  # incandescent light: the red end brighter


def test_goal_table_reports_ratios_and_coverage_against_the_goals():
    def entry(method, condition, scale, coverage=None):
        values = {f"{d}_{m}": scale for d in ("icvl", "cave", "cave2") for m in ("rmse", "sam")}
        coverage_keys = {"icvl_within_2sigma": coverage, "cave_within_2sigma": coverage}
        return {"method": method, "condition": condition, **values, **coverage_keys}

    summary = [
        entry(method, condition, scale, coverage)
        for method, scale, coverage in [("floor_both", 1.0, None), ("mlp", 0.5, None), ("ddpm", 0.4, 0.85)]
        for condition in ("clean", "noise_jpeg")
    ]
    table = icvl_tables.goal_table(summary, ["ddpm"], "floor_both", "mlp").splitlines()
    assert table[2].startswith("| goal | ≤ 0.80× | ≤ 0.80× |") and table[2].endswith("≥ 80 % | ≥ 80 % |")
    cells = [cell.strip() for cell in table[3].strip("|").split("|")]
    # 0.4 / 1.0 meets every floor goal (the strictest: CAVE SAM <= 0.45x); 0.4 / 0.5 = 0.80x the MLP (<= 0.90x).
    assert cells[1:8] == ["0.40× (met)"] * 7
    assert cells[8:10] == ["0.80× (met)"] * 2 and cells[10:] == ["85.0 % (met)"] * 2
    worse = icvl_tables.goal_table(summary, ["mlp"], "floor_both", "mlp").splitlines()[3]
    assert "0.50× (missed)" in worse and "1.00× (missed)" in worse and worse.endswith("– | – |")


def test_goals_need_known_models():
    import pytest

    with pytest.raises(SystemExit):
        icvl_tables.parse_args(["--models", "a=x", "--goals", "b"])
    with pytest.raises(SystemExit):
        icvl_tables.parse_args(["--models", "a=x", "--goals", "a", "--goals-baseline", "c"])
    with pytest.raises(SystemExit):
        icvl_tables.parse_args(["--models", "a=x", "--goals", "a", "--conditions", "clean"])
