from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils import BaseOutput


@dataclass
class HSRPipelineOutput(BaseOutput):
    """
    Output of the HSR pipelines.

    Args:
        cubes (`np.ndarray` or `torch.Tensor`):
            Reconstructed hyperspectral cubes in the units of the training data (in [0, 1] for the bundled models:
            reflectance for CAVE-like scenes, relative radiance for daylight scenes; see each model card):
            `(N, H, W, bands)` for `output_type="np"`, `(N, bands, H, W)` for `output_type="pt"`. With
            `num_samples > 1` this is the mean of the samples.
        uncertainty (`np.ndarray`, `torch.Tensor` or `None`):
            Per-pixel, per-band standard deviation over the `num_samples` samples, in the layout of `cubes`; `None` for
            deterministic pipelines or a single sample.
    """

    cubes: np.ndarray | torch.Tensor
    uncertainty: np.ndarray | torch.Tensor | None = None
