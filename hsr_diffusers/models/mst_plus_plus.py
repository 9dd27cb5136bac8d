"""MST++: the Multi-stage Spectral-wise Transformer for spectral reconstruction, as a diffusers model.

A re-implementation of Cai, Lin, Lin, Wang, Zhang, Pfister, Timofte, Van Gool, "MST++: Multi-stage Spectral-wise
Transformer for Efficient Spectral Reconstruction", CVPR Workshops 2022 (winner of the NTIRE 2022 spectral
reconstruction challenge). Attention is spectral-wise: tokens are channels, so the attention map is
`(C / heads) x (C / heads)` per head and the cost grows linearly with the number of pixels. Each stage is a small
U-shaped transformer (MST) with two 2x downsamplings; three stages are chained with residual connections.
"""

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .modeling_outputs import HSRModelOutput, check_sample


class SpectralMSA(nn.Module):
    """
    Spectral-wise multi-head self-attention (S-MSA, `MS_MSA` in the authors' code) plus its depth-wise
    positional branch on the values.
    """

    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_k = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_v = nn.Linear(dim, dim_head * heads, bias=False)
        # A learned temperature per head: q and k are L2-normalised, so their products lie in [-1, 1].
        self.rescale = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj = nn.Linear(dim_head * heads, dim, bias=True)
        self.pos_emb = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False, groups=dim),
        )

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x_in.shape  # channels-last
        x = x_in.reshape(b, h * w, c)
        v_inp = self.to_v(x)
        # [B, heads, d, HW]: each of the d channels of a head is one token
        q, k, v = (
            t.reshape(b, h * w, self.num_heads, self.dim_head).permute(0, 2, 3, 1)
            for t in (self.to_q(x), self.to_k(x), v_inp)
        )
        q = F.normalize(q, dim=-1, p=2)
        k = F.normalize(k, dim=-1, p=2)
        attn = (k @ q.transpose(-2, -1)) * self.rescale  # [B, heads, d, d]
        x = attn.softmax(dim=-1) @ v  # [B, heads, d, HW]
        x = x.permute(0, 3, 1, 2).reshape(b, h * w, self.num_heads * self.dim_head)
        out_c = self.proj(x).view(b, h, w, c)
        out_p = self.pos_emb(v_inp.reshape(b, h, w, c).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return out_c + out_p


class FeedForward(nn.Module):
    """1x1 expand, 3x3 depth-wise, 1x1 project, with GELUs; channels-last in and out."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(dim, dim * mult, 1, 1, bias=False),
            nn.GELU(),
            nn.Conv2d(dim * mult, dim * mult, 3, 1, 1, bias=False, groups=dim * mult),
            nn.GELU(),
            nn.Conv2d(dim * mult, dim, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class PreNorm(nn.Module):
    """LayerNorm over the channels (last axis) before `fn`; used on the feed-forward branch only."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class SpectralAttentionBlocks(nn.Module):
    """`num_blocks` spectral-wise attention blocks (SAB, `MSAB` in the authors' code), channels-first in and out."""

    def __init__(self, dim: int, dim_head: int, heads: int, num_blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleList([SpectralMSA(dim=dim, dim_head=dim_head, heads=heads), PreNorm(dim, FeedForward(dim=dim))])
            for _ in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # [B, H, W, C]
        for attn, ff in self.blocks:
            x = attn(x) + x
            x = ff(x) + x
        return x.permute(0, 3, 1, 2)


class MST(nn.Module):
    """
    One stage: a U-shaped spectral transformer with `len(num_blocks) - 1` 2x downsamplings; level `i` has
    `dim * 2**i` channels split into `2**i` heads of `dim` channels.
    """

    def __init__(self, dim: int, num_blocks: tuple[int, ...] = (1, 1, 1)):
        super().__init__()
        self.embedding = nn.Conv2d(dim, dim, 3, 1, 1, bias=False)

        self.encoder_layers = nn.ModuleList()
        dim_stage = dim
        for n in num_blocks[:-1]:
            self.encoder_layers.append(
                nn.ModuleList(
                    [
                        SpectralAttentionBlocks(dim_stage, dim_head=dim, heads=dim_stage // dim, num_blocks=n),
                        nn.Conv2d(dim_stage, dim_stage * 2, 4, 2, 1, bias=False),
                    ]
                )
            )
            dim_stage *= 2

        self.bottleneck = SpectralAttentionBlocks(
            dim_stage, dim_head=dim, heads=dim_stage // dim, num_blocks=num_blocks[-1]
        )

        self.decoder_layers = nn.ModuleList()
        for n in reversed(num_blocks[:-1]):
            self.decoder_layers.append(
                nn.ModuleList(
                    [
                        nn.ConvTranspose2d(dim_stage, dim_stage // 2, stride=2, kernel_size=2, padding=0),
                        nn.Conv2d(dim_stage, dim_stage // 2, 1, 1, bias=False),
                        SpectralAttentionBlocks(
                            dim_stage // 2, dim_head=dim, heads=(dim_stage // 2) // dim, num_blocks=n
                        ),
                    ]
                )
            )
            dim_stage //= 2

        self.mapping = nn.Conv2d(dim, dim, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.embedding(x)
        skips = []
        for blocks, downsample in self.encoder_layers:
            fea = blocks(fea)
            skips.append(fea)
            fea = downsample(fea)  # [B, 2C, H/2, W/2]
        fea = self.bottleneck(fea)
        for (upsample, fusion, blocks), skip in zip(self.decoder_layers, reversed(skips)):
            fea = fusion(torch.cat([upsample(fea), skip], dim=1))
            fea = blocks(fea)
        return self.mapping(fea) + x


class MSTPlusPlus(ModelMixin, ConfigMixin):
    r"""
    MST++ (Cai et al., CVPRW 2022), re-implemented from the paper and the authors' public code
    (caiyuanhao1998/MST-plus-plus). Parameter names follow that code, so the authors' 31-band state dicts load
    with `load_state_dict` (after stripping a DataParallel `module.` prefix), and outputs were checked equal to the
    reference code. Their weights were trained on `[0, 1]` data, not the `[-1, 1]` units used here.

    Parameter count measured with `sum(p.numel() for p in model.parameters())` at the defaults (3 -> 31 channels,
    3 stages): **1,619,625** (the paper reports 1.62 M).

    The feature width of every stage is `out_channels` (the authors' `n_feat = 31`), because the global residual adds
    the embedded input to the output. Height and width must be multiples of 8: the authors' code reflect-pads to 8,
    so padding to [`~MSTPlusPlus.downsample_factor`] reproduces it.

    MST++ runs through [`HSRFeedForwardPipeline`], the pipeline for any feed-forward generator (`train_pixelgan.py
    --model_config mst_plus_plus` trains it); it meets the generator contract written in that pipeline's class
    docstring.

    Parameters:
        in_channels (`int`, *optional*, defaults to 3):
            Input channels: the RGB image in `[-1, 1]` first, then any extra conditioning channels.
        out_channels (`int`, *optional*, defaults to 31):
            Number of spectral bands produced (in `[-1, 1]` reflectance units); also the feature width.
        num_stages (`int`, *optional*, defaults to 3):
            Number of chained single-stage MSTs (`stage` in the authors' code).
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, out_channels: int = 31, num_stages: int = 3):
        super().__init__()
        n_feat = out_channels
        self.conv_in = nn.Conv2d(in_channels, n_feat, kernel_size=3, padding=1, bias=False)
        self.body = nn.Sequential(*[MST(dim=n_feat, num_blocks=(1, 1, 1)) for _ in range(num_stages)])
        self.conv_out = nn.Conv2d(n_feat, out_channels, kernel_size=3, padding=1, bias=False)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # As the authors' MST: truncated normal for linear layers, identity LayerNorm, PyTorch defaults elsewhere.
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @property
    def downsample_factor(self) -> int:
        """The multiple that the input height and width must have (8)."""
        return 8

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> HSRModelOutput | tuple[torch.Tensor]:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(batch_size, in_channels, height, width)`):
                RGB in `[-1, 1]` (linear RGB `* 2 - 1`) followed by any extra conditioning channels. Height and
                width must be multiples of 8.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return an [`HSRModelOutput`] instead of a plain tuple.

        Returns:
            [`HSRModelOutput`] or `tuple`: the cube `(batch_size, out_channels, height, width)` in `[-1, 1]`
            reflectance units, not clamped (the output convolution has no bounding activation); a tuple's first element
            is that tensor.
        """
        check_sample(sample, self.config.in_channels)
        height, width = sample.shape[-2:]
        if height % self.downsample_factor or width % self.downsample_factor:
            raise ValueError(f"MST++ needs height and width that are multiples of 8, got {height}x{width}.")
        x = self.conv_in(sample)  # [B, out_channels, H, W]
        cube = self.conv_out(self.body(x)) + x
        if not return_dict:
            return (cube,)
        return HSRModelOutput(sample=cube)
