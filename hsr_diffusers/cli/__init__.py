"""The `hsr` command line: `hsr data ...`, `hsr reconstruct ...`, `hsr evaluate ...`.

Each subcommand lives in its own module with `add_parser(subparsers)` that registers the parser and sets
`func`, so that the tools stay independent and importing the CLI stays cheap.
"""

import argparse
import importlib
import sys


# Module names of the subcommands, in the order `hsr --help` lists them.
SUBCOMMANDS = ["data", "reconstruct", "evaluate"]


def choice_of(module: str, name: str):
    """
    An argparse `type` that accepts the values of the tuple `name` in `module`, imported only when the argument is
    parsed: the choices keep their one home in the library, and `hsr --help` does not import torch or datasets to
    list them.
    """

    def parse(value: str) -> str:
        choices = getattr(importlib.import_module(module), name)
        if value not in choices:
            raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(choices)})")
        return value

    parse.__name__ = name  # argparse names the type in its error messages
    return parse


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
