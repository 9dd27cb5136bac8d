"""The pix2pix U-Net generator (`netG='unet_256'`) as a diffusers model: RGB in, spectral cube out.

A port of `UnetGenerator` and `UnetSkipConnectionBlock` from junyanz/pytorch-CycleGAN-and-pix2pix
(`models/networks.py`). The nesting and attribute names are kept (`model.model.<i>...`), so a state dict from a
pix2pix `unet_*` generator with the same channel counts loads as is. Two generalisations: `num_downs` may be below
5 (the channel widths follow the same `ngf * min(2**level, 8)` rule, used for tiny test models) and the
normalisation is chosen by name instead of a `functools.partial`.
"""

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .modeling_outputs import HSRModelOutput, check_sample


def norm_layer(norm_type: str, num_features: int) -> nn.Module:
    """
    pix2pix `get_norm_layer`: BatchNorm is affine; instance norm is neither affine nor tracks running stats. Instance norm
    is computed by `GroupNorm` with one channel per group: the same normalisation (within 1e-6) with no parameters or
    buffers either, so checkpoints are unchanged, and about five times faster on CPU than `InstanceNorm2d` (0.74 against
    3.7 ms for the bundled generator's norms on a 256 px tile, one thread).
    """
    if norm_type == "batch":
        return nn.BatchNorm2d(num_features)
    return nn.GroupNorm(num_features, num_features, affine=False)


class SigmoidTanh(nn.Module):
    """
    `tanh(x)`, computed as `2 * sigmoid(2 * x) - 1`: the same function (within 2e-7 in absolute terms, against 6e-8 for
    `torch.tanh` itself), and on CPU several times faster than `torch.tanh`, whose float32 kernel took 5.2 ms on a
    `[1, 31, 256, 256]` tensor against 0.8 ms for `torch.sigmoid` (one thread, AMD EPYC, torch 2.13): a tenth of the
    generator's time per tile.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (2 * torch.sigmoid(2 * x)).sub_(1)  # not in place on the sigmoid: its backward reads it


class UnetSkipConnectionBlock(nn.Module):
    """
    One U-Net level: `x -> [x, up(submodule(down(x)))]` (pix2pix `UnetSkipConnectionBlock`).

    Args:
        outer_nc (`int`): Channels of the level's output (and of its input unless `input_nc` is given).
        inner_nc (`int`): Channels after the down-convolution.
        input_nc (`int`, *optional*): Channels of the input; only the outermost block differs from `outer_nc`.
        submodule (`nn.Module`, *optional*): The next, deeper level; `None` for the innermost block.
        outermost (`bool`): No skip concatenation, no norm on the down path, Tanh output.
        innermost (`bool`): The bottleneck. It has no norm after the down-convolution, which is what keeps a
            1x1 bottleneck valid: instance norm over a single pixel would zero every feature.
        norm_type (`str`): `"batch"` or `"instance"`.
        use_dropout (`bool`): Dropout(0.5) after the up path (pix2pix uses it on the `ngf * 8` middle levels).
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm_type: str = "instance",
        use_dropout: bool = False,
    ):
        super().__init__()
        self.outermost = outermost
        # BatchNorm has its own affine shift, so the conv before it drops its bias; non-affine InstanceNorm needs it.
        use_bias = norm_type == "instance"
        if input_nc is None:
            input_nc = outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)

        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, SigmoidTanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, norm_layer(norm_type, outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            down = [downrelu, downconv, norm_layer(norm_type, inner_nc)]
            up = [uprelu, upconv, norm_layer(norm_type, outer_nc)]
            model = down + [submodule] + up + ([nn.Dropout(0.5)] if use_dropout else [])
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)  # [B, outer_nc * 2, H, W]


class HSRPixelGANGenerator(ModelMixin, ConfigMixin):
    r"""
    The pix2pix U-Net generator mapping an RGB image to a spectral cube.

    pix2pix argument names map as follows: `input_nc` -> `in_channels`, `output_nc` -> `out_channels`,
    `netG='unet_256'` -> `num_downs=8` (`'unet_128'` -> 7), `norm` -> `norm_type`, `no_dropout` -> `not use_dropout`,
    `init_gain` -> `init_gain` (with `init_type='normal'`). Weights are initialised in `__init__`.

    Parameters:
        in_channels (`int`, *optional*, defaults to 3):
            Input channels: the RGB image in `[-1, 1]` first, then any extra conditioning channels.
        out_channels (`int`, *optional*, defaults to 31):
            Number of spectral bands produced.
        num_downs (`int`, *optional*, defaults to 8):
            Number of stride-2 down-samplings (at least 2). Height and width must be multiples of `2 ** num_downs`;
            an input of exactly that size reaches a 1x1 bottleneck.
        ngf (`int`, *optional*, defaults to 64):
            Channels of the first layer; level `i` has `ngf * min(2**i, 8)` channels.
        norm_type (`str`, *optional*, defaults to `"instance"`):
            `"instance"` or `"batch"`. pix2pix trains with `"batch"` and tests in train mode; diffusers loads models in
            eval mode, where instance norm behaves the same as in training, hence the default.
        use_dropout (`bool`, *optional*, defaults to `False`):
            Dropout(0.5) in the `ngf * 8` middle levels (pix2pix `--no_dropout` off).
        init_gain (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal weight initialisation (pix2pix `init_type='normal'`).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 31,
        num_downs: int = 8,
        ngf: int = 64,
        norm_type: str = "instance",
        use_dropout: bool = False,
        init_gain: float = 0.02,
    ):
        super().__init__()
        if num_downs < 2:
            raise ValueError(f"`num_downs` must be at least 2, got {num_downs}.")
        if norm_type not in ("instance", "batch"):
            raise ValueError(f"`norm_type` must be 'instance' or 'batch', got {norm_type!r}.")

        # Built from the bottleneck outwards like pix2pix. Level i (0 = outermost) has ngf * min(2**i, 8) inner channels;
        # for num_downs >= 5 this reproduces pix2pix's explicit list exactly.
        widths = [ngf * min(2**i, 8) for i in range(num_downs)]
        block = UnetSkipConnectionBlock(widths[-2], widths[-1], innermost=True, norm_type=norm_type)
        for level in range(num_downs - 2, 0, -1):
            block = UnetSkipConnectionBlock(
                widths[level - 1],
                widths[level],
                submodule=block,
                norm_type=norm_type,
                use_dropout=use_dropout and level >= 4,
            )
        self.model = UnetSkipConnectionBlock(
            out_channels, ngf, input_nc=in_channels, submodule=block, outermost=True, norm_type=norm_type
        )

        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # pix2pix `init_weights(init_type='normal')`.
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, self.config.init_gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, self.config.init_gain)
            nn.init.zeros_(module.bias)

    @property
    def downsample_factor(self) -> int:
        """The multiple that the input height and width must have (`2 ** num_downs`)."""
        return 2**self.config.num_downs

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> HSRModelOutput | tuple[torch.Tensor]:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(batch_size, in_channels, height, width)`):
                RGB in `[-1, 1]` (linear RGB `* 2 - 1`) followed by any extra conditioning channels. Height and
                width must be multiples of [`~HSRPixelGANGenerator.downsample_factor`].
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return an [`HSRModelOutput`] instead of a plain tuple.

        Returns:
            [`HSRModelOutput`] or `tuple`: the cube `(batch_size, out_channels, height, width)` in `[-1, 1]`
            (reflectance `* 2 - 1`); a tuple's first element is that tensor.
        """
        check_sample(sample, self.config.in_channels)
        height, width = sample.shape[-2:]
        if height % self.downsample_factor or width % self.downsample_factor:
            raise ValueError(
                f"Height and width must be multiples of 2**num_downs = {self.downsample_factor}, got {height}x{width}."
            )
        cube = self.model(sample)  # [B, out_channels, H, W]
        if not return_dict:
            return (cube,)
        return HSRModelOutput(sample=cube)
