"""The ``srmil`` command: one subcommand module each, errors as one line on stderr."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from srmil import __version__
from srmil.cli import (
    bench,
    check,
    compare,
    demo,
    evaluate,
    init,
    models,
    predict,
    summarise,
    synth,
    train,
)
from srmil.cli import extract as extract_cli
from srmil.cli import heatmap as heatmap_cli
from srmil.cli import patch as patch_cli
from srmil.cli import report as report_cli
from srmil.cli import segment as segment_cli
from srmil.cli.common import HelpFormatter, add_log_args, configure_logging, unconfigure_logging
from srmil.errors import SrmilError, exc_line

SUBCOMMANDS = (init, synth, check, train, evaluate, predict, compare, summarise, models, bench,
               demo, heatmap_cli, report_cli, segment_cli, patch_cli, extract_cli)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every subcommand, no flag abbreviations anywhere."""
    parser = argparse.ArgumentParser(
        prog="srmil", allow_abbrev=False,
        description="Spatially regularised MIL for whole-slide images.",
    )
    parser.add_argument("--version", action="version", version=f"srmil {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in SUBCOMMANDS:
        mod.add_parser(sub)
    for p in sub.choices.values():
        p.allow_abbrev = False  # a mistyped or future flag is never silently another
        if p.formatter_class is argparse.HelpFormatter:
            p.formatter_class = HelpFormatter
        add_log_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point. Exit code: 0 ok, 1 check failed, 2 bad input, 130 interrupted."""
    # PyG's import calls torch.jit.script, deprecated in torch 2.14: not the user's concern
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated",
                            category=FutureWarning)
    if "TORCHELASTIC_RUN_ID" not in os.environ or os.environ.get("WORLD_SIZE", "1") == "1":
        _run(argv)  # the usual case: torch is imported only by commands that need it
    from srmil.training import distributed  # every process of a torchrun launch runs this

    if distributed.join_torchrun() > 0:  # rank 0 does the work, the others train with it
        sys.exit(distributed.serve_rank0())
    try:  # --help and argument errors exit too: the other ranks must still be released
        _run(argv)
    finally:
        distributed.release_ranks()


def _run(argv: list[str] | None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = configure_logging(args.command, args.quiet, args.verbose)
    try:
        code = args.func(args)
    except SrmilError as exc:
        print(f"srmil {args.command}: error: {exc}", file=sys.stderr)
        code = 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        code = 0
    except OSError as exc:  # the environment (disk full, permission), not a bug: one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"srmil {args.command}: error: {where}{exc.strerror or exc_line(exc)}",
              file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"srmil {args.command}: interrupted", file=sys.stderr)
        code = 130
    finally:
        unconfigure_logging(handler)
    sys.exit(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
