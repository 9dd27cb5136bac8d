"""`hsr_diffusers.data.rendering`: the RGB the models see, and the deprecated `hsr_diffusers.training_utils` path."""

import ast
import importlib
from pathlib import Path

import numpy as np
import pytest

import hsr_diffusers
from hsr_diffusers.data.rendering import render_training_rgb
from hsr_diffusers.spectral import DEFAULT_RESPONSE, WAVELENGTHS, render_rgb


def test_render_training_rgb_is_linear_rgb_in_the_unit_range():
    cube = np.full((4, 4, 31), 0.5, np.float32)
    clean = render_training_rgb(cube, DEFAULT_RESPONSE, WAVELENGTHS)  # 8-bit render divided by 255
    linear = render_training_rgb(cube, DEFAULT_RESPONSE, WAVELENGTHS, rgb_mode="linear")
    assert clean.shape == (4, 4, 3) and 0 <= clean.min() and clean.max() <= 1
    np.testing.assert_allclose(clean, linear, atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(np.round(clean * 255), clean * 255)  # whole 8-bit levels
    bright = render_training_rgb(np.ones((2, 2, 31), np.float32) * 3, DEFAULT_RESPONSE, WAVELENGTHS, "linear")
    assert bright.max() == 1.0  # linear values clipped to the range the models see
    noisy = render_training_rgb(cube, DEFAULT_RESPONSE, WAVELENGTHS, rgb_mode="real_world")
    np.testing.assert_array_equal(noisy, render_training_rgb(cube, DEFAULT_RESPONSE, WAVELENGTHS, "real_world"))
    np.testing.assert_array_equal(noisy * 255, render_rgb(cube, DEFAULT_RESPONSE, mode="real_world", seed=0))


def test_package_exports_the_library_homes():
    from hsr_diffusers.models import fit_root_polynomial

    assert hsr_diffusers.render_training_rgb is render_training_rgb
    assert hsr_diffusers.fit_root_polynomial is fit_root_polynomial
    assert {"render_training_rgb", "fit_root_polynomial"} <= set(hsr_diffusers.__all__)


def test_old_training_utils_path_warns_and_names_where_training_helpers_went():
    training_utils = importlib.import_module("hsr_diffusers.training_utils")
    with pytest.warns(FutureWarning, match="import `render_training_rgb` from `hsr_diffusers`"):
        from hsr_diffusers.training_utils import render_training_rgb as old
    assert old is render_training_rgb
    with pytest.warns(FutureWarning, match="fit_root_polynomial"):
        assert training_utils.fit_root_polynomial is hsr_diffusers.fit_root_polynomial
    # Training-only helpers live beside the scripts now; the error says where.
    with pytest.raises(AttributeError, match="train_scripts/script_losses.py"):
        training_utils.spectral_loss  # noqa: B018
    with pytest.raises(AttributeError, match="train_scripts/script_model_card.py"):
        training_utils.write_model_card  # noqa: B018


def test_library_imports_no_training_code():
    # Training code lives beside the scripts; the package (evaluation included) never imports it, nor the old path.
    package = Path(hsr_diffusers.__file__).parent
    training_modules = {path.stem for path in (package.parent / "train_scripts").glob("*.py")}
    offenders = []
    for path in package.rglob("*.py"):
        if path.name == "training_utils.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [
                f"{path.relative_to(package)}: {name}"
                for name in names
                if name == "hsr_diffusers.training_utils" or name.split(".")[0] in training_modules
            ]
    assert not offenders
