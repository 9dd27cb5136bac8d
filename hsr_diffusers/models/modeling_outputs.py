"""Output class shared by every feed-forward RGB -> cube model in `hsr_diffusers.models`."""

from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput


@dataclass
class HSRModelOutput(BaseOutput):
    """
    The output of the feed-forward spectral reconstruction models ([`HSRPixelGANGenerator`], [`AWAN`],
    [`MSTPlusPlus`], [`RootPolynomialRegression`]).

    Args:
        sample (`torch.Tensor` of shape `(batch_size, out_channels, height, width)`):
            The reconstructed spectral cube in model units: reflectance mapped to `[-1, 1]` (`reflectance * 2 - 1`).
            Only the generator bounds it (Tanh); the other models may slightly overshoot and callers should clamp.
    """

    sample: torch.Tensor
