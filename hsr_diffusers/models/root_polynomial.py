"""Root-polynomial regression from RGB to a spectral cube: a closed-form, per-pixel linear baseline.

Finlayson, Mackiewicz, Hurlbert, "Color Correction Using Root-Polynomial Regression", IEEE Transactions on Image
Processing 24(5), 2015. Each term is a k-th root of a degree-k monomial of (r, g, b), so every term scales linearly
with exposure and the estimate `features(rgb) @ weight` is exposure invariant: doubling the RGB doubles the spectrum.
That is also why there is no constant term.

[`fit_root_polynomial`] fits one on the RGB the training scripts render from a set of cubes (a dataset split): the
regression floor, and the estimate that the residual DDPM and PixelGAN condition on.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .modeling_outputs import HSRModelOutput, check_sample


if TYPE_CHECKING:
    import datasets


# Number of root-polynomial terms for degree 1, 2 and 3 (the paper's 3, 6 and 13).
_NUM_FEATURES = {1: 3, 2: 6, 3: 13}


def root_polynomial_features(rgb: torch.Tensor, degree: int) -> torch.Tensor:
    """
    The root-polynomial expansion of linear RGB along the last axis.

    Args:
        rgb (`torch.Tensor` of shape `(..., 3)`): non-negative linear RGB.
        degree (`int`): 1 (`r, g, b`), 2 (adds `sqrt(rg), sqrt(gb), sqrt(rb)`) or 3 (adds the seven cube roots
            `(rg^2)^(1/3), (rb^2)^(1/3), (gb^2)^(1/3), (gr^2)^(1/3), (br^2)^(1/3), (bg^2)^(1/3), (rgb)^(1/3)`).

    Returns:
        `torch.Tensor` of shape `(..., num_features)` with 3, 6 or 13 features, in the order above.
    """
    r, g, b = rgb.unbind(-1)
    terms = [r, g, b]
    if degree >= 2:
        terms += [torch.sqrt(r * g), torch.sqrt(g * b), torch.sqrt(r * b)]
    if degree >= 3:
        cube_root_terms = [r * g * g, r * b * b, g * b * b, g * r * r, b * r * r, b * g * g, r * g * b]
        # Inputs are non-negative, so the real cube root is `pow(1/3)`.
        terms += [t.pow(1.0 / 3.0) for t in cube_root_terms]
    return torch.stack(terms, dim=-1)


class RootPolynomialRegression(ModelMixin, ConfigMixin):
    r"""
    Root-polynomial regression (Finlayson et al., 2015) from linear RGB to reflectance, fitted in closed form with
    [`~RootPolynomialRegression.fit`] and saved like any other model (the matrix is the parameter `weight`).

    It runs through [`HSRFeedForwardPipeline`], the pipeline for any feed-forward generator: saved as that pipeline's
    `unet`, it is the whole regression floor (`train_scripts/train_regression.py`); passed as its `estimator` (or the
    diffusion pipeline's), it gives the estimate that a network refines. It meets the generator contract written in
    [`HSRFeedForwardPipeline`]'s class docstring: `forward` takes RGB in `[-1, 1]` and returns the cube in `[-1, 1]`,
    and [`~RootPolynomialRegression.downsample_factor`] is 1. Internally the RGB is mapped back to `[0, 1]` and
    clamped at 0 before the roots, and the estimate `features @ weight` (reflectance) is mapped to `* 2 - 1`. Only the
    first 3 input channels are used.

    Parameters:
        degree (`int`, *optional*, defaults to 2):
            1, 2 or 3: 3, 6 or 13 root-polynomial terms.
        in_channels (`int`, *optional*, defaults to 3):
            Input channels (at least 3); channels after the RGB are ignored.
        out_channels (`int`, *optional*, defaults to 31):
            Number of spectral bands produced.
        ridge (`float`, *optional*, defaults to 1e-6):
            Tikhonov regularisation added to the diagonal of the per-pixel normal matrix `X^T X / P`.
    """

    @register_to_config
    def __init__(self, degree: int = 2, in_channels: int = 3, out_channels: int = 31, ridge: float = 1e-6):
        super().__init__()
        if degree not in _NUM_FEATURES:
            raise ValueError(f"`degree` must be 1, 2 or 3, got {degree}.")
        if in_channels < 3:
            raise ValueError(f"`in_channels` must be at least 3 (RGB first), got {in_channels}.")
        # [num_features, out_channels]; zero until `fit` or `from_pretrained` fills it.
        self.weight = nn.Parameter(torch.zeros(_NUM_FEATURES[degree], out_channels))

    @property
    def num_features(self) -> int:
        """Number of root-polynomial terms (3, 6 or 13)."""
        return _NUM_FEATURES[self.config.degree]

    @property
    def downsample_factor(self) -> int:
        """The multiple that the input height and width must have (1: the model is per-pixel)."""
        return 1

    @torch.no_grad()
    def fit(self, rgb: np.ndarray | torch.Tensor, cube: np.ndarray | torch.Tensor) -> "RootPolynomialRegression":
        r"""
        Solves the ridge least-squares problem `min_W |features(rgb) W - cube|^2 / P + ridge |W|^2` in closed form
        (float64) and stores `W` in `weight`.

        Args:
            rgb (`np.ndarray` or `torch.Tensor` of shape `(..., 3)`):
                Linear RGB in `[0, 1]`, channels last: `(P, 3)` pixels or `(H, W, 3)` / `(N, H, W, 3)` images.
                Negative values are clamped to 0.
            cube (`np.ndarray` or `torch.Tensor` of shape `(..., out_channels)`):
                Reflectance in `[0, 1]`, channels last, with the same leading shape as `rgb`.

        Returns:
            `RootPolynomialRegression`: `self`, fitted.
        """
        rgb = torch.as_tensor(rgb).detach().cpu().double()
        cube = torch.as_tensor(cube).detach().cpu().double()
        if rgb.shape[-1] != 3:
            raise ValueError(f"`rgb` must be channels-last with 3 channels, got shape {tuple(rgb.shape)}.")
        if cube.shape[-1] != self.config.out_channels:
            raise ValueError(
                f"`cube` must be channels-last with {self.config.out_channels} bands, got shape {tuple(cube.shape)}."
            )
        if rgb.shape[:-1] != cube.shape[:-1]:
            raise ValueError(
                f"`rgb` and `cube` must share leading dims, got {tuple(rgb.shape)} and {tuple(cube.shape)}."
            )

        features = root_polynomial_features(rgb.reshape(-1, 3).clamp(min=0), self.config.degree)  # [P, F]
        targets = cube.reshape(-1, self.config.out_channels)  # [P, bands]
        num_pixels = features.shape[0]
        # Normal equations scaled by 1/P so that `ridge` does not depend on the number of pixels.
        gram = features.T @ features / num_pixels + self.config.ridge * torch.eye(
            self.num_features, dtype=torch.float64
        )
        weight = torch.linalg.solve(gram, features.T @ targets / num_pixels)  # [F, bands]
        self.weight.copy_(weight.to(self.weight.dtype))
        return self

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> HSRModelOutput | tuple[torch.Tensor]:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(batch_size, in_channels, height, width)`):
                RGB in `[-1, 1]` (linear RGB `* 2 - 1`) in the first 3 channels; further channels are ignored.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return an [`HSRModelOutput`] instead of a plain tuple.

        Returns:
            [`HSRModelOutput`] or `tuple`: the linear estimate `(batch_size, out_channels, height, width)` in
            `[-1, 1]` reflectance units, not clamped (a least-squares fit can leave [0, 1]); a tuple's first element
            is that tensor.
        """
        check_sample(sample, self.config.in_channels)
        rgb = ((sample[:, :3] + 1) / 2).clamp(min=0).permute(0, 2, 3, 1)  # [B, H, W, 3] linear RGB
        features = root_polynomial_features(rgb.to(self.weight.dtype), self.config.degree)  # [B, H, W, F]
        reflectance = _channels_first_product(features, self.weight)  # [B, out_channels, H, W]
        cube = reflectance * 2 - 1
        if not return_dict:
            return (cube,)
        return HSRModelOutput(sample=cube)

    @torch.no_grad()
    def consistent_estimate(
        self,
        rgb: torch.Tensor,
        rendering: torch.Tensor,
        rendering_pinv: torch.Tensor,
        saturation_level: float | None = 254.5 / 255,
    ) -> torch.Tensor:
        r"""
        The estimate for linear RGB, made RGB-consistent by the closed-form projection inside the same matrix product.

        The projection ([`~hsr_diffusers.spectral.project_tensor`]) adds `(y - φWA) A⁺` to the estimate `φW` (features
        `φ`, weight `W`, rendering `A`, its least-norm inverse `A⁺`), so `[φ, y - φWA] @ [W; A⁺]` is the projected
        estimate in one product over `F + 3` terms: the same operator as `forward` followed by the projection, without
        their passes over the full cube.

        Args:
            rgb (`torch.Tensor` of shape `(batch_size, 3, height, width)`):
                Linear RGB in `[0, 1]`: the target of the projection (clamped at 0 for the roots only).
            rendering (`torch.Tensor` of shape `(out_channels, 3)`):
                The rendering matrix `A`.
            rendering_pinv (`torch.Tensor` of shape `(3, out_channels)`):
                Its least-norm inverse `(AᵀA)⁻¹Aᵀ`.
            saturation_level (`float`, *optional*, defaults to 254.5/255):
                Pixels with any channel at or above it are not corrected (their true RGB is unknown); `None` corrects
                every pixel.

        Returns:
            `torch.Tensor` of shape `(batch_size, out_channels, height, width)`: the projected estimate in `[0, 1]`
            reflectance units, not clamped.
        """
        weight = self.weight.float()
        rendering = rendering.to(device=weight.device, dtype=torch.float32)
        rendering_pinv = rendering_pinv.to(device=weight.device, dtype=torch.float32)
        rgb = rgb.float().permute(0, 2, 3, 1)  # [B, H, W, 3]
        features = root_polynomial_features(rgb.clamp(min=0), self.config.degree)  # [B, H, W, F]
        residual = rgb - features @ (weight @ rendering)  # [B, H, W, 3]: what the estimate's render misses
        if saturation_level is not None:
            residual = residual * (rgb < saturation_level).all(dim=-1, keepdim=True)
        return _channels_first_product(torch.cat([features, residual], dim=-1), torch.cat([weight, rendering_pinv]))


def _channels_first_product(terms: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """`terms @ matrix` for per-pixel `terms` `[B, H, W, K]` and a `[K, bands]` matrix, as a contiguous `[B, bands, H,
    W]` cube: multiplied as `[bands, K] @ [K, H * W]`. The product in `[B, H, W, bands]` permuted to channels-first is
    channels-last in memory, and it made every later pass over the cube (normalising, the concatenation with the RGB
    that the networks take, blending the tiles) run on strided memory, several times slower."""
    batch, height, width, count = terms.shape
    cube = matrix.T @ terms.reshape(batch, height * width, count).transpose(1, 2)  # [B, bands, H * W]
    return cube.view(batch, -1, height, width)


def fit_root_polynomial(
    cubes: "datasets.Dataset | Iterable[np.ndarray]",
    response: str | np.ndarray,
    wavelengths,
    rgb_mode: str = "ntire2020_clean",
    degree: int = 2,
    pixels_per_scene: int = 20000,
    seed: int = 0,
) -> RootPolynomialRegression:
    r"""
    Fits a [`RootPolynomialRegression`] from the RGB that training renders to the bands, in closed form.

    The same fit gives the regression floor (`train_scripts/train_regression.py`) and the estimator whose residual the
    DDPM and PixelGAN learn (`--residual root_poly`). Random pixels are drawn one scene at a time, so memory holds one
    cube plus the drawn pixels.

    Args:
        cubes (`datasets.Dataset` or iterable of `np.ndarray`):
            A split written by `hsr_diffusers.data.build_dataset`, or `(H, W, bands)` cubes.
        response (`str` or `np.ndarray`):
            Camera response that renders the RGB (see `hsr_diffusers.data.rendering.render_training_rgb`).
        wavelengths (`list[float]`):
            Band centres of the cubes in nm.
        rgb_mode (`str`, *optional*, defaults to `"ntire2020_clean"`):
            How the RGB is rendered, as in training.
        degree (`int`, *optional*, defaults to 2):
            Root-polynomial degree: 1, 2 or 3 (3, 6 or 13 terms).
        pixels_per_scene (`int`, *optional*, defaults to 20000):
            Random pixels drawn from each scene (all pixels of smaller scenes).
        seed (`int`, *optional*, defaults to 0):
            Seed of the pixel draw.

    Returns:
        [`RootPolynomialRegression`]: the fitted model, `in_channels=3`, `out_channels=len(wavelengths)`.
    """
    # Imported here: the data layer imports datasets and pyarrow, which loading a pipeline does not need.
    import datasets

    from hsr_diffusers.data.dataset import get_cube
    from hsr_diffusers.data.rendering import render_training_rgb

    if isinstance(cubes, datasets.Dataset):
        split = cubes
        cubes = (get_cube(split, index) for index in range(len(split)))
    rng = np.random.default_rng(seed)
    rgbs, pixels = [], []
    for cube in cubes:
        cube = np.asarray(cube, dtype=np.float32)
        rgb = render_training_rgb(cube, response, wavelengths, rgb_mode)
        num_pixels = cube.shape[0] * cube.shape[1]
        flat = rng.choice(num_pixels, size=min(pixels_per_scene, num_pixels), replace=False)
        pixels.append(cube.reshape(-1, cube.shape[-1])[flat])
        rgbs.append(rgb.reshape(-1, 3)[flat])
    if not pixels:
        raise ValueError("No cubes to fit the root polynomial on.")
    model = RootPolynomialRegression(degree=degree, in_channels=3, out_channels=len(wavelengths))
    return model.fit(np.concatenate(rgbs), np.concatenate(pixels))
