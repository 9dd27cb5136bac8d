"""Validation accuracy of the bundled pipelines with the previous and the current RGB projection, side by side.

    git show e45bcfb:hsr_diffusers/spectral.py > /tmp/speed/prev/spectral.py  # the projection before issue 26
    python benchmarks/projection_accuracy.py --previous /tmp/speed/prev/spectral.py

The previous projection is `bounded_rgb_projection` from a copy of the previous `hsr_diffusers/spectral.py` (the
float64 iteration, with the exact bounded projection of the estimate); the current one is this checkout's (the float32
Newton iteration, with the estimate made consistent by the closed form and clipped). Both run the same networks on the
two CAVE validation scenes, rendered NTIRE-clean at their full 512x512, with the DDPM's seed 0; the table gives RMSE and
SAM per scene, their means and the relative change.
"""

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from common import load_previous_module, markdown_table, write_result

import hsr_diffusers.image_processor as image_processor_module
from hsr_diffusers import HSRDiffusionPipeline, HSRPipeline, metrics
from hsr_diffusers.data import load_cube
from hsr_diffusers.spectral import render_rgb


ROOT = Path(__file__).resolve().parents[1]
SCENES = ("feathers", "glass_tiles")


def parse_args(argv=None):
    shared = os.environ.get("HSR_SHARED_DATA") or str(ROOT.parent / "shared" / "data")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--previous", required=True, help="A copy of the previous hsr_diffusers/spectral.py.")
    parser.add_argument("--data_dir", default=os.path.join(shared, "cave"))
    parser.add_argument("--models", nargs="+", default=["hsr-diffusers/pixelgan-cave", "hsr-diffusers/ddpm-cave"])
    parser.add_argument("--output", default="projection_accuracy")
    return parser.parse_args(argv)


def previous_prepare_estimate(pipe):
    """The previous `prepare_estimate`: the estimate projected exactly onto the [0, 1] cubes that render to the RGB."""

    def prepare_estimate(rgb):
        processor = pipe.image_processor
        estimate = processor.denormalize(pipe.estimator(processor.normalize(rgb)).sample.float())
        if pipe.config.project_estimate:
            return processor.project_and_clip(estimate, rgb)
        return estimate.clamp(0.0, 1.0)

    return prepare_estimate


def score(pipe, cube: np.ndarray) -> tuple[float, float]:
    kwargs = {"generator": torch.Generator().manual_seed(0)} if isinstance(pipe, HSRDiffusionPipeline) else {}
    pred = pipe(render_rgb(cube), **kwargs).cubes[0]
    return metrics.rmse(pred, cube), metrics.sam(pred, cube)


def main(args):
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    previous = load_previous_module(args.previous)
    current_projection = image_processor_module.bounded_rgb_projection
    cubes = {scene: load_cube(Path(args.data_dir) / f"{scene}_ms") for scene in SCENES}
    rows = []
    for model in args.models:
        pipe = HSRPipeline.from_pretrained(model)
        pipe.set_progress_bar_config(disable=True)
        scores = {}
        for version in ("previous", "current"):
            if version == "previous":
                image_processor_module.bounded_rgb_projection = previous.bounded_rgb_projection
                pipe.prepare_estimate = previous_prepare_estimate(pipe)
            else:
                image_processor_module.bounded_rgb_projection = current_projection
                del pipe.prepare_estimate
            scores[version] = {scene: score(pipe, cube) for scene, cube in cubes.items()}
            print(model, version, scores[version], flush=True)
        for version in ("previous", "current"):
            per_scene = [f"{scores[version][s][0]:.5f} / {scores[version][s][1]:.5f}" for s in SCENES]
            rmse = np.mean([scores[version][s][0] for s in SCENES])
            sam = np.mean([scores[version][s][1] for s in SCENES])
            change = ""
            if version == "current":
                old_rmse = np.mean([scores["previous"][s][0] for s in SCENES])
                old_sam = np.mean([scores["previous"][s][1] for s in SCENES])
                change = f"{rmse / old_rmse - 1:+.2%} / {sam / old_sam - 1:+.2%}"
            rows.append([f"`{model}`", version, *per_scene, f"{rmse:.5f} / {sam:.5f}", change])
    header = ["model", "projection", *[f"{s}: RMSE / SAM" for s in SCENES], "mean RMSE / SAM", "change"]
    body = (
        "The two CAVE validation scenes, NTIRE-clean renders at 512x512, each pipeline at its shipped defaults (DDPM "
        "seed 0). 'previous': the float64 projection with the exact bounded projection of the estimate; 'current': "
        "this checkout's projection, the estimate made consistent by the closed form and clipped.\n\n"
        + markdown_table(header, rows)
        + "\n"
    )
    write_result(args.output, "Validation accuracy: previous and current RGB projection", body)


if __name__ == "__main__":
    main(parse_args())
