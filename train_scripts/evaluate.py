"""Evaluate saved pipelines on a prepared dataset split: the same code as `hsr evaluate`, next to the training scripts.

    python train_scripts/evaluate.py runs/ddpm-cave runs/pixelgan-cave --data data/cave --samples 8 --tile-size 256

Run `python train_scripts/evaluate.py --help` for the flags (those of `hsr evaluate`).
"""

import sys

from hsr_diffusers.cli import main as hsr_main


def main(argv: list[str] | None = None) -> int:
    return hsr_main(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
