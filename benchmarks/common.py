"""Helpers shared by the benchmark scripts: machine description, Markdown tables, result files."""

import importlib.util
import json
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import datasets
import numpy as np
import torch

from hsr_diffusers.data import get_cube


RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = f"CPU: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    if torch.cuda.is_available():
        device += f"; GPU: {torch.cuda.get_device_name(0)}"
    return f"{device}; Python {platform.python_version()}, torch {torch.__version__}"


def load_previous_module(path: str, name: str = "previous_spectral"):
    """A copy of a module from an earlier commit, loaded from its file under `name`, to compare with this checkout's."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(path: Path, report: str, payload: dict) -> None:
    """Writes a report that states its own command (`path`, Markdown) and its numbers (`path` with `.json`), and prints
    the report: what scripts and tests read is the JSON, never the Markdown."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report)
    path.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=float))
    print(report)
    print(f"Wrote {path} and its .json.")


def write_result(name: str, title: str, body: str) -> Path:
    """Writes `results/<name>.md` with the command, the date and the machine, and prints it."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", *sys.argv])
    text = (
        f"# {title}\n\n"
        f"- Command: `{command}`\n"
        f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"- Machine: {machine_info()}\n\n"
        f"{body}\n"
    )
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(text)
    print(text)
    return path


def photo_srgb(height: int, width: int, name: str = "coffee.png") -> np.ndarray:
    """A bundled example photo resized to `height` x `width`: its sRGB as `uint8` `(H, W, 3)`."""
    from PIL import Image

    photo = Image.open(Path(__file__).resolve().parents[1] / "examples" / name).convert("RGB")
    return np.asarray(photo.resize((width, height), Image.Resampling.BICUBIC))


def photo_rgb(pipe, height: int, width: int, name: str = "coffee.png") -> np.ndarray:
    """[`photo_srgb`] converted to `pipe`'s linear camera RGB, float32 `(H, W, 3)`, by the pipeline's own
    preprocessing (its response and bands), as `hsr reconstruct` and `pipe(PIL.Image.open(photo))` convert it: speed
    benchmarks then see photo colours (the projection's work depends on them), and the conversion stays out of the
    timed call."""
    rgb = pipe.image_processor.preprocess(photo_srgb(height, width, name), input_space="srgb")  # [1, 3, H, W]
    return rgb[0].permute(1, 2, 0).numpy()


def divide_by_max(cube: np.ndarray) -> np.ndarray:
    """A cube divided by its maximum: the exposure of the ICVL protocol (radiance of any scale)."""
    return cube / max(float(cube.max()), 1e-6)


def fixed_crops(data, split: str, size: int, per_scene: int) -> list[tuple[str, np.ndarray]]:
    """Crops on a fixed diagonal grid of every scene of the split; a side shorter than `size` (an ICVL strip's height)
    is taken whole."""
    table = datasets.load_from_disk(data)[split]
    crops = []
    for index in range(len(table)):
        cube = np.asarray(get_cube(table, index), dtype=np.float32)
        height, width, _ = cube.shape
        for k in range(per_scene):
            top = round((k + 1) * max(height - size, 0) / (per_scene + 1))
            left = round((k + 1) * max(width - size, 0) / (per_scene + 1))
            crops.append((f"{table[index]['name']}@{top},{left}", cube[top : top + size, left : left + size]))
    return crops
