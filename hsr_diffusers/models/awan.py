"""AWAN: the Adaptive Weighted Attention Network for spectral reconstruction, as a diffusers model.

A re-implementation of Li, Wang, Zuo, Zhang, Zuo, "Adaptive Weighted Attention Network with Camera Spectral
Sensitivity Prior for Spectral Reconstruction from RGB Images", CVPR Workshops 2020 (winner of the NTIRE 2020
spectral reconstruction challenge, clean track). The network is a stack of dual residual attention blocks (DRAB),
each ending in adaptive weighted channel attention (AWCA), followed by a patch-level second-order non-local module
(PSNL) on the output bands. The camera-spectral-sensitivity prior of the paper is a training loss (an RGB
re-projection term), so it is not part of the model.
"""

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .modeling_outputs import HSRModelOutput, check_sample


class ReflectConv2d(nn.Module):
    """A bias-free convolution after reflection padding, which keeps the spatial size (AWAN's `Conv3x3`)."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d((kernel_size - 1) // 2)
        self.conv2d = nn.Conv2d(in_dim, out_dim, kernel_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class AWCA(nn.Module):
    """
    Adaptive weighted channel attention: channel weights from a learned spatial softmax pooling (instead of the
    global average pooling of squeeze-and-excitation) followed by a bottleneck MLP.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1, bias=False)
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.PReLU(),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        weights = self.conv(x).view(b, h * w, 1).softmax(dim=1)  # [B, HW, 1], sums to 1 over pixels
        pooled = torch.bmm(x.view(b, c, h * w), weights).view(b, c)  # [B, C]
        return x * self.fc(pooled).view(b, c, 1, 1)


class SecondOrderNonLocal(nn.Module):
    """
    Non-local block whose pixel affinities are second-order (covariance) statistics of one embedding:
    `softmax((theta - mean) @ theta^T / C')`. The output projection `W` starts at zero, so the block starts as the
    identity. Memory grows as `(H * W)**2`.
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.inter_channels = max(1, channels // reduction)
        self.g = nn.Conv2d(channels, self.inter_channels, 1, bias=False)
        self.theta = nn.Conv2d(channels, self.inter_channels, 1, bias=False)
        self.W = nn.Conv2d(self.inter_channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        g_x = self.g(x).view(b, self.inter_channels, h * w).transpose(1, 2)  # [B, HW, C']
        theta_x = self.theta(x).view(b, self.inter_channels, h * w).transpose(1, 2)  # [B, HW, C']
        centered = theta_x - theta_x.mean(dim=2, keepdim=True)
        affinity = torch.bmm(centered, theta_x.transpose(1, 2)) / self.inter_channels  # [B, HW, HW]
        y = torch.bmm(F.softmax(affinity, dim=-1), g_x)  # [B, HW, C']
        y = y.transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return x + self.W(y)


class PSNL(nn.Module):
    """Patch-level second-order non-local: the same non-local block applied to each quadrant of the map."""

    def __init__(self, channels: int):
        super().__init__()
        self.non_local = SecondOrderNonLocal(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        h1, w1 = h // 2, w // 2
        rows = []
        for row in (x[:, :, :h1], x[:, :, h1:]):
            # A 1-pixel-high or -wide map has empty quadrants; they are skipped.
            quadrants = [self.non_local(q) for q in (row[..., :w1], row[..., w1:]) if q.numel() > 0]
            if quadrants:
                rows.append(torch.cat(quadrants, dim=3))
        return torch.cat(rows, dim=2)


class DRAB(nn.Module):
    """
    Dual residual attention block: a residual pair of 3x3 convolutions, then a `k1 x k1` convolution whose output
    is added to the running "long" residual `res` carried between blocks, AWCA, and a `k2 x k2` convolution back
    onto the block input.
    """

    def __init__(self, channels: int, k1_size: int = 5, k2_size: int = 3):
        super().__init__()
        self.conv1 = ReflectConv2d(channels, channels, 3)
        self.relu1 = nn.PReLU()
        self.conv2 = ReflectConv2d(channels, channels, 3)
        self.relu2 = nn.PReLU()
        self.up_conv = ReflectConv2d(channels, channels, k1_size)
        self.up_relu = nn.PReLU()
        self.se = AWCA(channels)
        self.down_conv = ReflectConv2d(channels, channels, k2_size)
        self.down_relu = nn.PReLU()

    def forward(self, x: torch.Tensor, res: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_in = x
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))) + x_in)
        res = self.up_relu(self.up_conv(x) + res)
        x = self.down_relu(self.down_conv(self.se(res)) + x_in)
        return x, res


class AWAN(ModelMixin, ConfigMixin):
    r"""
    AWAN (Li et al., CVPRW 2020), re-implemented from the paper and the authors' public code (Deep-imagelab/AWAN).
    Parameter names follow that code, so the authors' state dicts load unchanged (after stripping a DataParallel
    `module.` prefix), and outputs were checked equal to the reference code in float64. Their weights were trained on
    `[0, 1]` data, not the `[-1, 1]` units used here.

    Parameter counts measured with `sum(p.numel() for p in model.parameters())` at 3 -> 31 channels and 8 DRABs:
    **17,461,521** with the paper's `num_channels=200` (the default), and **4,039,425** with `num_channels=96`, the
    width behind the "4.04 M" AWAN in the MST++ paper's comparison tables.

    The non-local module forms a `(H * W / 4) x (H * W / 4)` affinity per quadrant, so full-resolution images need a
    lot of memory: run large images in tiles. Any height and width work ([`~AWAN.downsample_factor`] is 1), but the
    reflection padding of the 5x5 convolutions needs at least 3x3 pixels.

    AWAN runs through [`HSRFeedForwardPipeline`], the pipeline for any feed-forward generator (`train_pixelgan.py
    --model_config awan` trains it); it meets the generator contract written in that pipeline's class docstring.

    Parameters:
        in_channels (`int`, *optional*, defaults to 3):
            Input channels: the RGB image in `[-1, 1]` first, then any extra conditioning channels.
        out_channels (`int`, *optional*, defaults to 31):
            Number of spectral bands produced (in `[-1, 1]` reflectance units).
        num_channels (`int`, *optional*, defaults to 200):
            Feature width of the backbone (`channels` in the authors' code).
        num_blocks (`int`, *optional*, defaults to 8):
            Number of DRABs (`n_DRBs`).
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, out_channels: int = 31, num_channels: int = 200, num_blocks: int = 8):
        super().__init__()
        self.input_conv2D = ReflectConv2d(in_channels, num_channels, 3)
        self.input_prelu2D = nn.PReLU()
        self.head_conv2D = ReflectConv2d(num_channels, num_channels, 3)
        self.backbone = nn.ModuleList([DRAB(num_channels, k1_size=5, k2_size=3) for _ in range(num_blocks)])
        self.tail_conv2D = ReflectConv2d(num_channels, num_channels, 3)
        self.output_prelu2D = nn.PReLU()
        self.output_conv2D = ReflectConv2d(num_channels, out_channels, 3)
        self.tail_nonlocal = PSNL(out_channels)

        # PyTorch's default initialisation, as the authors use, except the non-local output projection: zero, so the
        # PSNL starts as the identity (as in the reference non-local block).
        nn.init.zeros_(self.tail_nonlocal.non_local.W.weight)

    @property
    def downsample_factor(self) -> int:
        """The multiple that the input height and width must have (1: any size)."""
        return 1

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> HSRModelOutput | tuple[torch.Tensor]:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(batch_size, in_channels, height, width)`):
                RGB in `[-1, 1]` (linear RGB `* 2 - 1`) followed by any extra conditioning channels; at least 3x3.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return an [`HSRModelOutput`] instead of a plain tuple.

        Returns:
            [`HSRModelOutput`] or `tuple`: the cube `(batch_size, out_channels, height, width)` in `[-1, 1]`
            reflectance units, not clamped (no bounding activation after the output convolution and non-local
            tail); a tuple's first element is that tensor.
        """
        check_sample(sample, self.config.in_channels)
        if min(sample.shape[-2:]) < 3:
            raise ValueError(f"AWAN needs at least 3x3 pixels, got {sample.shape[-2]}x{sample.shape[-1]}.")

        out = self.head_conv2D(self.input_prelu2D(self.input_conv2D(sample)))  # [B, C, H, W]
        residual = res = out
        for block in self.backbone:
            out, res = block(out, res)
        out = self.tail_conv2D(out) + residual
        out = self.output_conv2D(self.output_prelu2D(out))  # [B, out_channels, H, W]
        cube = self.tail_nonlocal(out)
        if not return_dict:
            return (cube,)
        return HSRModelOutput(sample=cube)
