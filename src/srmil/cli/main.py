"""The ``srmil`` command: one subcommand module each, errors as one line on stderr."""

from __future__ import annotations

import argparse
import sys

from srmil import __version__
from srmil.cli import bench, check, demo, synth
from srmil.errors import SrmilError

SUBCOMMANDS = (synth, check, bench, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srmil",
        description="Spatially regularised MIL for whole-slide images.",
    )
    parser.add_argument("--version", action="version", version=f"srmil {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in SUBCOMMANDS:
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point. Returns the exit code: 0 ok, 1 check failed, 2 bad input, 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
    except SrmilError as exc:
        print(f"srmil {args.command}: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"srmil {args.command}: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
