"""The README's Python API example runs as written (it cannot drift from the API)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    assert len(blocks) == 1, "the Python API section has one example"
    return blocks[0]


def test_the_readme_example_trains_cross_validates_predicts_and_draws(tmp_path, capsys):
    code = readme_example()
    assert all(f"api.{f}(" in code for f in ("train", "cv", "predict", "heatmap"))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    finally:
        os.chdir(cwd)
    run, pred, maps = namespace["run"], namespace["pred"], namespace["maps"]
    assert run.run.finished_folds() == [0, 1] and (tmp_path / "runs/abmil/DONE").is_file()
    assert namespace["first"].run.finished_folds() == [0]
    assert set(pred.table.columns) >= {"slide_id", "folds", "pred"} and pred.folds == [0, 1]
    assert len(pred.table) == 16 and pred.path is None
    assert maps.count("done") == 2
    for sid in pred.table.slide_id[:2]:
        assert (tmp_path / "heatmaps" / sid / "heatmap.png").stat().st_size > 0
    index = pd.read_csv(tmp_path / "heatmaps" / "index.csv")
    assert sorted(index.slide_id) == sorted(pred.table.slide_id[:2])
    out = capsys.readouterr().out
    assert "2 heatmaps in heatmaps" in out and "test_auc" in out
