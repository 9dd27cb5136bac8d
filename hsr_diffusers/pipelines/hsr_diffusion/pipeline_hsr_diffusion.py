import inspect

import torch
from diffusers import DiffusionPipeline, UNet2DModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import replace_example_docstring

from hsr_diffusers.image_processor import HSRImageProcessor, PipelineImageInput
from hsr_diffusers.models.root_polynomial import RootPolynomialRegression
from hsr_diffusers.pipelines.pipeline_output import HSRPipelineOutput
from hsr_diffusers.spectral import DEFAULT_RESPONSE, WAVELENGTHS


EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import PIL.Image
        >>> from hsr_diffusers import HSRPipeline

        >>> pipe = HSRPipeline.from_pretrained("hsr-diffusers/ddpm-cave")
        >>> output = pipe(PIL.Image.open("photo.png").convert("RGB"), num_inference_steps=10, num_samples=4)
        >>> output.cubes.shape, output.uncertainty.shape  # (1, H, W, 31) each
        ```
"""

NOISE_BLOCK = 64


def position_noise(
    seed: int, sample: int, top: int, left: int, height: int, width: int, channels: int
) -> torch.Tensor:
    """
    Gaussian noise `[channels, height, width]` for the image region starting at (`top`, `left`), as a fixed function of
    the pixel position: the image plane is cut into `NOISE_BLOCK`-sized blocks, each drawn from its own seeded generator.
    Overlapping tiles therefore see the same noise on the pixels they share, and a tiled run equals an untiled one when
    the image fits one tile.
    """
    noise = torch.empty(channels, height, width)
    for block_y in range(top // NOISE_BLOCK, (top + height - 1) // NOISE_BLOCK + 1):
        for block_x in range(left // NOISE_BLOCK, (left + width - 1) // NOISE_BLOCK + 1):
            block_seed = (seed * 1_000_003 + sample * 10_007 + block_y * 101 + block_x) % (2**63)
            block = torch.randn(
                channels, NOISE_BLOCK, NOISE_BLOCK, generator=torch.Generator().manual_seed(block_seed)
            )
            y0, x0 = block_y * NOISE_BLOCK, block_x * NOISE_BLOCK
            ys, ye = max(top, y0), min(top + height, y0 + NOISE_BLOCK)
            xs, xe = max(left, x0), min(left + width, x0 + NOISE_BLOCK)
            noise[:, ys - top : ye - top, xs - left : xe - left] = block[:, ys - y0 : ye - y0, xs - x0 : xe - x0]
    return noise


class HSRDiffusionPipeline(DiffusionPipeline):
    r"""
    Conditional denoising diffusion for spectral reconstruction: a `UNet2DModel` sees the RGB image concatenated
    channel-wise with the noisy cube and denoises it step by step (the conditional DDPM of the method).

    With an `estimator` (residual diffusion, the default of the training script), a deterministic estimate of the cube
    from the RGB is computed first, given to the UNet as extra conditioning channels, and the diffusion samples only
    the residual `cube - estimate`, scaled by `residual_scale`. Every sample then starts from a good answer and the
    network spends its capacity on what the camera cannot see.

    This model inherits from [`DiffusionPipeline`]. Check the superclass documentation for the generic methods
    implemented for all pipelines (downloading, saving, running on a particular device, etc.).

    Args:
        unet ([`UNet2DModel`]):
            Denoiser. `in_channels` is 3 RGB channels, followed by `bands` estimate channels when an estimator is set,
            followed by `bands` noisy spectral channels (condition first, as in Marigold and pix2pix);
            `out_channels = bands`.
        scheduler ([`SchedulerMixin`]):
            Any diffusers noise scheduler; trained with [`DDPMScheduler`]. Swap with
            `DDIMScheduler.from_config(pipe.scheduler.config)` and the like.
        estimator ([`RootPolynomialRegression`] or any HSR feed-forward model, *optional*):
            Deterministic estimator for residual diffusion; `None` gives the plain conditional DDPM of the method.
        wavelengths (`list[int]`, *optional*, defaults to 400..700 step 10):
            Band centres in nm, stored in `model_index.json`.
        response (`str` or `list[list[float]]`, *optional*, defaults to `"cie1964_ntire2020"`):
            Camera response the model was trained with; defines the RGB-consistency projection.
        residual_scale (`float`, *optional*, defaults to 1.0):
            Factor applied to the residual (in [-1, 1] units) before diffusion, so that it has roughly unit spread.
        project_estimate (`bool`, *optional*, defaults to `True`):
            Whether the estimate is made RGB-consistent before use (must match training).
        default_tile_size (`int`, *optional*):
            Tile size used when `__call__` gets no `tile_size`. Attention blocks cost the square of the number of
            pixels they see, so a UNet trained on small patches runs far faster on tiles a few times the patch size
            than on a whole photo (the training script sets four times the training resolution). `None`: no tiling.
        default_num_inference_steps (`int`, *optional*, defaults to 10):
            Sampling steps used when `__call__` gets no `num_inference_steps`.
        default_tile_overlap (`int`, *optional*, defaults to 32):
            Tile overlap used when `__call__` gets no `tile_overlap`.
    """

    model_cpu_offload_seq = "unet"
    _optional_components = ["estimator"]
    # Small tiles are stacked into one UNet call up to this many pixels (those of one 256x256 tile).
    TILE_BATCH_PIXELS = 256 * 256

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: KarrasDiffusionSchedulers,
        estimator: RootPolynomialRegression | None = None,
        wavelengths: list[int] | None = None,
        response: str | list = DEFAULT_RESPONSE,
        residual_scale: float = 1.0,
        project_estimate: bool = True,
        default_tile_size: int | None = None,
        default_num_inference_steps: int = 10,
        default_tile_overlap: int = 32,
    ):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, estimator=estimator)
        wavelengths = list(WAVELENGTHS if wavelengths is None else wavelengths)
        self.register_to_config(
            wavelengths=wavelengths,
            response=response,
            residual_scale=residual_scale,
            project_estimate=project_estimate,
            default_tile_size=default_tile_size,
            default_num_inference_steps=default_num_inference_steps,
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
            expected = 3 + self.num_bands * (2 if estimator is not None else 1)
            if unet.config.in_channels != expected:
                raise ValueError(
                    f"unet.config.in_channels must be 3 (RGB) + {self.num_bands} (noisy cube)"
                    f"{f' + {self.num_bands} (estimate)' if estimator is not None else ''} = {expected}, "
                    f"got {unet.config.in_channels}."
                )
        self.image_processor = HSRImageProcessor(wavelengths, response)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

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

    def prepare_estimate(self, rgb: torch.Tensor) -> torch.Tensor:
        """
        The estimator's cube `[N, bands, H, W]` in [0, 1] for linear RGB `[N, 3, H, W]` in [0, 1], made RGB-consistent
        when `project_estimate` is set. The training script calls this too, so that training and sampling condition on
        the same estimate.
        """
        estimate = self.image_processor.denormalize(self.estimator(self.image_processor.normalize(rgb)).sample.float())
        if self.config.project_estimate:
            return self.image_processor.project_and_clip(estimate, rgb)
        return estimate.clamp(0.0, 1.0)

    def _to_clean(self, model_output: torch.Tensor, sample: torch.Tensor, timestep) -> torch.Tensor | None:
        """The clean residual that the scheduler will infer from `model_output`, or None if it cannot be known."""
        prediction_type = self.scheduler.config.prediction_type
        if prediction_type == "sample":
            return model_output
        alphas_cumprod = getattr(self.scheduler, "alphas_cumprod", None)
        if alphas_cumprod is None:
            return None
        alpha = alphas_cumprod.to(sample.device)[timestep].float()
        if prediction_type == "epsilon":
            return (sample - (1 - alpha).sqrt() * model_output) / alpha.sqrt()
        return alpha.sqrt() * sample - (1 - alpha).sqrt() * model_output  # v_prediction

    def _from_clean(self, clean: torch.Tensor, model_output: torch.Tensor, sample: torch.Tensor, timestep):
        """Inverse of `_to_clean`: the model output that makes the scheduler infer `clean`."""
        prediction_type = self.scheduler.config.prediction_type
        if prediction_type == "sample":
            return clean
        alpha = self.scheduler.alphas_cumprod.to(sample.device)[timestep].float()
        epsilon = (sample - alpha.sqrt() * clean) / (1 - alpha).sqrt()
        if prediction_type == "epsilon":
            return epsilon
        return alpha.sqrt() * epsilon - (1 - alpha).sqrt() * clean

    def _denoise_tile(
        self,
        rgb: torch.Tensor,
        noise: torch.Tensor,
        num_inference_steps: int,
        num_samples: int,
        rgb_consistency: bool,
        step_generator: torch.Generator,
        progress_bar,
        tiles_per_step: int = 1,
    ) -> torch.Tensor:
        """Samples cubes `[N * num_samples, bands, h, w]` in [0, 1] for same-sized tiles `rgb` `[N, 3, h, w]` in [0, 1]
        (one tile of several images, or several tiles stacked along N)."""
        device, dtype = self._execution_device, self.unet.dtype
        height, width = rgb.shape[-2:]
        processor = self.image_processor
        scale = self.config.residual_scale
        # [N * S, 3, h', w'], padded to the UNet's multiple; samples of one image are adjacent.
        rgb = processor.pad_to_multiple(rgb.to(device), self.downsample_factor).repeat_interleave(num_samples, dim=0)
        condition = [processor.normalize(rgb)]
        base = torch.zeros_like(noise, device=device)
        if self.estimator is not None:
            base = processor.normalize(self.prepare_estimate(rgb))  # [N * S, bands, h', w']
            condition.append(base)
        condition = torch.cat(condition, dim=1).to(dtype)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        sample = noise.to(device) * self.scheduler.init_noise_sigma
        accepts_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        for t in self.scheduler.timesteps:
            model_input = torch.cat([condition, self.scheduler.scale_model_input(sample, t).to(dtype)], dim=1)
            model_output = self.unet(model_input, t).sample.float()  # [N * S, bands, h', w']
            if rgb_consistency:
                # Null-space step: make the predicted clean cube reproduce the RGB, keep what the camera cannot see.
                clean = self._to_clean(model_output, sample, t)
                if clean is not None:
                    cube = processor.denormalize(base + clean / scale)
                    projected = processor.normalize(processor.project(cube, rgb).clamp(0.0, 1.0))
                    model_output = self._from_clean((projected - base) * scale, model_output, sample, t)
            extra = {"generator": step_generator} if accepts_generator else {}
            sample = self.scheduler.step(model_output, t, sample, **extra).prev_sample
            progress_bar.update(tiles_per_step)

        cube = processor.denormalize(base + sample.float() / scale)[..., :height, :width]
        if rgb_consistency:
            return processor.project_and_clip(cube, rgb[..., :height, :width])
        return cube.clamp(0.0, 1.0)

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        image: PipelineImageInput,
        num_inference_steps: int | None = None,
        num_samples: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        rgb_consistency: bool = True,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> HSRPipelineOutput | tuple:
        r"""
        The call function to the pipeline for reconstruction.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                Linear RGB input in the camera space the model was trained for (see `response`): a PIL image, a numpy
                `(H, W, 3)` array (`uint8`, `uint16` or float in [0, 1]), a torch `(N, 3, H, W)` tensor in [0, 1], or a
                list of same-sized images. Any height and width.
            num_inference_steps (`int`, *optional*, defaults to the pipeline's `default_num_inference_steps`):
                Number of denoising steps of the scheduler. The bundled model's default was chosen on its training
                scenes by `benchmarks/ddpm_defaults.py`.
            num_samples (`int`, *optional*, defaults to 1):
                Samples per image, drawn in one batched pass; `cubes` is their mean and `uncertainty` their standard
                deviation.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Makes sampling deterministic; one per image when a list.
            latents (`torch.Tensor`, *optional*):
                Initial noise `[N * num_samples, bands, H', W']` with `H'`, `W'` at least the image size padded to the
                UNet's multiple; replaces the generated noise.
            rgb_consistency (`bool`, *optional*, defaults to `True`):
                Projects the predicted clean cube onto the cubes that render to the input RGB at every step and once at
                the end, so that the output reproduces the input RGB within quantisation.
            tile_size (`int`, *optional*, defaults to the pipeline's `default_tile_size`):
                Processes the image in overlapping tiles of this size (a multiple of the UNet's downsampling factor),
                blended linearly across `tile_overlap` pixels; memory then depends on the tile, not the image. A
                size at least as large as the image runs it in one piece.
            tile_overlap (`int`, *optional*, defaults to the pipeline's `default_tile_overlap`):
                Overlap between tiles in pixels.
            output_type (`str`, *optional*, defaults to `"np"`):
                `"np"` for `(N, H, W, bands)` numpy arrays or `"pt"` for `(N, bands, H, W)` tensors.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`HSRPipelineOutput`] instead of a tuple.

        Examples:

        Returns:
            [`HSRPipelineOutput`] or `tuple`: the cubes and the uncertainty (`None` for one sample).
        """
        # 1. Check inputs and convert the RGB to [N, 3, H, W] in [0, 1]
        config = self.config
        tile_size = config.default_tile_size if tile_size is None else tile_size
        tile_overlap = config.default_tile_overlap if tile_overlap is None else tile_overlap
        if num_inference_steps is None:
            num_inference_steps = config.default_num_inference_steps
        self.check_inputs(output_type, tile_size, tile_overlap)
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}.")
        rgb = self.image_processor.preprocess(image)
        batch, _, height, width = rgb.shape
        multiple = self.downsample_factor
        if latents is not None and (
            latents.shape[:2] != (batch * num_samples, self.num_bands)
            or latents.shape[2] < height + (-height % multiple)
            or latents.shape[3] < width + (-width % multiple)
        ):
            raise ValueError(
                f"latents must be ({batch * num_samples}, {self.num_bands}, >= padded H, >= padded W), "
                f"got {tuple(latents.shape)}."
            )

        # 2. One noise seed per image; the noise itself is a function of pixel position (see `position_noise`)
        generators = generator if isinstance(generator, list) else [generator] * batch
        if len(generators) != batch:
            raise ValueError(f"Got {len(generators)} generators for {batch} images.")
        seeds = [int(torch.randint(0, 2**62, (1,), generator=g).item()) for g in generators]
        step_generator = torch.Generator().manual_seed(seeds[0])

        # 3. Tile the image (one tile when `tile_size` is None) and sample the tiles, several per UNet call when they
        #    are small: a call on a 64-pixel tile is dominated by per-layer overhead, so stacking tiles up to the pixels
        #    of one 256-pixel tile is faster per tile with no more memory than such a tile.
        cubes = torch.zeros(batch * num_samples, self.num_bands, height, width)
        weights = torch.zeros(1, 1, height, width)
        tiles = list(self.image_processor.tiles(height, width, tile_size, tile_overlap))
        tile_h, tile_w = tiles[0][2], tiles[0][3]  # every tile has the same size
        padded_h, padded_w = tile_h + (-tile_h % multiple), tile_w + (-tile_w % multiple)
        group = max(1, self.TILE_BATCH_PIXELS // (padded_h * padded_w * batch * num_samples))
        with self.progress_bar(total=len(tiles) * num_inference_steps) as progress_bar:
            for first in range(0, len(tiles), group):
                chunk = tiles[first : first + group]
                if latents is not None:
                    noise = [latents[..., top : top + padded_h, left : left + padded_w] for top, left, *_ in chunk]
                else:
                    noise = [
                        position_noise(seed, s, top, left, padded_h, padded_w, self.num_bands)
                        for top, left, *_ in chunk
                        for seed in seeds
                        for s in range(num_samples)
                    ]  # tile-major, then image, then sample: the order of `rgb` below after repeat_interleave
                sampled = self._denoise_tile(
                    torch.cat([rgb[..., top : top + tile_h, left : left + tile_w] for top, left, *_ in chunk]),
                    torch.cat(noise) if latents is not None else torch.stack(noise),
                    num_inference_steps,
                    num_samples,
                    rgb_consistency,
                    step_generator,
                    progress_bar,
                    tiles_per_step=len(chunk),
                )  # [K * N * S, bands, h, w]
                for (top, left, _, _, weight), tile in zip(chunk, sampled.split(batch * num_samples)):
                    cubes[..., top : top + tile_h, left : left + tile_w] += tile.cpu().float() * weight
                    weights[..., top : top + tile_h, left : left + tile_w] += weight
        cubes /= weights  # [N * S, bands, H, W]

        # 4. Mean and spread over samples
        cubes = cubes.view(batch, num_samples, self.num_bands, height, width)
        uncertainty = cubes.std(dim=1, unbiased=num_samples > 1) if num_samples > 1 else None
        cubes = cubes.mean(dim=1)

        # 5. Post-process
        if output_type == "np":
            cubes = cubes.permute(0, 2, 3, 1).numpy()
            uncertainty = None if uncertainty is None else uncertainty.permute(0, 2, 3, 1).numpy()
        self.maybe_free_model_hooks()

        if not return_dict:
            return (cubes, uncertainty)
        return HSRPipelineOutput(cubes=cubes, uncertainty=uncertainty)
