"""``python -m srmil``: the ``srmil`` command."""

from srmil.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
