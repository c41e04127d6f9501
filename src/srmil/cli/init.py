"""``srmil init [--model NAME] [--task TASK] > config.yaml``: a commented run config."""

from __future__ import annotations

import argparse

from srmil.cli.common import add_command, flag


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "init", help="print a commented YAML run config (every default)",
                    description="Print every section and field of the run config with its "
                    "default and a one-line description; `--config` reads the file back.")
    flag(p, "--model", " whose settings fill model_config (default srmil)", default="srmil")
    flag(p, "--task", "; the config fixes the run to it (default auto)", default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srmil import api

    print(api.init_config(args.model, args.task), end="")
    return 0
