from .awan import AWAN
from .discriminators import PatchDiscriminator, PixelDiscriminator
from .modeling_outputs import HSRModelOutput
from .mst_plus_plus import MSTPlusPlus
from .pixel_mlp import PixelMLP
from .pixelgan_generator import HSRPixelGANGenerator
from .root_polynomial import RootPolynomialRegression, fit_root_polynomial


__all__ = [
    "AWAN",
    "HSRModelOutput",
    "HSRPixelGANGenerator",
    "MSTPlusPlus",
    "PatchDiscriminator",
    "PixelDiscriminator",
    "PixelMLP",
    "RootPolynomialRegression",
    "fit_root_polynomial",
]
