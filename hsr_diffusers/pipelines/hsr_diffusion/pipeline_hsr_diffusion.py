import inspect

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EDMEulerScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import replace_example_docstring

from hsr_diffusers.image_processor import HSRImageProcessor, PipelineImageInput
from hsr_diffusers.models.root_polynomial import RootPolynomialRegression
from hsr_diffusers.pipelines.pipeline_output import HSRPipelineOutput
from hsr_diffusers.spectral import DEFAULT_RESPONSE, WAVELENGTHS


EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import numpy as np
        >>> import PIL.Image
        >>> import torch
        >>> from hsr_diffusers import HSRPipeline
        >>> from hsr_diffusers.spectral import srgb_to_camera_rgb

        >>> pipe = HSRPipeline.from_pretrained("hsr-diffusers/ddpm-cave")
        >>> # The model takes linear RGB in the camera space it was trained for; photos are sRGB-encoded.
        >>> photo = np.asarray(PIL.Image.open("photo.png").convert("RGB")) / 255.0
        >>> rgb = srgb_to_camera_rgb(photo, pipe.config.response, pipe.config.wavelengths)
        >>> output = pipe(rgb, num_samples=4, generator=torch.Generator().manual_seed(0))
        >>> output.cubes.shape, output.uncertainty.shape  # (1, H, W, 31) each: the mean and the spread of the samples
        ```
"""

NOISE_BLOCK = 64

# The schedulers whose clean-sample prediction `HSRDiffusionPipeline.predict_clean_sample` knows, by how their sample is
# made from the clean sample and unit noise: sqrt(alphas_cumprod[t]) * clean + sqrt(1 - alphas_cumprod[t]) * noise ...
_TIMESTEP_SCHEDULERS = (DDPMScheduler, DDIMScheduler, PNDMScheduler)
# ... alpha_t * clean + sigma_t * noise, from the sigma of the current step ...
_VARIANCE_PRESERVING_SIGMA_SCHEDULERS = (
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    DEISMultistepScheduler,
    UniPCMultistepScheduler,
)
# ... or clean + sigma * noise, likewise. The KDPM2 and DPM-Solver-SDE schedulers evaluate the model at interpolated
# sigmas in their second stage, which differ between them: they run only without the per-step RGB projection.
_SIGMA_SCHEDULERS = (
    EulerDiscreteScheduler,
    EulerAncestralDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
)
_SUPPORTED_SCHEDULERS = _TIMESTEP_SCHEDULERS + _VARIANCE_PRESERVING_SIGMA_SCHEDULERS + _SIGMA_SCHEDULERS


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
            A diffusers noise scheduler of [`KarrasDiffusionSchedulers`]; trained with [`DDPMScheduler`]. Swap with
            `DDIMScheduler.from_config(pipe.scheduler.config)` and the like. The per-step RGB-consistency projection
            needs the scheduler's clean-sample prediction, which [`~HSRDiffusionPipeline.predict_clean_sample`] knows
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
        """Raises a `ValueError` for a scheduler this pipeline cannot sample with (see `predict_clean_sample`)."""
        if isinstance(self.scheduler, EDMEulerScheduler):
            raise ValueError(
                "EDMEulerScheduler conditions the UNet on EDM noise levels and input scaling, not on the DDPM timesteps "
                "it was trained with; use EulerDiscreteScheduler.from_config(pipe.scheduler.config) instead."
            )
        if rgb_consistency and not isinstance(self.scheduler, _SUPPORTED_SCHEDULERS):
            raise ValueError(
                f"rgb_consistency=True needs the clean sample at every step, which is not known for "
                f"{type(self.scheduler).__name__}; use one of "
                f"{', '.join(cls.__name__ for cls in _SUPPORTED_SCHEDULERS)}, or rgb_consistency=False."
            )
        prediction_type = self.scheduler.config.get("prediction_type")
        if rgb_consistency and prediction_type not in ("epsilon", "sample", "original_sample", "v_prediction"):
            raise ValueError(
                f"rgb_consistency=True needs prediction_type 'epsilon', 'sample' or 'v_prediction', got "
                f"{prediction_type!r}."
            )

    def prepare_estimate(self, rgb: torch.Tensor) -> torch.Tensor:
        """
        The estimator's cube `[N, bands, H, W]` in [0, 1] for linear RGB `[N, 3, H, W]` in [0, 1], made RGB-consistent
        by the closed-form projection when `project_estimate` is set, then clipped. The training script calls this too,
        so that training and sampling condition on the same estimate.
        """
        estimate = self.image_processor.denormalize(self.estimator(self.image_processor.normalize(rgb)).sample.float())
        if self.config.project_estimate:
            # Not the exact [0, 1]-bounded projection: the output gets that one, and the clip of the closed form
            # scores within 1 % of it on the validation scenes at a fraction of the cost
            # (benchmarks/results/projection_accuracy.md).
            estimate = self.image_processor.project(estimate, rgb)
        return estimate.clamp(0.0, 1.0)

    def _noise_level(
        self, sample: torch.Tensor, timestep: int | float | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
        """
        `(alpha_t, sigma_t, input_scale)` of the scheduler at `timestep`, such that the scaled sample the model sees is
        `input_scale * sample = alpha_t * clean + sigma_t * noise`. Raises a `ValueError` for a scheduler outside
        `_SUPPORTED_SCHEDULERS`.
        """
        scheduler = self.scheduler
        if isinstance(scheduler, _TIMESTEP_SCHEDULERS):
            alpha_prod = scheduler.alphas_cumprod.to(sample.device)[timestep].float()
            return alpha_prod.sqrt(), (1 - alpha_prod).sqrt(), 1.0
        if not isinstance(scheduler, _SUPPORTED_SCHEDULERS):
            raise ValueError(
                f"{type(scheduler).__name__} is not supported for predicting the clean sample; use one of "
                f"{', '.join(cls.__name__ for cls in _SUPPORTED_SCHEDULERS)}, or `rgb_consistency=False`."
            )
        if torch.is_tensor(timestep) and timestep.numel() > 1:
            raise ValueError(
                f"Per-sample timesteps need a scheduler that looks its noise level up by timestep "
                f"({', '.join(cls.__name__ for cls in _TIMESTEP_SCHEDULERS)}), got {type(scheduler).__name__}."
            )
        # Sigma schedulers keep the noise level of the current step in `sigmas[step_index]` (with Karras sigmas it is
        # not the one of the rounded timestep). DPM-Solver-type schedulers set `step_index` in their first `step`, not
        # in `scale_model_input`: set it the same way here.
        if scheduler.step_index is None:
            scheduler._init_step_index(timestep)
        sigma = scheduler.sigmas[scheduler.step_index].to(sample.device).float()
        if isinstance(scheduler, _VARIANCE_PRESERVING_SIGMA_SCHEDULERS):
            alpha_t, sigma_t = scheduler._sigma_to_alpha_sigma_t(sigma)
            return alpha_t, sigma_t, 1.0
        # The sample is `clean + sigma * noise`; `scale_model_input` divides it by sqrt(sigma**2 + 1) for the model.
        alpha_t = (sigma**2 + 1) ** -0.5
        return alpha_t, sigma * alpha_t, alpha_t

    def predict_clean_sample(
        self, model_output: torch.Tensor, sample: torch.Tensor, timestep: int | float | torch.Tensor
    ) -> torch.Tensor:
        r"""
        The clean sample (the `pred_original_sample` of diffusers schedulers) that `self.scheduler` infers from the
        UNet's `model_output` for the noisy `sample` at `timestep`, for its `prediction_type` (`"epsilon"`, `"sample"`
        or `"v_prediction"`). Unlike `scheduler.step`, it does not advance the scheduler (it only sets the step index
        that the next `step` would set), so it can be used before a step (the sampler's RGB-consistency projection)
        and with gradients in training.

        Supported schedulers:
            - [`DDPMScheduler`], [`DDIMScheduler`], [`PNDMScheduler`]: the noise level is `alphas_cumprod[timestep]`;
              `timestep` may be a tensor of per-sample timesteps broadcastable to `sample` (`[B, 1, 1, 1]`), as in
              training.
            - [`DPMSolverMultistepScheduler`], [`DPMSolverSinglestepScheduler`], [`DEISMultistepScheduler`],
              [`UniPCMultistepScheduler`]: `sample = alpha_t * clean + sigma_t * noise` at the sigma of the current
              step (Karras sigmas included).
            - [`EulerDiscreteScheduler`], [`EulerAncestralDiscreteScheduler`], [`HeunDiscreteScheduler`],
              [`LMSDiscreteScheduler`]: `sample = clean + sigma * noise` at the sigma of the current step, which the
              model sees divided by `sqrt(sigma**2 + 1)` (`scale_model_input`).

        The sigma schedulers know the sigma of their current step only: call it between `set_timesteps` and the `step`
        for `timestep`, with one timestep. Other schedulers raise a `ValueError`. For the sigma schedulers it relies on
        private diffusers scheduler methods (`_init_step_index`, and `_sigma_to_alpha_sigma_t` for the DPM-Solver,
        DEIS and UniPC family), which is why `diffusers` is pinned below 0.43.

        Args:
            model_output (`torch.Tensor`):
                The UNet's output for `sample` (given to it through `scheduler.scale_model_input`).
            sample (`torch.Tensor`):
                The noisy sample the scheduler steps, `[B, bands, H, W]`.
            timestep (`int`, `float` or `torch.Tensor`):
                The scheduler timestep of `sample`, or per-sample timesteps (see above).

        Returns:
            `torch.Tensor`: the predicted clean sample, shaped like `sample`.
        """
        prediction_type = self.scheduler.config.prediction_type
        if prediction_type in ("sample", "original_sample"):
            return model_output
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"prediction_type must be 'epsilon', 'sample' or 'v_prediction', got {prediction_type!r}."
            )
        alpha_t, sigma_t, input_scale = self._noise_level(sample, timestep)
        if prediction_type == "epsilon":
            return (input_scale * sample - sigma_t * model_output) / alpha_t
        return alpha_t * input_scale * sample - sigma_t * model_output  # v_prediction

    def _model_output_for_clean(
        self, clean: torch.Tensor, sample: torch.Tensor, timestep: int | float | torch.Tensor
    ) -> torch.Tensor:
        """Inverse of `predict_clean_sample`: the model output from which the scheduler infers `clean`."""
        prediction_type = self.scheduler.config.prediction_type
        if prediction_type in ("sample", "original_sample"):
            return clean
        alpha_t, sigma_t, input_scale = self._noise_level(sample, timestep)
        epsilon = (input_scale * sample - alpha_t * clean) / sigma_t
        if prediction_type == "epsilon":
            return epsilon
        return alpha_t * epsilon - sigma_t * clean  # v_prediction

    def _denoise_tile(
        self,
        rgb: torch.Tensor,
        noise: torch.Tensor,
        num_inference_steps: int,
        num_samples: int,
        rgb_consistency: bool,
        step_generators: list[torch.Generator],
        progress_bar,
        tiles_per_step: int = 1,
    ) -> torch.Tensor:
        """Samples cubes `[N * num_samples, bands, h, w]` in [0, 1] for same-sized tiles `rgb` `[N, 3, h, w]` in [0, 1]
        (one tile of several images, or several tiles stacked along N)."""
        device, dtype = self._execution_device, self.unet.dtype
        height, width = rgb.shape[-2:]
        processor = self.image_processor
        scale = self.config.residual_scale
        # Condition: RGB [N * S, 3, h', w'], padded to the UNet's multiple (samples of one image adjacent), then the
        # estimate when there is an estimator.
        rgb = processor.pad_to_multiple(rgb.to(device), self.downsample_factor).repeat_interleave(num_samples, dim=0)
        condition = [processor.normalize(rgb)]
        base = torch.zeros_like(noise, device=device)
        if self.estimator is not None:
            base = processor.normalize(self.prepare_estimate(rgb))  # [N * S, bands, h', w']
            condition.append(base)
        condition = torch.cat(condition, dim=1).to(dtype)

        # Set timesteps; the noise at the scheduler's initial scale is the first sample.
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        sample = noise.to(device) * self.scheduler.init_noise_sigma
        accepts_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        # Denoise: condition first, then the noisy residual [N * S, 3 (+ bands) + bands, h', w'].
        for t in self.scheduler.timesteps:
            model_input = torch.cat([condition, self.scheduler.scale_model_input(sample, t).to(dtype)], dim=1)
            model_output = self.unet(model_input, t).sample.float()  # [N * S, bands, h', w']
            if rgb_consistency:
                # Null-space step: make the predicted clean cube reproduce the RGB, keep what the camera cannot see.
                clean = self.predict_clean_sample(model_output, sample, t)
                cube = processor.denormalize(base + clean / scale)
                projected = processor.normalize(processor.project(cube, rgb).clamp(0.0, 1.0))
                model_output = self._model_output_for_clean((projected - base) * scale, sample, t)
            extra = {"generator": step_generators} if accepts_generator else {}
            sample = self.scheduler.step(model_output, t, sample, **extra).prev_sample
            progress_bar.update(tiles_per_step)

        # Un-pad, and project the final cube too: the scheduler's last step need not keep the projection exactly.
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

        # 2. Preprocess the RGB to [N, 3, H, W] in [0, 1]; each tile is padded to the UNet's multiple in `_denoise_tile`
        rgb = self.image_processor.preprocess(image)
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

        # 4. Tile the image (one tile when `tile_size` is None) and denoise the tiles, several per UNet call when they
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
                    [step_generators[i] for _ in chunk for i in range(batch) for _ in range(num_samples)],
                    progress_bar,
                    tiles_per_step=len(chunk),
                )  # [K * N * S, bands, h, w]
                for (top, left, _, _, weight), tile in zip(chunk, sampled.split(batch * num_samples)):
                    cubes[..., top : top + tile_h, left : left + tile_w] += tile.cpu().float() * weight
                    weights[..., top : top + tile_h, left : left + tile_w] += weight
        cubes /= weights  # [N * S, bands, H, W]

        # 5. Mean and spread over samples
        cubes = cubes.view(batch, num_samples, self.num_bands, height, width)
        uncertainty = cubes.std(dim=1, unbiased=num_samples > 1) if num_samples > 1 else None
        if uncertainty is not None and uncertainty_scale is not None:
            uncertainty = uncertainty * uncertainty_scale  # the calibration fitted on training scenes
        cubes = cubes.mean(dim=1)

        # 6. Post-process
        if output_type == "np":
            cubes = cubes.permute(0, 2, 3, 1).numpy()
            uncertainty = None if uncertainty is None else uncertainty.permute(0, 2, 3, 1).numpy()

        # 7. Offload all models
        self.maybe_free_model_hooks()

        # 8. Return
        if not return_dict:
            return (cubes, uncertainty)
        return HSRPipelineOutput(cubes=cubes, uncertainty=uncertainty)
