"""The RGB that the models see for a cube: rendered as the training scripts render it, linear, in [0, 1].

`hsr evaluate`, the benchmarks, the training scripts' validation and the closed-form estimator fit
([`~hsr_diffusers.models.fit_root_polynomial`]) render whole cubes this way, so that a model is conditioned and scored
on the RGB it was trained on. Exported as `hsr_diffusers.render_training_rgb`.
"""

import numpy as np

from hsr_diffusers.spectral import render_rgb


__all__ = ["render_training_rgb"]


def render_training_rgb(
    cube: np.ndarray, response: str | np.ndarray, wavelengths, rgb_mode: str = "ntire2020_clean"
) -> np.ndarray:
    r"""
    The RGB of a whole cube as the training scripts render it, in the value range the models see.

    Args:
        cube (`np.ndarray` of shape `(H, W, bands)`):
            Reflectance in [0, 1].
        response (`str` or `np.ndarray`):
            Camera response (see `hsr_diffusers.spectral.load_response`).
        wavelengths (`list[float]` or `np.ndarray`):
            Band centres of `cube` in nm.
        rgb_mode (`str`, *optional*, defaults to `"ntire2020_clean"`):
            `render_rgb` mode. The `"real_world"` noise is drawn with seed 0, so the same cube gives the same RGB.

    Returns:
        `np.ndarray`: `(H, W, 3)` linear RGB in [0, 1] (8-bit modes divided by 255, linear ones clipped).
    """
    rgb = render_rgb(cube, response, mode=rgb_mode, wavelengths=wavelengths, seed=0)
    return rgb / 255.0 if rgb.dtype == np.uint8 else np.clip(rgb, 0.0, 1.0)
