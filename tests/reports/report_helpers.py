"""Helpers of the report tests (a unique module name: every test folder has a conftest)."""

from __future__ import annotations

import pytest

from srmil.cli.main import main


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run the srmil CLI in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err
