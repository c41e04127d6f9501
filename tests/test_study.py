"""The study's logic on a tiny grid: its cells, its resume, its figure (never its numbers)."""

from __future__ import annotations

import json

import pytest

from srmil.config import StudyConfig
from srmil.errors import ConfigError
from srmil.study import grid, parse_knobs, run_study, synth_config

TINY = StudyConfig(variants=("sparse",), models=("mean", "abmil"), knobs=("shift=1,1.5",),
                   seeds=(0,), slides=16, dim=4, bag_size=30, folds=2, epochs=2,
                   bootstrap=20)


def test_grid_moves_one_knob_from_the_base_and_keeps_the_base_once():
    cfg = StudyConfig(variants=("spatial", "sparse"), knobs=("shift=0.5,1", "dim=16,32,64"),
                      seeds=(0, 1), dim=32)
    cohorts = grid(cfg)
    names = [c.name for c in cohorts]
    assert len(names) == len(set(names)) == 2 * 2 * (1 + 1 + 2)
    assert "sparse_s1" in names and "sparse-shift=0.5_s1" in names and "sparse-dim=64_s0" in names
    moved = {c.name: synth_config(c, cfg) for c in cohorts}
    assert moved["sparse-shift=0.5_s0"].tumour_shift == 1.0  # half the variant's 2.0
    assert moved["sparse-shift=0.5_s0"].dim == 32  # the other knobs at their base
    assert moved["spatial-dim=16_s1"].dim == 16 and moved["spatial-dim=16_s1"].seed == 1
    assert moved["spatial_s0"].tumour_fraction == (0.08, 0.15)
    with pytest.raises(ConfigError, match="study knob 'depth=1'"):
        parse_knobs(("depth=1",))


def test_tiny_study_has_every_cell_resumes_without_training_and_draws_its_figure(tmp_path):
    first = run_study(tmp_path, TINY)
    cells = first.cells
    assert len(cells) == 2 * 2  # (base, shift=1.5) × (mean, abmil)
    assert set(cells.cohort) == {"sparse_s0", "sparse-shift=1.5_s0"}
    assert set(cells.model) == {"mean", "abmil"}
    assert cells.auc_mean.between(0, 1).all() and (cells.folds == 2).all()
    assert sorted(first.ran) == sorted(f"{c}/{m}" for c in set(cells.cohort)
                                       for m in ("mean", "abmil"))
    assert first.figure.exists() and first.figure.stat().st_size > 1000
    cell = tmp_path / "cells" / "sparse_s0" / "abmil.json"
    saved = json.loads(cell.read_text())
    assert saved["oracle_arrangement_auc"] == 0.5 and saved["model"] == "abmil"
    # the summary has the base under the shift knob too (value 1) and the moved value
    sh = first.summary[(first.summary.knob == "shift") & (first.summary.model == "mean")]
    assert sorted(sh.value) == [1.0, 1.5]

    mtime = cell.stat().st_mtime_ns
    again = run_study(tmp_path, TINY)
    assert again.ran == []  # resume: nothing trained again
    assert cell.stat().st_mtime_ns == mtime
    assert again.cells.sort_values(["cohort", "model"]).auc_mean.tolist() == \
        cells.sort_values(["cohort", "model"]).auc_mean.tolist()

    # a model added later runs on the same saved folds, the rest is skipped
    more = run_study(tmp_path, StudyConfig(**{**TINY.__dict__, "models": ("mean", "abmil",
                                                                         "max")}))
    assert sorted(more.ran) == ["sparse-shift=1.5_s0/max", "sparse_s0/max"]
    assert "| max |" in (tmp_path / "study.md").read_text().splitlines()[0]

    # other training settings in the same directory: refused, nothing trained or written
    with pytest.raises(ConfigError, match="other settings .epochs 2 here, 3 asked"):
        run_study(tmp_path, StudyConfig(**{**TINY.__dict__, "epochs": 3}))


def test_log_knob_axis_is_ticked_at_the_knob_values_only():
    from matplotlib.ticker import NullFormatter

    from srmil.reports.figures import subplots
    from srmil.study import log_knob_axis

    fig, axes = subplots(1, 1, squeeze=False)
    ax = axes[0][0]
    ax.plot([120, 360, 1080], [0.5, 0.6, 0.7])
    log_knob_axis(ax, [360, 120, 1080, 120])
    fig.canvas.draw()
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["120", "360", "1080"]
    assert isinstance(ax.xaxis.get_minor_formatter(), NullFormatter)
