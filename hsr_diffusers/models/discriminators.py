"""pix2pix discriminators as diffusers models: the 1x1 PixelGAN and the 70x70 PatchGAN.

Ports of `PixelDiscriminator` (`define_D(netD='pixel')`) and `NLayerDiscriminator` (`netD='basic'`, `n_layers=3`) from
junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py`, with the same layer order and attribute names (`net`,
`model`), so pix2pix state dicts load. Both score the pair `torch.cat([rgb, cube], dim=1)` (condition first, as
pix2pix D scores `cat(real_A, fake_B)`) and return raw logits in an [`HSRModelOutput`], as every model of the package
returns its tensor: the loss (vanilla BCE-with-logits or LSGAN) lives in the training script. They are saved with
training checkpoints but never registered in a pipeline.
"""

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .modeling_outputs import HSRModelOutput, check_sample
from .pixelgan_generator import norm_layer


def _check_norm_type(norm_type: str) -> None:
    if norm_type not in ("instance", "batch"):
        raise ValueError(f"`norm_type` must be 'instance' or 'batch', got {norm_type!r}.")


def _init_pix2pix_normal(module: nn.Module, init_gain: float) -> None:
    # pix2pix `init_weights(init_type='normal')`.
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, init_gain)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, init_gain)
        nn.init.zeros_(module.bias)


class PixelDiscriminator(ModelMixin, ConfigMixin):
    r"""
    The 1x1 PixelGAN discriminator: three 1x1 convolutions, so every pixel is judged on its own spectrum and RGB.

    pix2pix names: `input_nc` -> `in_channels`, `ndf` -> `ndf`, `norm` -> `norm_type`, `netD='pixel'`.

    Parameters:
        in_channels (`int`, *optional*, defaults to 34):
            Channels of the scored pair: 3 RGB channels followed by 31 spectral channels (`torch.cat([rgb, cube], 1)`).
        ndf (`int`, *optional*, defaults to 64):
            Channels of the first layer (the second has `2 * ndf`).
        norm_type (`str`, *optional*, defaults to `"batch"`):
            `"batch"` (the pix2pix default) or `"instance"`.
        init_gain (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal weight initialisation (pix2pix `init_type='normal'`).
    """

    @register_to_config
    def __init__(self, in_channels: int = 3 + 31, ndf: int = 64, norm_type: str = "batch", init_gain: float = 0.02):
        super().__init__()
        _check_norm_type(norm_type)
        use_bias = norm_type == "instance"
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, ndf, kernel_size=1, stride=1, padding=0),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, stride=1, padding=0, bias=use_bias),
            norm_layer(norm_type, ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, stride=1, padding=0, bias=use_bias),
        )
        self.apply(lambda module: _init_pix2pix_normal(module, self.config.init_gain))

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> HSRModelOutput | tuple[torch.Tensor]:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(batch_size, in_channels, height, width)`):
                `torch.cat([rgb, cube], dim=1)`, both in `[-1, 1]`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return an [`HSRModelOutput`] instead of a plain tuple.

        Returns:
            [`HSRModelOutput`] or `tuple`: `sample` holds one real/fake logit per pixel, `(batch_size, 1, height,
            width)`; a tuple's first element is that tensor.
        """
        check_sample(sample, self.config.in_channels, layout=" = cat([rgb, cube], 1)")
        logits = self.net(sample)
        if not return_dict:
            return (logits,)
        return HSRModelOutput(sample=logits)


class PatchDiscriminator(ModelMixin, ConfigMixin):
    r"""
    The PatchGAN discriminator: with `n_layers=3` each logit sees a 70x70 receptive field (pix2pix `netD='basic'`).

    pix2pix names: `input_nc` -> `in_channels`, `ndf` -> `ndf`, `n_layers_D` -> `n_layers`, `norm` -> `norm_type`.
    The output has spatial size `H / 2**n_layers - 2` (for `n_layers=3`: `H / 8 - 2`), so inputs must be at least
    `3 * 2**n_layers` pixels on each side.

    Parameters:
        in_channels (`int`, *optional*, defaults to 34):
            Channels of the scored pair: 3 RGB channels followed by 31 spectral channels (`torch.cat([rgb, cube], 1)`).
        ndf (`int`, *optional*, defaults to 64):
            Channels of the first layer; layer `n` has `ndf * min(2**n, 8)`.
        n_layers (`int`, *optional*, defaults to 3):
            Number of stride-2 convolutions.
        norm_type (`str`, *optional*, defaults to `"batch"`):
            `"batch"` (the pix2pix default) or `"instance"`.
        init_gain (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal weight initialisation (pix2pix `init_type='normal'`).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3 + 31,
        ndf: int = 64,
        n_layers: int = 3,
        norm_type: str = "batch",
        init_gain: float = 0.02,
    ):
        super().__init__()
        _check_norm_type(norm_type)
        use_bias = norm_type == "instance"
        layers = [nn.Conv2d(in_channels, ndf, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev_mult, mult = mult, min(2**n, 8)
            # The last of these keeps stride 1: n_layers stride-2 convolutions in total, as in pix2pix.
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev_mult, ndf * mult, kernel_size=4, stride=stride, padding=1, bias=use_bias),
                norm_layer(norm_type, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers += [nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)
        self.apply(lambda module: _init_pix2pix_normal(module, self.config.init_gain))

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> HSRModelOutput | tuple[torch.Tensor]:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(batch_size, in_channels, height, width)`):
                `torch.cat([rgb, cube], dim=1)`, both in `[-1, 1]`; height and width at least `3 * 2**n_layers`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return an [`HSRModelOutput`] instead of a plain tuple.

        Returns:
            [`HSRModelOutput`] or `tuple`: `sample` holds one real/fake logit per overlapping patch, `(batch_size, 1,
            height', width')`; a tuple's first element is that tensor.
        """
        check_sample(sample, self.config.in_channels, layout=" = cat([rgb, cube], 1)")
        min_size = 3 * 2**self.config.n_layers
        if min(sample.shape[-2:]) < min_size:
            raise ValueError(
                f"PatchDiscriminator with n_layers={self.config.n_layers} needs height and width >= {min_size}, "
                f"got {sample.shape[-2]}x{sample.shape[-1]}."
            )
        logits = self.model(sample)
        if not return_dict:
            return (logits,)
        return HSRModelOutput(sample=logits)
