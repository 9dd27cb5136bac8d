"""`hsr_diffusers.training_utils`: the estimator fit, the spectral losses, atomic checkpoints and the card writer."""

import math

import numpy as np
import pytest
import torch

from hsr_diffusers.spectral import DEFAULT_RESPONSE, WAVELENGTHS, rendering_matrix
from hsr_diffusers.training_utils import (
    fit_root_polynomial,
    format_metrics,
    list_checkpoints,
    mrae_loss,
    read_checkpoint_meta,
    render_training_rgb,
    sam_loss,
    save_checkpoint,
    spectral_loss,
    write_model_card,
)


def mixed_cubes(count=3, size=12):
    """Cubes `c @ B` of three fixed spectra, whose linear RGB determines them exactly (a degree-1 root polynomial)."""
    bands = np.linspace(0.0, 1.0, 31)
    basis = np.stack([0.05 + 0.4 * np.exp(-((bands - centre) ** 2) / 0.05) for centre in (0.15, 0.5, 0.85)])
    rng = np.random.default_rng(0)
    cubes = [(rng.uniform(0.2, 1.0, size=(size, size, 3)) @ basis).astype(np.float32) for _ in range(count)]
    return cubes, np.linalg.solve(basis @ rendering_matrix(DEFAULT_RESPONSE), basis)


def test_fit_root_polynomial_recovers_an_exact_linear_relation():
    cubes, truth = mixed_cubes()
    model = fit_root_polynomial(cubes, DEFAULT_RESPONSE, WAVELENGTHS, rgb_mode="linear", degree=1, pixels_per_scene=50)
    assert model.config.degree == 1 and model.config.out_channels == 31
    weight = model.weight.detach().double().numpy()  # [3, 31]
    assert np.abs(weight - truth).max() < 1e-2 * np.abs(truth).max()
    # The same seed draws the same pixels; another seed other pixels (the fit is exact either way here).
    again = fit_root_polynomial(cubes, DEFAULT_RESPONSE, WAVELENGTHS, rgb_mode="linear", degree=1, pixels_per_scene=50)
    assert torch.equal(again.weight, model.weight)
    with pytest.raises(ValueError, match="No cubes"):
        fit_root_polynomial([], DEFAULT_RESPONSE, WAVELENGTHS)


def test_fit_root_polynomial_reads_a_dataset_split_like_a_list_of_cubes(tiny_dataset):
    import datasets

    split = datasets.load_from_disk(str(tiny_dataset))["train"]
    cubes = [np.load(path) for path in sorted((tiny_dataset.parent / "cubes").glob("scene_*[0-9].npy"))[:3]]
    from_split = fit_root_polynomial(split, DEFAULT_RESPONSE, WAVELENGTHS, pixels_per_scene=100, seed=3)
    from_list = fit_root_polynomial(cubes, DEFAULT_RESPONSE, WAVELENGTHS, pixels_per_scene=100, seed=3)
    torch.testing.assert_close(from_split.weight, from_list.weight)


def test_render_training_rgb_is_linear_rgb_in_the_unit_range():
    cube = np.full((4, 4, 31), 0.5, np.float32)
    clean = render_training_rgb(cube, DEFAULT_RESPONSE, WAVELENGTHS)  # 8-bit render divided by 255
    linear = render_training_rgb(cube, DEFAULT_RESPONSE, WAVELENGTHS, rgb_mode="linear")
    assert clean.shape == (4, 4, 3) and 0 <= clean.min() and clean.max() <= 1
    np.testing.assert_allclose(clean, linear, atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(np.round(clean * 255), clean * 255)  # whole 8-bit levels


def test_spectral_losses_on_known_spectra():
    target = torch.zeros(1, 2, 1, 1)
    target[:, 0] = 1.0
    rotated = torch.zeros(1, 2, 1, 1)
    rotated[:, 1] = 1.0  # orthogonal: 90 degrees
    assert sam_loss(target, target).item() < 1e-2
    assert sam_loss(rotated, target).item() == pytest.approx(math.pi / 2, abs=1e-3)
    pred = torch.full((1, 3, 2, 2), 0.6)
    truth = torch.full((1, 3, 2, 2), 0.5)
    assert mrae_loss(pred, truth).item() == pytest.approx(0.1 / 0.501, rel=1e-5)
    combined = spectral_loss(pred, truth, sam_weight=2.0, mrae_weight=3.0)
    assert combined.item() == pytest.approx(2 * sam_loss(pred, truth).item() + 3 * mrae_loss(pred, truth).item())
    assert spectral_loss(pred, truth).item() == 0.0
    pred.requires_grad_(True)
    spectral_loss(pred, truth, 1.0, 1.0).backward()
    assert torch.isfinite(pred.grad).all()  # identical spectra: the clamped arccos keeps the gradient finite


def test_checkpoints_are_saved_atomically_and_pruned(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(2, 2))
    (tmp_path / "checkpoint-9.tmp").mkdir()  # a save that crashed: never listed, replaced when step 9 is saved
    for step in (1, 2, 10):
        save_checkpoint(accelerator, tmp_path, step, total_limit=2, meta={"wall_time_minutes": step / 10})
    assert [path.name for path in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]  # numeric order
    assert read_checkpoint_meta(tmp_path / "checkpoint-10") == {"wall_time_minutes": 1.0}
    assert read_checkpoint_meta(None) == {} and read_checkpoint_meta(tmp_path) == {}
    assert list_checkpoints(tmp_path / "missing") == []
    with torch.no_grad():
        model.weight.zero_()
    accelerator.load_state(str(tmp_path / "checkpoint-10"))
    assert model.weight.abs().sum() > 0


def test_write_model_card_fills_a_template(tmp_path):
    template = tmp_path / "template.md"
    template.write_text("# {name}\n\nBatch {batch}, {steps} steps.\n\n{metrics}\n{{literal}} {unknown}\n")
    metrics = format_metrics({"val/rmse": 0.03125, "val/sam": 0.2})
    card = write_model_card(tmp_path, {"name": "m", "batch": 2, "steps": 5, "metrics": metrics}, template)
    text = card.read_text()
    assert card == tmp_path / "README.md"
    assert text.startswith("# m\n\nBatch 2, 5 steps.\n\n| RMSE | SAM |\n|---|---|\n| 0.0312 | 0.2000 |")
    assert "{literal} {unknown}" in text  # escaped braces, and a placeholder without a fact left visible
    plain = write_model_card(tmp_path, {"train_steps": 5}).read_text()
    assert "- **train_steps**: 5" in plain
    assert format_metrics({}) == "(no validation split)"
