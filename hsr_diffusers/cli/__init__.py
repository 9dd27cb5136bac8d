"""The `hsr` command line: `hsr data ...`, `hsr reconstruct ...`, `hsr evaluate ...`.

Each subcommand lives in its own module with `add_parser(subparsers)` that registers the parser and sets
`func`, so that the tools stay independent and importing the CLI stays cheap.
"""

import argparse
import importlib
import sys


# Module names of the subcommands, in the order `hsr --help` lists them.
SUBCOMMANDS = ["data", "reconstruct", "evaluate"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hsr", description="RGB to hyperspectral reconstruction tools.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"hsr_diffusers.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
