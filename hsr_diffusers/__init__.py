"""hsr-diffusers: RGB to hyperspectral reconstruction with conditional diffusion models and pixel-based cGANs.

The public names below are imported on first use (PEP 562 `__getattr__`), not when the package is imported: torch and
diffusers take seconds to import, and the `hsr` command must answer `--help` without them.
"""

from hsr_diffusers._lazy import lazy_exports


__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "HSRImageProcessor": "hsr_diffusers.image_processor",
    "AWAN": "hsr_diffusers.models",
    "HSRPixelGANGenerator": "hsr_diffusers.models",
    "MSTPlusPlus": "hsr_diffusers.models",
    "PatchDiscriminator": "hsr_diffusers.models",
    "PixelDiscriminator": "hsr_diffusers.models",
    "PixelMLP": "hsr_diffusers.models",
    "RootPolynomialRegression": "hsr_diffusers.models",
    "fit_root_polynomial": "hsr_diffusers.models",
    "HSRDiffusionPipeline": "hsr_diffusers.pipelines",
    "HSRPipeline": "hsr_diffusers.pipelines",
    "HSRFeedForwardPipeline": "hsr_diffusers.pipelines",
    "HSRPipelineOutput": "hsr_diffusers.pipelines",
    "list_pretrained": "hsr_diffusers.pipelines",
    "WAVELENGTHS": "hsr_diffusers.spectral",
    "list_responses": "hsr_diffusers.spectral",
    "load_response": "hsr_diffusers.spectral",
    "render_rgb": "hsr_diffusers.spectral",
    "rgb_consistent_projection": "hsr_diffusers.spectral",
    "srgb_preview": "hsr_diffusers.spectral",
    "load_cube": "hsr_diffusers.data.io",
    "load_cube_with_wavelengths": "hsr_diffusers.data.io",
    "save_cube": "hsr_diffusers.data.io",
    "render_training_rgb": "hsr_diffusers.data.rendering",
    "read_photo": "hsr_diffusers.data.photos",
}

__all__ = sorted(_EXPORTS)

_lazy_getattr, __dir__ = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str):
    if name == "HSRPixelGANPipeline":  # the old name of HSRFeedForwardPipeline: a FutureWarning at every import
        from hsr_diffusers.pipelines.hsr_pixelgan.pipeline_hsr_pixelgan import deprecated_name

        return deprecated_name(__name__, name)
    return _lazy_getattr(name)
