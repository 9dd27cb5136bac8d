"""Reconstruct a 31-band hyperspectral cube from an example photo with a bundled model, in a few lines.

    python examples/reconstruct_photo.py
    python examples/reconstruct_photo.py --model hsr-diffusers/pixelgan-cave --image examples/rocket.jpg

Runs offline on CPU. `hsr reconstruct` does the same for many files, with every output format and plot.
"""

import argparse
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from hsr_diffusers import HSRDiffusionPipeline, HSRPipeline
from hsr_diffusers.spectral import srgb_to_camera_rgb


HERE = Path(__file__).resolve().parent

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="hsr-diffusers/ddpm-cave", help="bundled name, local folder or Hub id")
parser.add_argument("--image", type=Path, default=HERE / "coffee.png")
parser.add_argument("--preview", type=Path, default=Path("coffee_preview.png"), help="where to save the preview")
args = parser.parse_args()

# 1. Load a pipeline: a bundled short name loads offline from the package.
pipe = HSRPipeline.from_pretrained(args.model)

# 2. Photos are sRGB-encoded; the models take linear RGB in [0, 1] in the camera space they were trained for.
photo = np.asarray(PIL.Image.open(args.image).convert("RGB"))  # (H, W, 3) uint8
rgb = srgb_to_camera_rgb(photo / 255.0, pipe.config.response, pipe.config.wavelengths)

# 3. Reconstruct. Only the diffusion pipeline takes sampling arguments.
if isinstance(pipe, HSRDiffusionPipeline):
    output = pipe(rgb, num_inference_steps=20, generator=torch.Generator().manual_seed(0))
else:
    output = pipe(rgb)
cube = output.cubes[0]  # (H, W, 31) reflectance in [0, 1]
print(f"cube: shape {cube.shape}, {pipe.config.wavelengths[0]}-{pipe.config.wavelengths[-1]} nm")

# 4. The spectrum of the centre pixel.
height, width, _ = cube.shape
print(f"centre pixel ({height // 2}, {width // 2}):")
for wavelength, value in zip(pipe.config.wavelengths, cube[height // 2, width // 2]):
    print(f"  {wavelength:5.0f} nm  {value:.3f}")

# 5. An sRGB preview of the cube, rendered under D65.
PIL.Image.fromarray(pipe.image_processor.cube_to_rgb(cube[None])[0]).save(args.preview)
print(f"preview saved to {args.preview}")
