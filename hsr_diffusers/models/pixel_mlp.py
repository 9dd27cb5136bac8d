"""A per-pixel MLP from RGB chromaticity to the spectrum per unit brightness: the learned per-pixel baseline.

Each pixel is reconstructed from its own RGB only, as the root-polynomial regression does, but through a small learned
network instead of a closed-form linear map. The input is the pixel's chromaticity `rgb / brightness` (brightness: the
mean of the three channels) and the output the spectrum per unit brightness, multiplied back by the brightness. So the
model is exposure invariant by construction: doubling the RGB doubles the spectrum, whatever the light level of the
scene, which is what natural radiance (a wide range of levels) needs and what a reflectance-only model cannot learn.
"""

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .modeling_outputs import HSRModelOutput, check_sample


class PixelMLP(ModelMixin, ConfigMixin):
    r"""
    Per-pixel MLP: chromaticity (and optionally log brightness) -> hidden layers -> spectrum per unit brightness.

    It meets the feed-forward generator contract written in [`HSRFeedForwardPipeline`]'s class docstring, so it trains
    with `train_scripts/train_pixelgan.py --generator pixel_mlp --gan_weight 0` (preset `pixel_mlp`), saves with
    `save_pretrained` and runs through `HSRPipeline.from_pretrained` like every other model: `forward` takes RGB in
    `[-1, 1]` (only the first 3 input channels are used) and returns the cube in `[-1, 1]`, and
    [`~PixelMLP.downsample_factor`] is 1. The layers are 1x1 convolutions, so a whole image is one batch of pixels.

    Parameters:
        in_channels (`int`, *optional*, defaults to 3):
            Input channels (at least 3, RGB first); further channels (an estimate, in residual use) are ignored.
        out_channels (`int`, *optional*, defaults to 31):
            Number of spectral bands produced.
        hidden_channels (`list[int]`, *optional*, defaults to `[128, 128]`):
            Widths of the hidden layers (ReLU after each).
        use_log_brightness (`bool`, *optional*, defaults to `False`):
            Also feed `log(brightness)` to the network. It lets the model treat dark, noisy or clipped pixels
            differently, at the price of exact exposure invariance; off by default.
        eps (`float`, *optional*, defaults to 1e-4):
            Smallest brightness divided by (black pixels get a near-zero spectrum).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 31,
        hidden_channels: list[int] = [128, 128],  # a list, as the saved config.json holds it
        use_log_brightness: bool = False,
        eps: float = 1e-4,
    ):
        super().__init__()
        if in_channels < 3:
            raise ValueError(f"`in_channels` must be at least 3 (RGB first), got {in_channels}.")
        layers, width = [], 3 + int(use_log_brightness)
        for hidden in hidden_channels:
            layers += [nn.Conv2d(width, hidden, kernel_size=1), nn.ReLU(inplace=True)]
            width = hidden
        layers.append(nn.Conv2d(width, out_channels, kernel_size=1))
        self.net = nn.Sequential(*layers)

    @property
    def downsample_factor(self) -> int:
        """The multiple that the input height and width must have (1: the model is per-pixel)."""
        return 1

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> HSRModelOutput | tuple[torch.Tensor]:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(batch_size, in_channels, height, width)`):
                RGB in `[-1, 1]` (linear RGB `* 2 - 1`) in the first 3 channels; further channels are ignored.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return an [`HSRModelOutput`] instead of a plain tuple.

        Returns:
            [`HSRModelOutput`] or `tuple`: the cube `(batch_size, out_channels, height, width)` in `[-1, 1]` units
            (`value * 2 - 1`), not clamped.
        """
        check_sample(sample, self.config.in_channels)
        rgb = ((sample[:, :3] + 1) / 2).clamp(min=0)  # [B, 3, H, W] linear RGB
        # Clamped, not offset, so that the model is exactly exposure invariant above `eps`.
        brightness = rgb.mean(dim=1, keepdim=True).clamp(min=self.config.eps)  # [B, 1, H, W]
        features = rgb / brightness  # chromaticity, scaled to sum 3
        if self.config.use_log_brightness:
            features = torch.cat([features, brightness.log()], dim=1)
        cube = self.net(features) * brightness  # [B, out_channels, H, W], spectrum per unit brightness x brightness
        cube = cube * 2 - 1
        if not return_dict:
            return (cube,)
        return HSRModelOutput(sample=cube)
