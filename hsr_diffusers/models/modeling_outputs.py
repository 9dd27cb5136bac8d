"""The output class and the input check shared by every model in `hsr_diffusers.models`."""

from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput


@dataclass
class HSRModelOutput(BaseOutput):
    """
    The output of every model in `hsr_diffusers.models`, as diffusers models return a `BaseOutput` (`UNet2DOutput`):
    `model(x).sample` reads the same on all of them, and `return_dict=False` gives the tuple `(sample,)`.

    Args:
        sample (`torch.Tensor`):
            - Feed-forward models ([`HSRPixelGANGenerator`], [`AWAN`], [`MSTPlusPlus`], [`RootPolynomialRegression`]):
              the reconstructed cube `(batch_size, out_channels, height, width)` in model units, reflectance mapped to
              `[-1, 1]` (`reflectance * 2 - 1`). Only the generator bounds it (Tanh); the other models may slightly
              overshoot and callers should clamp.
            - Discriminators ([`PixelDiscriminator`], [`PatchDiscriminator`]): real/fake logits
              `(batch_size, 1, height', width')`, unbounded (the GAN loss applies the sigmoid or the least squares).
    """

    sample: torch.Tensor


def check_sample(sample: torch.Tensor, in_channels: int, layout: str = "") -> None:
    """
    Raises a `ValueError` that names the shape unless `sample` is `(batch, in_channels, height, width)`; `layout` is
    appended to the expected shape in the message (the discriminators say what they score).
    """
    if sample.ndim != 4 or sample.shape[1] != in_channels:
        raise ValueError(
            f"Expected `sample` of shape (batch, {in_channels}, height, width){layout}, got {tuple(sample.shape)}."
        )
