"""Time of the previous and the current [0, 1]-bounded RGB projection on the bundled PixelGAN's outputs, side by side.

    git show 9a3f42a:hsr_diffusers/spectral.py > /tmp/previous_spectral.py  # the torch Newton iteration
    python benchmarks/projection_speed.py --previous /tmp/previous_spectral.py

The PixelGAN runs on every CAVE scene (NTIRE-clean renders at 512x512, as in `real_scenes.py`) and the arguments of
every projection it makes are kept; then `bounded_rgb_projection` of the previous `hsr_diffusers/spectral.py` (loaded
from the file given) and of this checkout project them in turn, in this process on one thread, best of `--repeats`
(CPU time of this thread). The table gives both times per scene, their ratio and the largest difference between the
two outputs. It also times the first projection of a new process twice, in child processes that share an empty numba
cache folder: the first compiles the solver, the second loads it from the cache (both include importing numba).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import load_previous_module, markdown_table, write_result

import hsr_diffusers.image_processor as image_processor_module
from hsr_diffusers import HSRPipeline
from hsr_diffusers.data import load_cube
from hsr_diffusers.spectral import render_rgb, rendering_matrix


ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    shared = os.environ.get("HSR_SHARED_DATA") or str(ROOT.parent / "shared" / "data")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--previous", required=True, help="A copy of the previous hsr_diffusers/spectral.py.")
    parser.add_argument("--data_dir", default=os.path.join(shared, "cave"))
    parser.add_argument("--model", default="hsr-diffusers/pixelgan-cave")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="projection_speed")
    parser.add_argument(
        "--skip_first_call", action="store_true", help="Leave out the timing of the compilation (about 10 s)."
    )
    return parser.parse_args(argv)


def projection_inputs(model: str, data_dir: Path) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """`{scene: [(cube, rgb), ...]}`: what the pipeline gives its projection on each scene (one call per finished band
    of rows)."""
    pipe = HSRPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    projection, calls = image_processor_module.bounded_rgb_projection, []

    def keep(cube, rgb, *args, **kwargs):
        calls.append((cube.clone(), rgb.clone()))
        return projection(cube, rgb, *args, **kwargs)

    image_processor_module.bounded_rgb_projection = keep
    inputs = {}
    try:
        for folder in sorted(data_dir.glob("*_ms")):
            calls.clear()
            pipe(render_rgb(load_cube(folder)))
            inputs[folder.name.removesuffix("_ms")] = list(calls)
    finally:
        image_processor_module.bounded_rgb_projection = projection
    return inputs


def best_time(function, calls, repeats: int) -> tuple[float, list[torch.Tensor]]:
    matrix = rendering_matrix()
    function(*calls[0], matrix)  # the first call compiles the current solver
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        outputs = [function(cube, rgb, matrix) for cube, rgb in calls]
        times.append(time.thread_time() - start)
    return min(times), outputs


FIRST_PROJECTION = """
import time, torch
from hsr_diffusers.spectral import bounded_rgb_projection, rendering_matrix
cube, rgb, matrix = torch.rand(1, 31, 64, 64) * 1.4 - 0.2, torch.rand(1, 3, 64, 64), rendering_matrix()
start = time.perf_counter()
bounded_rgb_projection(cube, rgb, matrix)
print(time.perf_counter() - start)
"""


def first_projection_seconds() -> tuple[float, float]:
    """Wall seconds of a new process's first projection: compiling the solver into an empty cache, then loading it."""
    with tempfile.TemporaryDirectory() as cache:
        environment = {**os.environ, "NUMBA_CACHE_DIR": cache}
        run = [sys.executable, "-c", FIRST_PROJECTION]
        compiling, cached = (float(subprocess.check_output(run, env=environment, text=True)) for _ in range(2))
    return compiling, cached


def main(args):
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    previous = load_previous_module(args.previous)
    inputs = projection_inputs(args.model, Path(args.data_dir))
    rows, ratios = [], []
    for scene, calls in inputs.items():
        before, old = best_time(previous.bounded_rgb_projection, calls, args.repeats)
        after, new = best_time(image_processor_module.bounded_rgb_projection, calls, args.repeats)
        difference = max(float((a - b).abs().max()) for a, b in zip(old, new))
        ratios.append(before / after)
        rows.append([scene, f"{1e3 * before:.1f}", f"{1e3 * after:.1f}", f"{before / after:.2f}", f"{difference:.1e}"])
        print(*rows[-1], flush=True)
    summary = f"{min(ratios):.2f} / {np.median(ratios):.2f} / {max(ratios):.2f}"
    header = ["scene", "previous (ms)", "current (ms)", "previous / current", "largest difference"]
    body = (
        f"`{args.model}` on the {len(rows)} CAVE scenes, NTIRE-clean renders at 512x512; every projection the pipeline "
        f"makes on a scene, timed together (CPU time of one thread, best of {args.repeats}). previous / current: "
        f"min / median / max **{summary}**.\n\n" + markdown_table(header, rows) + "\n"
    )
    if not args.skip_first_call:
        compiling, cached = first_projection_seconds()
        body += (
            f"\nThe first projection of a new process (a 64x64 cube, numba's import included): **{compiling:.1f} s** "
            f"when it compiles the solver into an empty cache, **{cached:.2f} s** when it loads it from the cache.\n"
        )
    write_result(args.output, "Bounded RGB projection: previous and current, on the PixelGAN's outputs", body)


if __name__ == "__main__":
    main(parse_args())
