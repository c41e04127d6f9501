"""Library code never prints, exits or switches matplotlib's backend; the wheel is complete."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "srmil"


def _library_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "cli" not in p.relative_to(SRC).parts)


def _calls(tree: ast.AST) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = (f.id if isinstance(f, ast.Name) else
                    f"{getattr(f.value, 'id', '?')}.{f.attr}" if isinstance(f, ast.Attribute)
                    else "")
            out.append((name, node.lineno))
    return out


def test_no_print_exit_or_backend_switch_outside_the_cli():
    banned = {"print", "exit", "sys.exit", "matplotlib.use", "plt.show"}
    found = [f"{p.relative_to(SRC)}:{line} {name}()" for p in _library_modules()
             for name, line in _calls(ast.parse(p.read_text(encoding="utf-8")))
             if name in banned]
    assert found == []


def test_the_checker_finds_what_it_bans():
    names = {n for n, _ in _calls(ast.parse("import sys\nprint(1)\nsys.exit(0)\n"))}
    assert {"print", "sys.exit"} <= names


def test_drawing_a_heatmap_leaves_the_backend_and_pyplot_alone(tmp_path):
    code = f"""
import sys, matplotlib, numpy as np
matplotlib.use("svg")  # the user's choice, e.g. a notebook's inline backend
from srmil.reports.heatmaps import render_heatmap
from srmil.reports.roc import roc_figure
c = np.stack(np.meshgrid(np.arange(6), np.arange(5)), -1).reshape(-1, 2) * 224
render_heatmap({str(tmp_path / 'h.png')!r}, c, np.arange(30.0), 224.0)
roc_figure({{"m": (np.array([0, 1, 0, 1]), np.array([[.9, .1], [.2, .8], [.6, .4], [.3, .7]]))}},
           {str(tmp_path / 'roc.png')!r})
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_wheel_holds_every_module(tmp_path):
    root = SRC.parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(root)], check=True, timeout=600,
                   capture_output=True)
    (wheel,) = tmp_path.glob("srmil-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(SRC.parent)) for p in SRC.rglob("*.py")}
    assert expected - names == set()
    assert "srmil/training/__init__.py" in names
