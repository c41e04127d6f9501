"""``srmil models``: the registered MIL models and their config defaults."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the MIL models and their settings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srmil.config import to_dict
    from srmil.errors import first_line
    from srmil.models import MODELS

    for name in MODELS.names():
        cls = MODELS.get(name)
        doc = first_line(cls.__doc__ or "")
        graph = "spatial graph" if cls.uses_graph else "no graph"
        print(f"{name:<10} {doc} [{graph}]")
        settings = ", ".join(f"{k}={v}" for k, v in to_dict(cls.Config()).items())
        print(f"{'':<10} --set model.KEY=VALUE for: {settings}")
    return 0
