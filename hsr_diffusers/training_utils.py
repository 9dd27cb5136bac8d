"""Deprecated module: its names moved to the home of their job.

- `render_training_rgb` is `hsr_diffusers.data.rendering.render_training_rgb` (also `hsr_diffusers.render_training_rgb`).
- `fit_root_polynomial` is `hsr_diffusers.models.fit_root_polynomial` (also `hsr_diffusers.fit_root_polynomial`).

Both still import from here, with a `FutureWarning`. The training-only helpers moved beside the training scripts, which
are not part of the installed package: the spectral losses to `train_scripts/script_losses.py`, the `checkpoint-N`
helpers to `train_scripts/script_checkpoints.py`, `format_metrics` and `write_model_card` to
`train_scripts/script_model_card.py`.
"""

import importlib
import warnings


# Name -> the module that defines it now.
_MOVED = {
    "fit_root_polynomial": "hsr_diffusers.models.root_polynomial",
    "render_training_rgb": "hsr_diffusers.data.rendering",
}
# Training-only names -> the file beside the training scripts that holds them now.
_MOVED_TO_TRAIN_SCRIPTS = {
    "sam_loss": "script_losses.py",
    "mrae_loss": "script_losses.py",
    "spectral_loss": "script_losses.py",
    "CHECKPOINT_PATTERN": "script_checkpoints.py",
    "list_checkpoints": "script_checkpoints.py",
    "read_checkpoint_meta": "script_checkpoints.py",
    "save_checkpoint": "script_checkpoints.py",
    "format_metrics": "script_model_card.py",
    "write_model_card": "script_model_card.py",
}

__all__ = sorted(_MOVED)


def __getattr__(name: str):
    if name in _MOVED:
        warnings.warn(
            f"`hsr_diffusers.training_utils` is deprecated: import `{name}` from `hsr_diffusers` "
            f"(defined in `{_MOVED[name]}`).",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    if name in _MOVED_TO_TRAIN_SCRIPTS:
        raise AttributeError(
            f"`hsr_diffusers.training_utils.{name}` moved beside the training scripts, to "
            f"`train_scripts/{_MOVED_TO_TRAIN_SCRIPTS[name]}` (not part of the installed package)."
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MOVED))
