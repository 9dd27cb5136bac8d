"""Accuracy of the conditional DDPM against the number of UNet evaluations (issue: few-step sampling).

    python benchmarks/sampling_steps.py --model hsr-diffusers/ddpm-cave --data /path/to/prepared/cave

For each scheduler (the method's 1000-step DDPM, DDIM, DPM-Solver++), each step count, with and without the
RGB-consistency projection, and for 1 and 4 samples, it reports RMSE and SAM on crops of the validation scenes, and the
ratio to the 1000-step DDPM reference. The reference costs 1000 UNet evaluations per crop, which is why crops are used
on a CPU (`--crop_size`, `--crops_per_scene`); the crops are fixed (a grid), not chosen by their scores. For a
distilled one-step student, `--reference_model` names its teacher, whose 1000-step sampler is then the reference, and
`--schedulers DDIM --steps 1` scores the student as it ships.
"""

import argparse
import time

import numpy as np
import torch
from common import fixed_crops, markdown_table, write_result
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from hsr_diffusers import HSRPipeline, metrics
from hsr_diffusers.data.rendering import render_training_rgb


SCHEDULERS = {
    "DDPM (method)": (DDPMScheduler, {}),
    "DDIM": (DDIMScheduler, {"timestep_spacing": "trailing"}),
    "DPM-Solver++": (DPMSolverMultistepScheduler, {"timestep_spacing": "trailing", "algorithm_type": "dpmsolver++"}),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="hsr-diffusers/ddpm-cave")
    parser.add_argument("--data", required=True, help="A dataset folder written by `hsr data prepare`.")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--crop_size", type=int, default=128)
    parser.add_argument("--crops_per_scene", type=int, default=2)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50])
    parser.add_argument("--reference_steps", type=int, default=1000)
    parser.add_argument(
        "--reference_model", default=None, help="Model of the 1000-step reference (default: --model itself)."
    )
    parser.add_argument("--schedulers", nargs="+", default=list(SCHEDULERS), choices=list(SCHEDULERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="sampling_steps")
    return parser.parse_args(argv)


def evaluate(pipe, crops, steps: int, projection: bool, samples: int, seed: int):
    rmse, sam, seconds = [], [], 0.0
    for _, cube in crops:
        # The NTIRE-clean RGB that training renders, through the pipeline's own camera response.
        rgb = render_training_rgb(cube, pipe.config.response, pipe.config.wavelengths).astype(np.float32)
        start = time.perf_counter()
        pred = pipe(
            rgb,
            num_inference_steps=steps,
            num_samples=samples,
            rgb_consistency=projection,
            generator=torch.Generator().manual_seed(seed),
        ).cubes[0]
        seconds += time.perf_counter() - start
        rmse.append(metrics.rmse(pred, cube))
        sam.append(metrics.sam(pred, cube))
    return float(np.mean(rmse)), float(np.mean(sam)), seconds / len(crops)


def main(args):
    pipe = HSRPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    crops = fixed_crops(args.data, args.split, args.crop_size, args.crops_per_scene)
    base_config = pipe.scheduler.config

    reference_pipe = pipe
    if args.reference_model not in (None, args.model):
        reference_pipe = HSRPipeline.from_pretrained(args.reference_model)
        reference_pipe.set_progress_bar_config(disable=True)
    reference_pipe.scheduler = DDPMScheduler.from_config(reference_pipe.scheduler.config)
    reference = evaluate(reference_pipe, crops, args.reference_steps, True, 1, args.seed)
    rows = [
        ["DDPM (method)", args.reference_steps, "yes", 1, args.reference_steps, *reference[:2], 1.0, 1.0, reference[2]]
    ]
    print(rows[-1], flush=True)
    for name in args.schedulers:
        scheduler_class, extra = SCHEDULERS[name]
        pipe.scheduler = scheduler_class.from_config(base_config, **extra)
        for steps in args.steps:
            for projection in (True, False):
                for samples in (1, 4):
                    if samples == 4 and not projection:
                        continue
                    rmse, sam, seconds = evaluate(pipe, crops, steps, projection, samples, args.seed)
                    row = [name, steps, "yes" if projection else "no", samples, steps * samples, rmse, sam]
                    rows.append(row + [rmse / reference[0], sam / reference[1], seconds])
                    print(rows[-1], flush=True)

    header = ["scheduler", "steps", "projection", "samples", "UNet evals / crop", "RMSE", "SAM (rad)"]
    header += ["RMSE / ref", "SAM / ref", "s / crop"]
    within = [r for r in rows[1:] if r[1] <= 20 and r[2] == "yes" and r[7] <= 1.02 and r[8] <= 1.02]
    verdict = (
        "Configurations with at most 20 steps within 2 % of the 1000-step reference in both RMSE and SAM: "
        + (", ".join(f"{r[0]} {r[1]} steps x{r[3]}" for r in within) if within else "none")
        + "."
    )
    body = (
        f"Model `{args.model}`; {len(crops)} fixed {args.crop_size}x{args.crop_size} crops of the `{args.split}` scenes "
        f"({', '.join(name for name, _ in crops)}); seed {args.seed}. Reference: the method's DDPM sampler with "
        f"{args.reference_steps} steps and the projection, on `{args.reference_model or args.model}`. Lower is "
        "better; ratios below 1 beat the reference.\n\n" + markdown_table(header, rows) + f"\n\n{verdict}\n"
    )
    write_result(args.output, "DDPM accuracy against sampling steps", body)


if __name__ == "__main__":
    main(parse_args())
