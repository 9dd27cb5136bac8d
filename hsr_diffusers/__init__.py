"""hsr-diffusers: RGB to hyperspectral reconstruction with conditional diffusion models and pixel-based cGANs."""

__version__ = "0.1.0"

from hsr_diffusers.spectral import (
    WAVELENGTHS,
    list_responses,
    load_response,
    render_rgb,
    rgb_consistent_projection,
    srgb_preview,
)


__all__ = [
    "WAVELENGTHS",
    "list_responses",
    "load_response",
    "render_rgb",
    "rgb_consistent_projection",
    "srgb_preview",
]
