from collections.abc import Callable

import torch
from diffusers import DiffusionPipeline
from diffusers.models import ModelMixin
from diffusers.utils import logging, replace_example_docstring

from hsr_diffusers.image_processor import HSRImageProcessor, PipelineImageInput
from hsr_diffusers.models.root_polynomial import RootPolynomialRegression
from hsr_diffusers.pipelines.pipeline_output import HSRPipelineOutput
from hsr_diffusers.pipelines.tiling import TILE_BATCH_PIXELS, Tiler, concatenate_rows
from hsr_diffusers.spectral import DEFAULT_RESPONSE, WAVELENGTHS


logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import PIL.Image
        >>> from hsr_diffusers import HSRPipeline

        >>> pipe = HSRPipeline.from_pretrained("hsr-diffusers/pixelgan-cave")
        >>> photo = PIL.Image.open("photo.png")  # sRGB: converted to the model's camera RGB by the pipeline
        >>> cube = pipe(photo).cubes[0]  # (H, W, 31)
        ```
"""


class HSRFeedForwardPipeline(DiffusionPipeline):
    r"""
    Feed-forward spectral reconstruction: runs any deterministic network that maps RGB to a cube, one forward pass per
    tile. It ships the pixel-based cGAN of the method (a pix2pix U-Net generator trained with L1 and a PixelGAN/PatchGAN
    loss); AWAN, MST++ and the root-polynomial regression run through it unchanged (`train_pixelgan.py --model awan`,
    `train_regression.py`), and so does any new model that meets the generator contract below. It was called
    `HSRPixelGANPipeline` before; that name, and checkpoints saved under it, still load.

    This model inherits from [`DiffusionPipeline`]. Check the superclass documentation for the generic methods
    implemented for all pipelines (downloading, saving, running on a particular device, etc.).

    The generator contract (what a new model must provide to run here and in the training scripts):

    - a `ModelMixin, ConfigMixin` class with `in_channels` (3, plus `bands` when an estimator is set) and
      `out_channels` (`bands`) in its config;
    - `forward(rgb)` on `[N, in_channels, H, W]` in [-1, 1] returning an [`~hsr_diffusers.models.HSRModelOutput`]
      whose `sample` is the cube `[N, out_channels, H, W]` in [-1, 1] (the pipeline reads `.sample`);
    - a `downsample_factor` attribute or property: the pipeline pads every tile to a multiple of it (1 for a network
      that takes any size);
    - determinism in eval mode (`from_pretrained` returns eval mode; the pipeline never draws noise).

    Args:
        unet ([`HSRPixelGANGenerator`], [`AWAN`], [`MSTPlusPlus`], [`RootPolynomialRegression`] or any generator
            meeting the contract above):
            Maps `[N, in_channels, H, W]` (RGB in [-1, 1], then the estimate when an estimator is set) to the cube in
            [-1, 1]. Called `unet` as in the diffusion pipeline, because `generator` means a `torch.Generator` in
            diffusers.
        estimator ([`RootPolynomialRegression`], *optional*):
            When set, the network sees the estimate as extra input channels and predicts the residual to it.
        wavelengths (`list[int]`, *optional*, defaults to 400..700 step 10):
            Band centres in nm, stored in `model_index.json`.
        response (`str` or `list[list[float]]`, *optional*, defaults to `"cie1964_ntire2020"`):
            Camera response the model was trained with; defines the RGB-consistency projection.
        project_estimate (`bool`, *optional*, defaults to `True`):
            Whether the estimate is made RGB-consistent before use (must match training).
        default_tile_size (`int`, *optional*):
            Tile size used when `__call__` gets no `tile_size`, for networks whose memory grows faster than the image
            (AWAN's non-local block). `None`: whole images.
        default_tile_overlap (`int`, *optional*, defaults to 32):
            Tile overlap used when `__call__` gets no `tile_overlap`.
    """

    model_cpu_offload_seq = "unet"
    _optional_components = ["estimator"]
    # Small tiles are stacked into one network call up to this many pixels (see `pipelines.tiling`).
    TILE_BATCH_PIXELS = TILE_BATCH_PIXELS

    def __init__(
        self,
        unet: ModelMixin,
        estimator: RootPolynomialRegression | None = None,
        wavelengths: list[int] | None = None,
        response: str | list = DEFAULT_RESPONSE,
        project_estimate: bool = True,
        default_tile_size: int | None = None,
        default_tile_overlap: int = 32,
    ):
        super().__init__()
        self.register_modules(unet=unet, estimator=estimator)
        wavelengths = list(WAVELENGTHS if wavelengths is None else wavelengths)
        self.register_to_config(
            wavelengths=wavelengths,
            response=response,
            project_estimate=project_estimate,
            default_tile_size=default_tile_size,
            default_tile_overlap=default_tile_overlap,
        )
        self.num_bands = (
            getattr(unet.config, "out_channels", len(wavelengths)) if unet is not None else len(wavelengths)
        )
        if self.num_bands != len(wavelengths):
            raise ValueError(
                f"unet.config.out_channels={self.num_bands} but {len(wavelengths)} wavelengths are given."
            )
        if unet is not None:
            expected = 3 + (self.num_bands if estimator is not None else 0)
            if unet.config.in_channels != expected:
                raise ValueError(f"unet.config.in_channels must be {expected}, got {unet.config.in_channels}.")
        self.image_processor = HSRImageProcessor(wavelengths, response)

    @property
    def is_sampler(self) -> bool:
        """`False`: one deterministic pass; `num_inference_steps`, `num_samples` and `generator` do not apply, and there
        is no `uncertainty`."""
        return False

    @property
    def downsample_factor(self) -> int:
        return self.unet.downsample_factor

    # Copied from hsr_diffusers.pipelines.hsr_diffusion.pipeline_hsr_diffusion.HSRDiffusionPipeline.check_inputs
    def check_inputs(self, output_type: str, tile_size: int | None, tile_overlap: int):
        if output_type not in ("np", "pt"):
            raise ValueError(f"output_type must be 'np' or 'pt', got {output_type!r}.")
        if tile_size is not None and (tile_size < 2 * tile_overlap + 8 or tile_size % self.downsample_factor):
            raise ValueError(
                f"tile_size must be a multiple of {self.downsample_factor} and larger than 2 * tile_overlap + 8, "
                f"got tile_size={tile_size}, tile_overlap={tile_overlap}."
            )
        if tile_overlap < 0:
            raise ValueError(f"tile_overlap must be non-negative, got {tile_overlap}.")

    # Copied from hsr_diffusers.pipelines.hsr_diffusion.pipeline_hsr_diffusion.HSRDiffusionPipeline.prepare_estimate
    def prepare_estimate(self, rgb: torch.Tensor) -> torch.Tensor:
        """
        The estimator's cube `[N, bands, H, W]` in [0, 1] for linear RGB `[N, 3, H, W]` in [0, 1], made RGB-consistent
        by the closed-form projection when `project_estimate` is set, then clipped (see
        [`~HSRImageProcessor.estimate`]). The training script calls this too, so that training and sampling condition on
        the same estimate.
        """
        return self.image_processor.estimate(self.estimator, rgb, project=self.config.project_estimate)

    def predict(self, rgb: torch.Tensor) -> torch.Tensor:
        """
        The network's cube `[N, bands, H, W]` in [-1, 1] units for linear RGB `[N, 3, H, W]` in [0, 1] of a size the
        network accepts, before clipping and projection. The training script calls this, so that its loss sees exactly
        what the pipeline returns.
        """
        model_input = self.image_processor.normalize(rgb)
        if self.estimator is None:
            return self.unet(model_input.to(self.unet.dtype)).sample.float()
        estimate = self.image_processor.normalize(self.prepare_estimate(rgb))  # [N, bands, H, W]
        model_input = torch.cat([model_input, estimate], dim=1).to(self.unet.dtype)
        return estimate + self.unet(model_input).sample.float()

    def _warn_ignored(self, names: list[str]):
        """Warns once per pipeline and argument that a sampling argument of the diffusion pipeline has no effect here."""
        warned = self.__dict__.setdefault("_warned_ignored", set())
        new = [name for name in names if name not in warned]
        if new:
            warned.update(new)
            logger.warning(
                f"{', '.join(new)} ignored: {self.__class__.__name__} runs a deterministic network in one pass, so it "
                "has no steps, samples or noise (the output is the same cube and `uncertainty` is None)."
            )

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        image: PipelineImageInput,
        num_inference_steps: int | None = None,
        num_samples: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        rgb_consistency: bool = True,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        input_space: str | None = None,
        callback_on_tile_end: Callable[[DiffusionPipeline, int, dict], dict | None] | None = None,
    ) -> HSRPipelineOutput | tuple:
        r"""
        The call function to the pipeline for reconstruction.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The RGB to reconstruct, any height and width: a PIL image (a photo: sRGB-encoded), a numpy `(H, W, 3)`
                array (`uint8`, `uint16` or float in [0, 1]) or a torch `(N, 3, H, W)` tensor in [0, 1] (linear RGB in
                the camera space of the pipeline's `response`, what the model was trained on), or a list of
                same-sized images. `input_space` overrides the meaning.
            num_inference_steps (`int`, *optional*):
                Ignored, with a warning: one forward pass has no steps. Accepted, as are `num_samples` and
                `generator`, so that the call written for [`HSRDiffusionPipeline`] runs unchanged on any model that
                `HSRPipeline.from_pretrained` returns (`pipe.is_sampler` tells them apart).
            num_samples (`int`, *optional*, defaults to 1):
                Ignored beyond checking it, with a warning when above 1: every sample of a deterministic network is
                the same cube, so `cubes` holds it once per image and `uncertainty` is `None`.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Ignored, with a warning: nothing is random.
            rgb_consistency (`bool`, *optional*, defaults to `True`):
                Projects the output onto the cubes in [0, 1] that render to the input RGB, so that it reproduces the
                input within quantisation (see [`~HSRImageProcessor.project_and_clip`]).
            tile_size (`int`, *optional*, defaults to the pipeline's `default_tile_size`):
                Processes the image in overlapping tiles of this size, blended linearly across `tile_overlap` pixels;
                memory then depends on the tile, not the image.
            tile_overlap (`int`, *optional*, defaults to the pipeline's `default_tile_overlap`):
                Overlap between tiles in pixels.
            output_type (`str`, *optional*, defaults to `"np"`):
                `"np"` for `(N, H, W, bands)` numpy arrays or `"pt"` for `(N, bands, H, W)` tensors.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`HSRPipelineOutput`] instead of a tuple.
            input_space (`str`, *optional*):
                `"srgb"`: the image is an sRGB-encoded photo, converted to the model's linear camera RGB with
                [`~hsr_diffusers.spectral.srgb_to_camera_rgb`] for the pipeline's `response`; `"linear"`: the image
                already is linear camera RGB. Defaults to `"srgb"` for PIL images and `"linear"` for arrays and tensors.
            callback_on_tile_end (`Callable`, *optional*):
                Called after every group of tiles as `callback_on_tile_end(pipe, tiles_done, callback_kwargs)`, with
                `callback_kwargs` holding `num_tiles`, `top` and the image rows `top`, `top + 1`, ... that no later
                tile changes: `cubes`, in the layout of `output_type` (`(N, rows, W, bands)` for `"np"`), possibly with
                no rows, and `uncertainty` (`None`). When it returns `{"cubes": None}` the pipeline keeps nothing, so
                that memory holds a strip of tiles instead of the cube, and returns `None` as `cubes`.

        Examples:

        Returns:
            [`HSRPipelineOutput`] or `tuple`: the cubes, and `None` as uncertainty.
        """
        # 1. Check inputs
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}.")
        ignored = {
            "num_inference_steps": num_inference_steps is not None,
            "num_samples": num_samples > 1,
            "generator": generator is not None,
        }
        self._warn_ignored([name for name, given in ignored.items() if given])
        tile_size = self.config.default_tile_size if tile_size is None else tile_size
        tile_overlap = self.config.default_tile_overlap if tile_overlap is None else tile_overlap
        self.check_inputs(output_type, tile_size, tile_overlap)

        # 2. Preprocess to linear camera RGB [N, 3, H, W] in [0, 1]
        rgb = self.image_processor.preprocess(image, input_space=input_space)
        batch, _, height, width = rgb.shape
        device, processor = self._execution_device, self.image_processor

        # 3. Run the network tile group by tile group (one tile when `tile_size` is None; small tiles several per
        #    call), and blend; rows that no later tile covers are final, and are projected then: the projection is per
        #    pixel, so projecting each pixel once, after blending, costs less than projecting every overlapping tile
        tiler = Tiler(
            processor, height, width, tile_size, tile_overlap, self.downsample_factor, batch, self.TILE_BATCH_PIXELS
        )
        kept, tiles_done = [], 0
        with self.progress_bar(total=len(tiler)) as progress_bar:
            for group in tiler.groups():
                rgb_tiles = tiler.crop(rgb, group).to(device)  # [K * N, 3, h, w]
                padded = processor.pad_to_multiple(rgb_tiles, self.downsample_factor)
                cubes = processor.denormalize(self.predict(padded))[..., : tiler.tile_height, : tiler.tile_width]
                top, rows = tiler.blend(group, cubes if rgb_consistency else cubes.clamp(0.0, 1.0))  # [N, bands, r, W]
                if rgb_consistency and rows.shape[2]:
                    rgb_rows = rgb[..., top : top + rows.shape[2], :].to(device)  # [N, 3, r, W]
                    rows = processor.project_and_clip(rows.to(device), rgb_rows).cpu()
                rows = {"cubes": rows.permute(0, 2, 3, 1).numpy() if output_type == "np" else rows}
                tiles_done += len(group.tiles)
                if callback_on_tile_end is not None:
                    callback_kwargs = {"num_tiles": len(tiler), "top": top, **rows, "uncertainty": None}
                    rows.update(callback_on_tile_end(self, tiles_done, callback_kwargs) or {})
                kept.append(rows["cubes"])
                progress_bar.update(len(group.tiles))

        # 4. Post-process: the rows into cubes
        cubes = concatenate_rows(kept)
        self.maybe_free_model_hooks()

        if not return_dict:
            return (cubes, None)
        return HSRPipelineOutput(cubes=cubes, uncertainty=None)
