"""Reconstruct a 31-band hyperspectral cube from an example photo with a bundled model, in a few lines.

    python examples/reconstruct_photo.py
    python examples/reconstruct_photo.py --model hsr-diffusers/pixelgan-cave --image examples/rocket.jpg

Runs offline on CPU. `hsr reconstruct` does the same for many files, with every output format and plot.
"""

import argparse
from pathlib import Path

import PIL.Image
import torch

from hsr_diffusers import HSRPipeline


HERE = Path(__file__).resolve().parent

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="hsr-diffusers/ddpm-cave", help="bundled name, local folder or Hub id")
parser.add_argument("--image", type=Path, default=HERE / "coffee.png")
parser.add_argument("--preview", type=Path, default=Path("coffee_preview.png"), help="where to save the preview")
args = parser.parse_args()

# 1. Load a pipeline: a bundled short name loads offline from the package.
pipe = HSRPipeline.from_pretrained(args.model)

# 2. Reconstruct. A PIL image is taken as an sRGB photo and converted to the model's camera RGB by the pipeline;
#    only a pipeline that samples (the diffusion model) takes sampling arguments.
photo = PIL.Image.open(args.image)
sampling = {"num_inference_steps": 20, "generator": torch.Generator().manual_seed(0)} if pipe.is_sampler else {}
output = pipe(photo, **sampling)
cube = output.cubes[0]  # (H, W, 31) reflectance in [0, 1]
print(f"cube: shape {cube.shape}, {pipe.config.wavelengths[0]}-{pipe.config.wavelengths[-1]} nm")

# 3. The spectrum of the centre pixel.
height, width, _ = cube.shape
print(f"centre pixel ({height // 2}, {width // 2}):")
for wavelength, value in zip(pipe.config.wavelengths, cube[height // 2, width // 2]):
    print(f"  {wavelength:5.0f} nm  {value:.3f}")

# 4. An sRGB preview of the cube, rendered under D65.
PIL.Image.fromarray(pipe.image_processor.cube_to_rgb(cube[None])[0]).save(args.preview)
print(f"preview saved to {args.preview}")
