"""hsr-diffusers: RGB to hyperspectral reconstruction with conditional diffusion models and pixel-based cGANs."""

__version__ = "0.1.0"

from hsr_diffusers.image_processor import HSRImageProcessor
from hsr_diffusers.models import (
    AWAN,
    HSRPixelGANGenerator,
    MSTPlusPlus,
    PatchDiscriminator,
    PixelDiscriminator,
    RootPolynomialRegression,
)
from hsr_diffusers.pipelines import (
    HSRDiffusionPipeline,
    HSRPipeline,
    HSRPipelineOutput,
    HSRPixelGANPipeline,
    list_pretrained,
)
from hsr_diffusers.spectral import (
    WAVELENGTHS,
    list_responses,
    load_response,
    render_rgb,
    rgb_consistent_projection,
    srgb_preview,
)


__all__ = [
    "AWAN",
    "HSRDiffusionPipeline",
    "HSRImageProcessor",
    "HSRPipeline",
    "HSRPipelineOutput",
    "HSRPixelGANGenerator",
    "HSRPixelGANPipeline",
    "MSTPlusPlus",
    "PatchDiscriminator",
    "PixelDiscriminator",
    "RootPolynomialRegression",
    "WAVELENGTHS",
    "list_pretrained",
    "list_responses",
    "load_response",
    "render_rgb",
    "rgb_consistent_projection",
    "srgb_preview",
]
