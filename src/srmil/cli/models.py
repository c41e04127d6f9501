"""``srmil models``: the registered MIL models and their config defaults."""

from __future__ import annotations

import argparse

from srmil.cli.common import add_command


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "models", help="list the MIL models and their settings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srmil import api

    models = api.models()
    w = max(len(m.name) for m in models)
    for m in models:
        graph = "spatial graph" if m.uses_graph else "no graph"
        print(f"{m.name:<{w}} {m.summary} [{graph}]")
        settings = ", ".join(f"{k}={v}" for k, v in m.defaults.items())
        print(f"{'':<{w}} --set model.KEY=VALUE for: {settings}")
    return 0
