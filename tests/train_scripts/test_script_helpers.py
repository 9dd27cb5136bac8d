"""Training-only helpers beside the scripts: spectral losses (`script_losses.py`), atomic checkpoints
(`script_checkpoints.py`) and the card writer (`script_model_card.py`)."""

import json
import logging
import math

import pytest
import torch
from script_checkpoints import list_checkpoints, read_checkpoint_meta, save_checkpoint
from script_losses import mrae_loss, sam_loss, spectral_loss
from script_model_card import format_metrics, write_model_card


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


def test_checkpoints_are_saved_atomically_and_pruned(tmp_path, caplog):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(2, 2))
    (tmp_path / "checkpoint-9.tmp").mkdir()  # a save that crashed: never listed, replaced when step 9 is saved
    with caplog.at_level(logging.INFO):
        for step in (1, 2, 10):
            save_checkpoint(accelerator, tmp_path, step, total_limit=2, meta={"wall_time_minutes": step / 10})
    assert not [r for r in caplog.records if r.name.startswith("accelerate")]  # one file per line stays out of logs
    assert logging.getLogger("accelerate").level == logging.NOTSET  # and the level is put back
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
    # The facts also go to train_meta.json, which scripts read instead of the card's prose.
    assert json.loads((tmp_path / "train_meta.json").read_text())["steps"] == 5
    plain = write_model_card(tmp_path, {"train_steps": 5, "path": tmp_path}).read_text()
    assert "- **train_steps**: 5" in plain
    assert json.loads((tmp_path / "train_meta.json").read_text()) == {"train_steps": 5, "path": str(tmp_path)}
    assert format_metrics({}) == "(no validation split)"
