import inspect
from collections.abc import Callable

import torch
from diffusers import DiffusionPipeline, UNet2DModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import replace_example_docstring

from hsr_diffusers.image_processor import HSRImageProcessor, PipelineImageInput
from hsr_diffusers.models.root_polynomial import RootPolynomialRegression
from hsr_diffusers.pipelines.pipeline_output import HSRPipelineOutput
from hsr_diffusers.pipelines.tiling import NOISE_BLOCK, TILE_BATCH_PIXELS, Tiler, concatenate_rows, position_noise
from hsr_diffusers.schedulers import check_scheduler, model_output_for_clean_sample, predict_clean_sample
from hsr_diffusers.spectral import DEFAULT_RESPONSE, WAVELENGTHS


__all__ = ["HSRDiffusionPipeline", "NOISE_BLOCK", "position_noise"]  # the last two moved to `pipelines.tiling`

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import PIL.Image
        >>> import torch
        >>> from hsr_diffusers import HSRPipeline

        >>> pipe = HSRPipeline.from_pretrained("hsr-diffusers/ddpm-cave")
        >>> photo = PIL.Image.open("photo.png")  # sRGB: converted to the model's camera RGB by the pipeline
        >>> output = pipe(photo, num_samples=4, generator=torch.Generator().manual_seed(0))
        >>> output.cubes.shape, output.uncertainty.shape  # (1, H, W, 31) each: the mean and the spread of the samples
        ```
"""


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
            A diffusers noise scheduler of [`KarrasDiffusionSchedulers`]; trained with [`DDPMScheduler`]. Swap with
            `DDIMScheduler.from_config(pipe.scheduler.config)` and the like. The per-step RGB-consistency projection
            needs the scheduler's clean-sample prediction, which [`~hsr_diffusers.schedulers.predict_clean_sample`] knows
            for DDPM, DDIM, PNDM, Euler, Euler ancestral, Heun, LMS, DPM-Solver (multistep and singlestep), DEIS and
            UniPC, with or without Karras sigmas; KDPM2 and DPM-Solver-SDE run only with `rgb_consistency=False`, and
            [`EDMEulerScheduler`] (EDM noise conditioning) is refused.
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
        uncertainty_scale (`list[float]`, *optional*):
            One factor per band multiplied into `uncertainty` (the standard deviation over samples), so that it
            means what it says: `train_scripts/calibrate_uncertainty.py` fits it on the training scenes (per band, the
            factor that puts its `--coverage` of the true values within ±2σ) and stores it in `model_index.json` with
            `pipe.register_to_config(uncertainty_scale=[...])`, so `from_pretrained` restores it. `None` leaves the
            raw spread (a factor of 1).
    """

    model_cpu_offload_seq = "unet"
    _optional_components = ["estimator"]
    # Small tiles are stacked into one UNet call up to this many pixels (see `pipelines.tiling`).
    TILE_BATCH_PIXELS = TILE_BATCH_PIXELS

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
        uncertainty_scale: list[float] | None = None,
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
            uncertainty_scale=uncertainty_scale,
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
        self._uncertainty_scale()
        self.image_processor = HSRImageProcessor(wavelengths, response)

    @property
    def is_sampler(self) -> bool:
        """`True`: the pipeline draws samples (`num_inference_steps`, `num_samples` and `generator` apply, and several
        samples give an `uncertainty`)."""
        return True

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

    def _uncertainty_scale(self) -> torch.Tensor | None:
        """The per-band `uncertainty_scale` of the config as `[1, bands, 1, 1]`, checked against the band count; the
        calibration script sets it after construction, so `__call__` checks it again."""
        scale = self.config.get("uncertainty_scale")
        if scale is None:
            return None
        if len(scale) != self.num_bands:
            raise ValueError(f"uncertainty_scale must have one factor per band ({self.num_bands}), got {len(scale)}.")
        return torch.tensor(scale, dtype=torch.float32).view(1, -1, 1, 1)

    def check_scheduler(self, rgb_consistency: bool):
        """Raises a `ValueError` for a scheduler this pipeline cannot sample with (see
        [`~hsr_diffusers.schedulers.check_scheduler`])."""
        check_scheduler(self.scheduler, needs_clean_sample=rgb_consistency)

    def predict_clean_sample(
        self, model_output: torch.Tensor, sample: torch.Tensor, timestep: int | float | torch.Tensor
    ) -> torch.Tensor:
        """The clean sample the pipeline's scheduler infers from `model_output` (see
        [`~hsr_diffusers.schedulers.predict_clean_sample`]); the training scripts' clean-sample losses use it."""
        return predict_clean_sample(self.scheduler, model_output, sample, timestep)

    def prepare_estimate(self, rgb: torch.Tensor) -> torch.Tensor:
        """
        The estimator's cube `[N, bands, H, W]` in [0, 1] for linear RGB `[N, 3, H, W]` in [0, 1], made RGB-consistent
        by the closed-form projection when `project_estimate` is set, then clipped (see
        [`~HSRImageProcessor.estimate`]). The training script calls this too, so that training and sampling condition on
        the same estimate.
        """
        return self.image_processor.estimate(self.estimator, rgb, project=self.config.project_estimate)

    def _denoise_tiles(
        self,
        rgb: torch.Tensor,
        noise: torch.Tensor,
        num_inference_steps: int,
        num_samples: int,
        rgb_consistency: bool,
        step_generators: list[torch.Generator],
        progress_bar,
        tiles_per_step: int,
    ) -> torch.Tensor:
        """Samples cubes `[K * N * S, bands, h, w]` in [0, 1] for same-sized tiles `rgb` `[K * N, 3, h, w]` in [0, 1]
        from `noise` `[K * N * S, bands, h', w']` (`h'`, `w'`: the tile size padded to the UNet's multiple)."""
        device, dtype = self._execution_device, self.unet.dtype
        height, width = rgb.shape[-2:]
        processor, scale = self.image_processor, self.config.residual_scale
        # Condition: the RGB [K * N * S, 3, h', w'] (samples of one tile adjacent), then the estimate when there is an
        # estimator, which the diffusion samples the residual of.
        rgb = processor.pad_to_multiple(rgb.to(device), self.downsample_factor).repeat_interleave(num_samples, dim=0)
        condition = [processor.normalize(rgb)]
        base = torch.zeros_like(noise, device=device)
        if self.estimator is not None:
            base = processor.normalize(self.prepare_estimate(rgb))  # [K * N * S, bands, h', w']
            condition.append(base)
        condition = torch.cat(condition, dim=1).to(dtype)

        # Set timesteps; the noise at the scheduler's initial scale is the first sample.
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        sample = noise.to(device) * self.scheduler.init_noise_sigma
        # The noise some schedulers add at every step comes from each image's own generator.
        accepts_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        extra_step_kwargs = {"generator": step_generators} if accepts_generator else {}
        # Denoise: condition first, then the noisy residual [K * N * S, 3 (+ bands) + bands, h', w'].
        for t in self.scheduler.timesteps:
            model_input = torch.cat([condition, self.scheduler.scale_model_input(sample, t).to(dtype)], dim=1)
            model_output = self.unet(model_input, t).sample.float()  # [K * N * S, bands, h', w']
            if rgb_consistency:
                # Null-space step: make the predicted clean cube reproduce the RGB, keep what the camera cannot see.
                clean = predict_clean_sample(self.scheduler, model_output, sample, t)
                cube = processor.denormalize(base + clean / scale)
                projected = processor.normalize(processor.project(cube, rgb).clamp(0.0, 1.0))
                model_output = model_output_for_clean_sample(self.scheduler, (projected - base) * scale, sample, t)
            sample = self.scheduler.step(model_output, t, sample, **extra_step_kwargs).prev_sample
            progress_bar.update(tiles_per_step)

        # Un-pad, and project the final cube too: the scheduler's last step need not keep the projection exactly.
        cube = processor.denormalize(base + sample.float() / scale)[..., :height, :width]
        if rgb_consistency:
            return processor.project_and_clip(cube, rgb[..., :height, :width])
        return cube.clamp(0.0, 1.0)

    def _mean_and_spread(
        self, rows: torch.Tensor, num_samples: int, uncertainty_scale: torch.Tensor | None
    ) -> dict[str, torch.Tensor | None]:
        """`cubes`, the mean over samples, and `uncertainty`, their standard deviation times `uncertainty_scale`
        (`None` for one sample), each `[N, bands, r, W]`, of rows `[N * S, bands, r, W]`."""
        rows = rows.view(len(rows) // num_samples, num_samples, *rows.shape[1:])  # [N, S, bands, r, W]
        spread = None
        if num_samples > 1:  # (a group that finishes no rows has no spread to compute)
            spread = rows.std(dim=1) if rows.numel() else rows[:, 0]
        if spread is not None and uncertainty_scale is not None:
            spread = spread * uncertainty_scale  # the calibration fitted on training scenes
        return {"cubes": rows.mean(dim=1), "uncertainty": spread}

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
            num_inference_steps (`int`, *optional*, defaults to the pipeline's `default_num_inference_steps`):
                Number of denoising steps of the scheduler. The bundled model's default was chosen on its training
                scenes by `benchmarks/ddpm_defaults.py`.
            num_samples (`int`, *optional*, defaults to 1):
                Samples per image, drawn in one batched pass; `cubes` is their mean and `uncertainty` their standard
                deviation, multiplied by the pipeline's `uncertainty_scale` when it is set.
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
            input_space (`str`, *optional*):
                `"srgb"`: the image is an sRGB-encoded photo, converted to the model's linear camera RGB with
                [`~hsr_diffusers.spectral.srgb_to_camera_rgb`] for the pipeline's `response`; `"linear"`: the image
                already is linear camera RGB. Defaults to `"srgb"` for PIL images and `"linear"` for arrays and tensors.
            callback_on_tile_end (`Callable`, *optional*):
                Called after every group of tiles as `callback_on_tile_end(pipe, tiles_done, callback_kwargs)`, with
                `callback_kwargs` holding `num_tiles`, `top` and the image rows `top`, `top + 1`, ... that no later
                tile changes: `cubes` and `uncertainty` (`None` for one sample), in the layout of `output_type` (`(N,
                rows, W, bands)` for `"np"`), possibly with no rows. A writer can store them as they come; when it
                returns `{"cubes": None, "uncertainty": None}` the pipeline keeps nothing, so that memory holds a strip
                of tiles instead of the cube, and returns `None` for both.

        Examples:

        Returns:
            [`HSRPipelineOutput`] or `tuple`: the cubes and the uncertainty (`None` for one sample).
        """
        # 1. Check inputs
        config = self.config
        tile_size = config.default_tile_size if tile_size is None else tile_size
        tile_overlap = config.default_tile_overlap if tile_overlap is None else tile_overlap
        if num_inference_steps is None:
            num_inference_steps = config.default_num_inference_steps
        self.check_inputs(output_type, tile_size, tile_overlap)
        self.check_scheduler(rgb_consistency)
        uncertainty_scale = self._uncertainty_scale()
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}.")

        # 2. Preprocess to linear camera RGB [N, 3, H, W] in [0, 1]; each tile is padded to the UNet's multiple later
        rgb = self.image_processor.preprocess(image, input_space=input_space)
        batch, _, height, width = rgb.shape
        multiple = self.downsample_factor

        # 3. Prepare the noise: given `latents`, or one seed per image, the noise itself being a function of pixel
        #    position (see `position_noise`)
        if latents is not None and (
            latents.shape[:2] != (batch * num_samples, self.num_bands)
            or latents.shape[2] < height + (-height % multiple)
            or latents.shape[3] < width + (-width % multiple)
        ):
            raise ValueError(
                f"latents must be ({batch * num_samples}, {self.num_bands}, >= padded H, >= padded W), "
                f"got {tuple(latents.shape)}."
            )
        generators = generator if isinstance(generator, list) else [generator] * batch
        if len(generators) != batch:
            raise ValueError(f"Got {len(generators)} generators for {batch} images.")
        seeds = [int(torch.randint(0, 2**62, (1,), generator=g).item()) for g in generators]
        # The noise some schedulers add at every step comes from each image's own generator, so that the images of a
        # batch stay independent (a list of generators, as in diffusers' `randn_tensor`).
        step_generators = [torch.Generator().manual_seed(seed) for seed in seeds]

        # 4. Denoise tile group by tile group (one tile when `tile_size` is None; small tiles several per UNet call),
        #    and blend; rows that no later tile covers are final
        copies = batch * num_samples
        tiler = Tiler(
            self.image_processor, height, width, tile_size, tile_overlap, multiple, copies, self.TILE_BATCH_PIXELS
        )
        kept, tiles_done = {"cubes": [], "uncertainty": []}, 0
        with self.progress_bar(total=len(tiler) * num_inference_steps) as progress_bar:
            for group in tiler.groups():
                if latents is not None:
                    noise = tiler.crop(latents, group, padded=True)
                else:
                    noise = tiler.position_noise(group, seeds, num_samples, self.num_bands)
                sampled = self._denoise_tiles(
                    tiler.crop(rgb, group),
                    noise,
                    num_inference_steps,
                    num_samples,
                    rgb_consistency,
                    [step_generators[i] for _ in group.tiles for i in range(batch) for _ in range(num_samples)],
                    progress_bar,
                    tiles_per_step=len(group.tiles),
                )  # [K * N * S, bands, h, w]
                top, rows = tiler.blend(group, sampled)  # [N * S, bands, r, W]

                # 5. Mean and spread over samples, of the finished rows
                rows = self._mean_and_spread(rows, num_samples, uncertainty_scale)
                if output_type == "np":
                    rows = {k: None if v is None else v.permute(0, 2, 3, 1).numpy() for k, v in rows.items()}
                tiles_done += len(group.tiles)
                if callback_on_tile_end is not None:
                    callback_kwargs = {"num_tiles": len(tiler), "top": top, **rows}
                    rows.update(callback_on_tile_end(self, tiles_done, callback_kwargs) or {})
                for name, value in rows.items():
                    kept[name].append(value)

        # 6. Post-process: the rows into cubes
        cubes, uncertainty = concatenate_rows(kept["cubes"]), concatenate_rows(kept["uncertainty"])

        # 7. Offload all models
        self.maybe_free_model_hooks()

        # 8. Return
        if not return_dict:
            return (cubes, uncertainty)
        return HSRPipelineOutput(cubes=cubes, uncertainty=uncertainty)
