"""The known-truth study: when does SRMIL win? (``benchmarks/study.py``; a benchmark.)

For each variant of ``srmil synth`` (the signal kind) a base cohort, and from it one knob
varied at a time (:data:`KNOBS`); each cohort at every seed; every model spec trained on the
cohort's one set of patient-level folds through :func:`srmil.api.compare` (so every model of a
cohort sees identical folds). Layout::

    OUT/study.json                           the settings every cell shares (epochs, folds…)
    OUT/cohorts/<cohort>_s<seed>/            the cohort (srmil synth) and its splits.csv
    OUT/runs/<cohort>_s<seed>/<spec>/        one comparison directory per model spec
    OUT/cells/<cohort>_s<seed>/<spec>.json   a finished cell's result, written atomically last
    OUT/study.csv  study_summary.csv  study.md  study.png

Resume: a cell whose json exists is skipped; an interrupted cell continues inside its
comparison directory (``compare --resume``: finished folds are kept, a fold resumes from its
``last.pt``). A model spec added later runs on the same saved folds. Cohorts and folds are
functions of the seed, so a rerun with other models, knobs or seeds reuses what is there; a
rerun with other training settings (``study.json``) is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from srmil.config import (
    SYNTH_VARIANT_DEFAULTS,
    RunConfig,
    SplitConfig,
    StudyConfig,
    SynthConfig,
    TrainConfig,
)
from srmil.errors import ConfigError
from srmil.storage import write_csv, write_json, write_text

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

# knob → what it sets (its base value is the cohort every line of the figure passes through)
KNOBS = {
    "lesion_fraction": "tumour_fraction × this (mixed: the lesion's; sparse: the isolated "
                       "patches')",
    "shift": "tumour_shift × this",
    "bag_size": "most patches per slide (fewest: a third)",
    "dim": "feature dimension",
    "tissue_spread": "norm of the tissue-type offsets (the nuisance)",
}
ORACLES = ("oracle_count_auc", "oracle_arrangement_auc", "oracle_look_auc")
# what every cell of one study directory shares (the grid, models and seeds may grow)
SETTINGS = ("slides", "dim", "bag_size", "folds", "epochs", "accelerator", "bootstrap")


@dataclass(frozen=True)
class Cohort:
    """One cohort of the grid: a variant with at most one knob moved off its base value."""

    variant: str
    knob: str  # "" for the base cohort
    value: float
    seed: int

    @property
    def name(self) -> str:
        """``sparse`` (base) or ``sparse-shift=0.5``, plus ``_s<seed>``."""
        what = self.variant if not self.knob else f"{self.variant}-{self.knob}={self.value:g}"
        return f"{what}_s{self.seed}"


@dataclass(frozen=True)
class StudyResult:
    """What :func:`run_study` did and found.

    Attributes:
        cells: one row per (cohort, seed, model): test AUC mean/std over folds, per-fold AUCs,
            balanced accuracy, training seconds and the cohort's oracle AUCs.
        summary: one row per (variant, knob, value, model): mean ± std over seeds.
        ran: the cells trained by this call (empty when everything was there: resume).
        figure: the figure's path.
    """

    cells: pd.DataFrame
    summary: pd.DataFrame
    ran: list[str]
    figure: Path


def parse_knobs(items: tuple[str, ...]) -> dict[str, list[float]]:
    """``("shift=0.5,1", "dim=16,32")`` → ``{"shift": [0.5, 1.0], "dim": [16.0, 32.0]}``.

    Raises:
        ConfigError: unknown knob or a value that is not a number.
    """
    out: dict[str, list[float]] = {}
    for item in items:
        name, sep, values = (s.strip() for s in item.partition("="))
        if not sep or name not in KNOBS:
            raise ConfigError(f"study knob {item!r}: expected KNOB=v1,v2 with KNOB one of "
                              f"{', '.join(KNOBS)}")
        try:
            out[name] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"study knob {item!r}: values must be numbers") from None
    return out


def base_value(knob: str, cfg: StudyConfig) -> float:
    """The knob's value at the base cohort."""
    return {"lesion_fraction": 1.0, "shift": 1.0, "bag_size": float(cfg.bag_size),
            "dim": float(cfg.dim), "tissue_spread": SynthConfig().tissue_spread}[knob]


def grid(cfg: StudyConfig) -> list[Cohort]:
    """Every cohort of the study: the base of each variant, then each knob's other values,
    for every seed (the base appears once, whatever the knobs)."""
    knobs = parse_knobs(cfg.knobs)
    out = []
    for seed in cfg.seeds:
        for v in cfg.variants:
            out.append(Cohort(v, "", 0.0, seed))
            out += [Cohort(v, k, x, seed) for k, xs in knobs.items() for x in xs
                    if x != base_value(k, cfg)]
    return out


def synth_config(c: Cohort, cfg: StudyConfig) -> SynthConfig:
    """The ``srmil synth`` settings of one cohort of the grid."""
    if c.variant not in SYNTH_VARIANT_DEFAULTS:
        raise ConfigError(f"study variant {c.variant!r}; choose from: "
                          f"{', '.join(v for v in SYNTH_VARIANT_DEFAULTS)}")
    d = SYNTH_VARIANT_DEFAULTS[c.variant]
    val = {k: base_value(k, cfg) for k in KNOBS}
    if c.knob:
        val[c.knob] = c.value
    lo, hi = d["tumour_fraction"]
    f = val["lesion_fraction"]
    size = int(val["bag_size"])
    return SynthConfig(
        variant=c.variant, slides=cfg.slides, dim=int(val["dim"]), seed=c.seed,
        min_patches=max(1, size // 3), max_patches=size,
        tumour_fraction=(min(1.0, lo * f), min(1.0, hi * f)),
        tumour_shift=d["tumour_shift"] * val["shift"], tissue_spread=val["tissue_spread"],
    )


def _cohort_files(c: Cohort, cfg: StudyConfig, out: Path) -> tuple[Path, Path, Path, dict]:
    """Write the cohort and its folds once; (labels, bags, splits.csv, synth summary)."""
    import json

    from srmil import api
    from srmil.bags.synth import ENCODER_NAME, trident_dir

    root = out / "cohorts" / c.name
    scfg = synth_config(c, cfg)
    if not (root / "labels.csv").exists():
        # no labels.csv: nothing or an interrupted write there; labels.csv is written last
        api.synth(root, scfg, overwrite=True)
    summary = json.loads((root / "synth.json").read_text())
    labels = root / "labels.csv"
    bags = root / trident_dir(20, scfg.patch_size) / f"features_{ENCODER_NAME}"
    splits = root / "splits.csv"
    if not splits.exists():
        _, table = api.load_training_cohort(labels, bags, SplitConfig(folds=cfg.folds,
                                                                      seed=c.seed))
        write_csv(splits, table)
    return labels, bags, splits, summary


def _run_cell(c: Cohort, spec: str, cfg: StudyConfig, out: Path, labels: Path, bags: Path,
              splits: Path, oracles: dict) -> dict[str, Any]:
    from srmil import api
    from srmil.training.compare import spec_dir

    cmp_dir = out / "runs" / c.name / spec_dir(spec)
    base = RunConfig(train=TrainConfig(epochs=cfg.epochs, seed=c.seed,
                                       accelerator=cfg.accelerator, bootstrap=cfg.bootstrap),
                     split=SplitConfig(folds=cfg.folds, seed=c.seed))
    t0 = time.time()
    res = api.compare(labels, bags, cmp_dir, [spec], base, splits=splits,
                      resume=(cmp_dir / "compare.json").exists())
    row = res.table.iloc[0]
    return {
        "cohort": c.name, "variant": c.variant, "knob": c.knob, "value": c.value,
        "seed": c.seed, "model": spec, "folds": int(row["folds"]),
        "auc_mean": float(row["auc_mean"]), "auc_std": float(row["auc_std"]),
        "per_fold_auc": str(row["per_fold_auc"]),
        "balanced_accuracy_mean": float(row["balanced_accuracy_mean"]),
        "seconds": round(time.time() - t0, 1), "epochs": cfg.epochs,
        **{k: float(oracles[k]) for k in ORACLES},
    }


def run_study(out: PathLike, cfg: StudyConfig | None = None) -> StudyResult:
    """Run (or resume) the study and write its tables and figure.

    Args:
        out: study directory (see the module docstring for its layout).
        cfg: the grid, the models and the training settings (default: the full study).

    Returns:
        The cells, the summary over seeds, the cells this call trained and the figure path.
    """
    import json

    from srmil.training.compare import parse_spec, spec_dir

    out = Path(out)
    cfg = cfg or StudyConfig()
    for s in cfg.models:
        parse_spec(s)  # unknown names and keys fail before anything runs
    _check_settings(out, cfg)
    cohorts = grid(cfg)
    n_cells = len(cohorts) * len(cfg.models)
    rows, ran = [], []
    for c in cohorts:
        cells_dir = out / "cells" / c.name
        todo = [s for s in cfg.models if not (cells_dir / f"{spec_dir(s)}.json").exists()]
        if todo:
            labels, bags, splits, summary = _cohort_files(c, cfg, out)
        for s in cfg.models:
            path = cells_dir / f"{spec_dir(s)}.json"
            if s in todo:
                log.info("cell %d/%d: %s %s", len(rows) + 1, n_cells, c.name, s)
                row = _run_cell(c, s, cfg, out, labels, bags, splits, summary)
                write_json(path, row)  # atomic, last: a cell that exists is finished
                ran.append(f"{c.name}/{s}")
                log.info("  test AUC %.3f ± %.3f (%.0f s)", row["auc_mean"], row["auc_std"],
                         row["seconds"])
            rows.append(json.loads(path.read_text()))
    cells = pd.DataFrame(rows)
    summary = summarise(cells, cfg)
    write_csv(out / "study.csv", cells, overwrite=True)  # derived from the cells: rewritten
    write_csv(out / "study_summary.csv", summary, overwrite=True)
    write_text(out / "study.md", format_table(summary, cfg), overwrite=True)
    fig = study_figure(summary, cfg, out / "study.png")
    return StudyResult(cells, summary, ran, fig)


def _check_settings(out: Path, cfg: StudyConfig) -> None:
    """Record the study's shared settings in ``OUT/study.json``; refuse other ones there.

    Raises:
        ConfigError: ``out`` holds a study run with other settings (nothing is written).
    """
    import json

    setup = {k: getattr(cfg, k) for k in SETTINGS}
    path = out / "study.json"
    if path.exists():
        saved = json.loads(path.read_text())
        diff = [k for k in SETTINGS if saved.get(k) != setup[k]]
        if diff:
            raise ConfigError("holds a study with other settings ("
                              + ", ".join(f"{k} {saved.get(k)} here, {setup[k]} asked"
                                          for k in diff)
                              + "); choose a new --out (nothing is overwritten)", path)
    else:
        write_json(path, setup)


def summarise(cells: pd.DataFrame, cfg: StudyConfig) -> pd.DataFrame:
    """Mean ± std over seeds (of each seed's fold mean), per (variant, knob, value, model).

    The base cohort of a variant is its row under every knob (value = the knob's base), and
    under knob ``""`` (the variant's base line).
    """
    base = cells[cells.knob == ""]
    parts = [base.assign(knob="", value=np.nan)]
    for k in parse_knobs(cfg.knobs):
        parts.append(base.assign(knob=k, value=base_value(k, cfg)))
        parts.append(cells[cells.knob == k])
    df = pd.concat(parts, ignore_index=True)
    order = {m: i for i, m in enumerate(cfg.models)}
    g = df.groupby(["variant", "knob", "value", "model"], dropna=False, sort=False)
    out = g.agg(auc_mean=("auc_mean", "mean"), auc_std=("auc_mean", lambda x: x.std(ddof=0)),
                seeds=("seed", "nunique"),
                per_seed_auc=("auc_mean", lambda x: " ".join(f"{v:.3f}" for v in x)),
                **{k: (k, "mean") for k in ORACLES}).reset_index()
    out["_m"] = out["model"].map(order)
    out["_v"] = out["variant"].map({v: i for i, v in enumerate(cfg.variants)})
    return out.sort_values(["_v", "knob", "value", "_m"], kind="stable"
                           ).drop(columns=["_m", "_v"]).reset_index(drop=True)


def format_table(summary: pd.DataFrame, cfg: StudyConfig) -> str:
    """Markdown: one row per (variant, knob, value), one column per model (test AUC mean ±
    std over seeds), then the cohort's oracle AUCs (count, arrangement, look)."""
    head = ("| cohort | " + " | ".join(cfg.models) + " | oracle count / arrangement / look |")
    lines = [head, "|" + "---|" * (len(cfg.models) + 2)]
    for (v, k, x), g in summary.groupby(["variant", "knob", "value"], dropna=False,
                                        sort=False):
        if k and x == base_value(k, cfg):
            continue  # the base cohort: its own row already
        name = v if not k else f"{v}, {k} = {x:g}"
        by = g.set_index("model")
        cells = [f"{by.loc[m, 'auc_mean']:.3f} ± {by.loc[m, 'auc_std']:.3f}"
                 if m in by.index else "—" for m in cfg.models]
        r = g.iloc[0]
        orc = " / ".join(f"{r[o]:.2f}" for o in ORACLES)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {orc} |")
    return "\n".join(lines) + "\n"


def log_knob_axis(ax: Any, values: Any) -> None:
    """A log x axis ticked at the knob's own values, labelled plainly (120, 360, 1080): the
    default log ticks would label some minor ticks and overlap."""
    from matplotlib.ticker import NullFormatter

    ticks = sorted({float(v) for v in values})
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def study_figure(summary: pd.DataFrame, cfg: StudyConfig, path: PathLike) -> Path:
    """Test AUC (mean ± std over seeds) against each knob, per model: one row of panels per
    variant, one column per knob (the first column: every variant at its base)."""
    from srmil.reports.figures import save_figure, subplots

    knobs = list(parse_knobs(cfg.knobs))
    variants = [v for v in cfg.variants if v in set(summary.variant)]
    ncols = 1 + len(knobs)
    nrows = max(1, len(variants)) if knobs else 1
    fig, axes = subplots(nrows, ncols, figsize=(max(5.5, 3.6 * ncols), 3.2 * nrows),
                         squeeze=False, layout="constrained")
    base = summary[summary.knob == ""]
    for j, m in enumerate(cfg.models):
        b = base[base.model == m].set_index("variant").reindex(variants)
        xs = np.arange(len(variants)) + (j - (len(cfg.models) - 1) / 2) * 0.08
        axes[0][0].errorbar(xs, b.auc_mean, yerr=b.auc_std, fmt="o", ms=4, capsize=2, label=m)
    ax = axes[0][0]
    ax.set_xticks(range(len(variants)), variants)
    ax.set_title("base cohorts")
    for i in range(1, nrows):
        axes[i][0].axis("off")
    for i, v in enumerate(variants):
        for jk, k in enumerate(knobs):
            ax = axes[i][jk + 1]
            d = summary[(summary.variant == v) & (summary.knob == k)]
            for m in cfg.models:
                e = d[d.model == m].sort_values("value")
                ax.errorbar(e.value, e.auc_mean, yerr=e.auc_std, marker="o", ms=3, capsize=2,
                            label=m)
            ax.set_xlabel(k)
            ax.set_title(v, fontsize=9)
            if k in ("bag_size", "dim"):
                log_knob_axis(ax, d.value)
    for row in axes:
        for ax in row:
            if ax.axison:
                ax.axhline(0.5, color="grey", lw=0.6, ls=":")
                ax.set_ylim(0.3, 1.02)
                ax.set_ylabel("test AUC")
    axes[0][0].legend(fontsize=7, loc="upper right", ncol=2)
    fig.suptitle(f"known-truth study: {cfg.folds}-fold CV, {cfg.epochs} epochs, seeds "
                 f"{','.join(map(str, cfg.seeds))}", fontsize=10)
    return save_figure(fig, path, overwrite=True)


def study_config(cfg: StudyConfig, **changes: Any) -> StudyConfig:
    """``cfg`` with the given fields replaced (``None`` values are left alone)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
