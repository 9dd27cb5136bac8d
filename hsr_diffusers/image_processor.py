"""Pre- and post-processing shared by the HSR pipelines: input checks, [-1, 1] scaling, padding, tiling, previews."""

import math

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from hsr_diffusers.spectral import (
    bounded_rgb_projection,
    project_tensor,
    rendering_matrix,
    srgb_preview,
    srgb_to_camera_rgb,
)


PipelineImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | list
INPUT_SPACES = ("srgb", "linear")


class HSRImageProcessor:
    r"""
    Turns user RGB into model input and model output into cubes, for a given band set and camera response.

    Args:
        wavelengths (`list[float]`):
            Band centres of the cubes in nm.
        response (`str` or `list[list[float]]`):
            The camera response the model was trained with (see [`~hsr_diffusers.spectral.load_response`]); used by the
            RGB-consistency projection.
    """

    def __init__(self, wavelengths: list[float], response: str | list):
        self.wavelengths = list(wavelengths)
        self.response = response
        matrix = rendering_matrix(response, self.wavelengths)
        # [bands, 3] rendering and its [3, bands] least-norm inverse, kept in float32 for the torch projection.
        self.rendering = torch.as_tensor(matrix, dtype=torch.float32)
        self.rendering_pinv = torch.as_tensor(np.linalg.solve(matrix.T @ matrix, matrix.T), dtype=torch.float32)

    # ---------------------------------------------------------------- input
    @staticmethod
    def _array_to_tensor(array: np.ndarray, index: int) -> torch.Tensor:
        if array.size == 0 or min(array.shape[:2]) == 0:
            raise ValueError(f"Image {index} is empty: shape {array.shape}.")
        if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 1):
            raise ValueError(
                f"Image {index} is grayscale (shape {array.shape}); an RGB image with 3 channels is needed."
            )
        if array.ndim != 3 or array.shape[-1] not in (3, 4):
            raise ValueError(f"Image {index} must have shape (H, W, 3), got {array.shape}.")
        if array.dtype == np.uint8:
            scaled = array.astype(np.float32) / 255.0
        elif array.dtype == np.uint16:
            scaled = array.astype(np.float32) / 65535.0
        elif np.issubdtype(array.dtype, np.floating):
            scaled = array.astype(np.float32)
            if not np.all(np.isfinite(scaled)):
                raise ValueError(f"Image {index} contains NaN or Inf values.")
            if scaled.min() < 0 or scaled.max() > 1:
                raise ValueError(
                    f"Float image {index} must be in [0, 1], got values in [{scaled.min():g}, {scaled.max():g}]."
                )
        else:
            raise ValueError(f"Image {index} has dtype {array.dtype}; use uint8, uint16 or float in [0, 1].")
        if scaled.shape[-1] == 4:
            if not np.all(scaled[..., 3] == 1.0):
                raise ValueError(
                    f"Image {index} is RGBA with transparent pixels (alpha min {scaled[..., 3].min():g}); "
                    "flatten it onto a background first."
                )
            scaled = scaled[..., :3]
        return torch.from_numpy(np.ascontiguousarray(scaled)).permute(2, 0, 1)

    def preprocess(self, image: PipelineImageInput, input_space: str | None = "linear") -> torch.Tensor:
        r"""
        Checks RGB input and converts it to the model's input, a float32 `[N, 3, H, W]` tensor of linear camera RGB in
        [0, 1].

        Accepts a PIL image, a numpy `(H, W, 3)` array (`uint8`, `uint16` or float in [0, 1]), a torch `(3, H, W)` or
        `(N, 3, H, W)` tensor in [0, 1], or a list of these of one size. RGBA is accepted only when fully opaque.
        Raises `ValueError` naming the problem for grayscale, RGBA with transparency, NaN/Inf, out-of-range floats, empty
        images and mixed sizes.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them): the RGB.
            input_space (`str`, *optional*, defaults to `"linear"`):
                `"linear"`: the values are linear camera RGB already; `"srgb"`: they are a photo's sRGB, converted with
                [`~hsr_diffusers.spectral.srgb_to_camera_rgb`] for this processor's `response`; `None`: `"srgb"` for
                PIL images (photos) and `"linear"` for arrays and tensors, what the pipelines do.
        """
        if input_space is not None and input_space not in INPUT_SPACES:
            raise ValueError(f"input_space must be 'srgb', 'linear' or None, got {input_space!r}.")
        images = image if isinstance(image, list) else [image]
        if len(images) == 0:
            raise ValueError("No image given: the list is empty.")
        tensors, photos = [], []  # photos: the indices of `tensors` that hold sRGB
        for index, item in enumerate(images):
            first = len(tensors)
            if isinstance(item, PIL.Image.Image):
                if item.mode in ("L", "LA", "1", "I", "I;16", "F"):
                    raise ValueError(f"Image {index} is grayscale (PIL mode {item.mode}); an RGB image is needed.")
                if item.mode == "P":
                    item = item.convert("RGBA")
                if item.mode not in ("RGB", "RGBA"):
                    raise ValueError(f"Image {index} has PIL mode {item.mode}; convert it to RGB first.")
                tensors.append(self._array_to_tensor(np.asarray(item), index))
            elif isinstance(item, np.ndarray):
                tensors.append(self._array_to_tensor(item, index))
            elif isinstance(item, torch.Tensor):
                tensor = item[None] if item.ndim == 3 else item
                if tensor.ndim != 4 or tensor.shape[1] != 3:
                    raise ValueError(
                        f"Tensor image {index} must be (N, 3, H, W) or (3, H, W), got {tuple(item.shape)}."
                    )
                if tensor.numel() == 0:
                    raise ValueError(f"Tensor image {index} is empty: shape {tuple(item.shape)}.")
                tensor = tensor.float()
                if not torch.isfinite(tensor).all():
                    raise ValueError(f"Tensor image {index} contains NaN or Inf values.")
                if tensor.min() < 0 or tensor.max() > 1:
                    raise ValueError(
                        f"Tensor image {index} must be in [0, 1], got [{tensor.min().item():g}, {tensor.max().item():g}]."
                    )
                tensors.extend(tensor.cpu())
            else:
                raise ValueError(f"Image {index} has unsupported type {type(item).__name__}.")
            # A PIL image is a photo file's pixels; arrays and tensors keep the linear meaning they always had.
            if (input_space or ("srgb" if isinstance(item, PIL.Image.Image) else "linear")) == "srgb":
                photos.extend(range(first, len(tensors)))
        sizes = {tuple(t.shape[-2:]) for t in tensors}
        if len(sizes) > 1:
            raise ValueError(f"All images in a batch must have one size, got {sorted(sizes)}.")
        for index in photos:
            camera = srgb_to_camera_rgb(tensors[index].permute(1, 2, 0).numpy(), self.response, self.wavelengths)
            tensors[index] = torch.from_numpy(camera).permute(2, 0, 1)
        return torch.stack(tensors)  # [N, 3, H, W]

    # ---------------------------------------------------------------- scaling and geometry
    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        """[0, 1] -> [-1, 1] (the subtraction in place: one new tensor, not two)."""
        return x.mul(2.0).sub_(1.0)

    @staticmethod
    def denormalize(x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [0, 1] (the division in place: one new tensor, not two)."""
        return x.add(1.0).div_(2.0)

    @staticmethod
    def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
        """Pads the bottom and right of `[N, C, H, W]` to a multiple of `multiple` (reflection where possible)."""
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h == 0 and pad_w == 0:
            return x
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)

    @staticmethod
    def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
        """Start offsets of tiles of size `tile` covering `length`, overlapping by at least `overlap`."""
        if tile >= length:
            return [0]
        count = math.ceil((length - overlap) / (tile - overlap))
        # Spread the tiles evenly so that every overlap is at least `overlap` wide.
        return [round(i * (length - tile) / (count - 1)) for i in range(count)]

    @staticmethod
    def blend_weights(height: int, width: int, overlap: int, top: bool, bottom: bool, left: bool, right: bool):
        """`[1, 1, H, W]` weights rising linearly across the overlap on sides that have a neighbour tile."""

        def ramp(length: int, start: bool, end: bool) -> torch.Tensor:
            weights = torch.ones(length)
            if overlap > 0:
                steps = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
                size = min(overlap, length)
                if start:
                    weights[:size] = steps[:size]
                if end:
                    weights[-size:] = torch.minimum(weights[-size:], steps[:size].flip(0))
            return weights

        return (ramp(height, top, bottom)[:, None] * ramp(width, left, right)[None, :])[None, None]

    def tiles(self, height: int, width: int, tile_size: int | None, overlap: int):
        """
        Yields `(top, left, tile_height, tile_width, weight)` for overlapping tiles covering an image (one tile when
        `tile_size` is None); `weight` `[1, 1, h, w]` blends the tiles so that the weights of every pixel sum to one
        after normalisation.
        """
        tile_h, tile_w = min(tile_size or height, height), min(tile_size or width, width)
        for top in self.tile_starts(height, tile_h, overlap):
            for left in self.tile_starts(width, tile_w, overlap):
                weight = self.blend_weights(
                    tile_h, tile_w, overlap, top > 0, top + tile_h < height, left > 0, left + tile_w < width
                )
                yield top, left, tile_h, tile_w, weight

    def num_tiles(self, height: int, width: int, tile_size: int | None, overlap: int) -> int:
        return sum(1 for _ in self.tiles(height, width, tile_size, overlap))

    # ---------------------------------------------------------------- spectral steps
    def project(self, cube: torch.Tensor, rgb: torch.Tensor, saturation_level: float = 254.5 / 255) -> torch.Tensor:
        r"""
        RGB-consistent projection of a `[N, bands, H, W]` cube (units [0, 1]) onto the linear RGB `[N, 3, H, W]`.
        Same operator as [`~hsr_diffusers.spectral.rgb_consistent_projection`]; pixels with a saturated channel are
        left unchanged.
        """
        return project_tensor(cube, rgb, self.rendering, self.rendering_pinv, saturation_level)

    def estimate(self, estimator: torch.nn.Module, rgb: torch.Tensor, project: bool = True) -> torch.Tensor:
        r"""
        A per-pixel estimator's cube `[N, bands, H, W]` in [0, 1] for linear RGB `[N, 3, H, W]` in [0, 1], made
        RGB-consistent by the closed-form projection ([`~HSRImageProcessor.project`]) when `project` is set, then
        clipped. Not the exact [0, 1]-bounded projection: a pipeline's output gets that one, and the clip of the closed
        form scores within 1 % of it on the validation scenes at a fraction of the cost
        (benchmarks/results/projection_accuracy.md). An estimator with a `consistent_estimate` method (the
        [`RootPolynomialRegression`]) applies the same projection inside its own matrix product.

        Args:
            estimator (`torch.nn.Module`): maps RGB in [-1, 1] to the cube in [-1, 1], like the pipelines' generators.
            rgb (`torch.Tensor`): `[N, 3, H, W]` linear RGB in [0, 1].
            project (`bool`, *optional*, defaults to `True`): whether to apply the closed-form projection.

        Returns:
            `torch.Tensor`: float32 `[N, bands, H, W]` in [0, 1].
        """
        if project and hasattr(estimator, "consistent_estimate"):
            estimate = estimator.consistent_estimate(rgb, self.rendering, self.rendering_pinv)
        else:
            estimate = self.denormalize(estimator(self.normalize(rgb)).sample.float())
            if project:
                estimate = self.project(estimate, rgb)
        return estimate.clamp(0.0, 1.0)

    def project_and_clip(
        self,
        cube: torch.Tensor,
        rgb: torch.Tensor,
        iterations: int = 20,
        tolerance: float = 1 / 255,
        saturation_level: float = 254.5 / 255,
    ) -> torch.Tensor:
        r"""
        RGB-consistent projection that keeps the cube in [0, 1]: every pixel spectrum becomes the closest spectrum in
        [0, 1] that renders exactly to `rgb` (see [`~hsr_diffusers.spectral.bounded_rgb_projection`]).

        Where no spectrum in [0, 1] renders to `rgb` (the RGB lies outside the camera's gamut of [0, 1] spectra, see
        [`~hsr_diffusers.spectral.rgb_gamut_mask`]; an 8-bit render truncates dark, saturated colours out of it), the
        target becomes every RGB within `tolerance` of `rgb` in each channel, which holds the true RGB of a quantised
        input. Pixels with a channel at or above `saturation_level` keep the clipped result, because their true RGB is
        unknown after clipping.

        Args:
            cube (`torch.Tensor`): `[N, bands, H, W]` cube in [0, 1] units.
            rgb (`torch.Tensor`): `[N, 3, H, W]` linear RGB in [0, 1].
            iterations (`int`, *optional*, defaults to 20):
                Step limit of the slow stages (see [`~hsr_diffusers.spectral.bounded_rgb_projection`]); pixels stop
                as soon as they are solved (typically after 1 to 4 steps).
            tolerance (`float`, *optional*, defaults to 1/255):
                Per-channel slack allowed for RGB outside the gamut.
            saturation_level (`float`, *optional*, defaults to 254.5/255):
                Pixels with any channel at or above it are only clipped.

        Returns:
            `torch.Tensor`: float32 `[N, bands, H, W]` in [0, 1].
        """
        return bounded_rgb_projection(
            cube, rgb, self.rendering, iterations=iterations, tolerance=tolerance, saturation_level=saturation_level
        )

    def render(self, cube: torch.Tensor) -> torch.Tensor:
        """Linear RGB `[N, 3, H, W]` of a `[N, bands, H, W]` cube."""
        return torch.einsum("nchw,cr->nrhw", cube.float(), self.rendering.to(cube.device))

    def cube_to_rgb(self, cubes: np.ndarray | torch.Tensor, illuminant: str = "D65") -> np.ndarray:
        """sRGB `uint8` previews of cubes (numpy `(N, H, W, bands)` or torch `(N, bands, H, W)`), under `illuminant`."""
        return srgb_preview(cubes, self.wavelengths, illuminant=illuminant)
