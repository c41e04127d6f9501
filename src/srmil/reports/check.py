"""``srmil check``: read every bag of a cohort once and report what a run would trip on."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from srmil.bags.cohort import Cohort, load_cohort
from srmil.bags.readers import find_bags, read_bag
from srmil.bags.splits import fold_problems
from srmil.config import GraphConfig
from srmil.errors import Problem, SrmilError
from srmil.graphs.grid import build_graph


@dataclass
class CheckReport:
    """Per-slide facts and every problem found."""

    table: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    cohort: Cohort | None = None

    @property
    def ok(self) -> bool:
        return not any(p.is_error for p in self.problems)


def _slide_row(path: Path, cfg: GraphConfig, problems: list[Problem]) -> dict:
    row: dict = {"path": str(path)}
    try:
        bag = read_bag(path)
    except SrmilError as exc:
        problems.append(Problem("error", exc.problem, exc.path))
        row["status"] = "unreadable"
        return row
    row.update(
        reader=bag.reader, patches=bag.n_patches, dim=bag.dim, dtype=str(bag.features.dtype)
    )
    content = bag.problems()
    problems.extend(content)
    if bag.coords is None:
        problems.append(Problem(
            "warning", "no coordinates: only models without a graph can use this bag", path
        ))
        row.update(step_source="none", status="no coords")
        return row
    if any(p.is_error for p in content):
        row["status"] = "bad"
        return row
    g = build_graph(bag, cfg)
    problems.extend(g.problems)
    deg = g.degrees()
    row.update(
        step=g.step, step_source=g.step_source, builder=g.builder, off_grid=g.off_grid,
        degree_min=int(deg.min()), degree_median=float(np.median(deg)),
        degree_max=int(deg.max()), isolated=int((deg == 0).sum()), status="ok",
    )
    return row


def check(
    features: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    folds: int | None = 5,
    cfg: GraphConfig = GraphConfig(),
    progress: bool = True,
) -> CheckReport:
    """Validate a cohort (or a features directory / single bag without labels).

    Args:
        features: directory of bags, or one bag file.
        labels: labels CSV; without it only the bags are checked.
        folds: check that every class has enough cases for this many folds (None: skip).
        cfg: graph settings used for step inference and degree statistics.
        progress: show a progress bar on stderr.
    """
    problems: list[Problem] = []
    cohort = None
    if labels is not None:
        cohort = load_cohort(labels, features)
        problems.extend(cohort.problems())
        paths = [Path(p) for p in cohort.slides["path"]]
        ids = cohort.slides["slide_id"].tolist()
        if folds is not None and not cohort.slides.empty:
            problems.extend(fold_problems(cohort.slides, folds, str(labels)))
    else:
        bags = find_bags(features)
        ids, paths = list(bags), list(bags.values())
    rows = []
    for sid, path in tqdm(list(zip(ids, paths, strict=True)), desc="check", unit="bag",
                          disable=None if progress else True, leave=False):
        rows.append({"slide_id": sid, **_slide_row(path, cfg, problems)})
    table = pd.DataFrame(rows)
    if cohort is not None and not table.empty:
        table.insert(1, "label", cohort.slides["label"].to_numpy())
    if "dim" in table and table["dim"].notna().any():
        dims = table["dim"].dropna().astype(int)
        common = Counter(dims).most_common(1)[0][0]
        for _, r in table[table["dim"].notna() & (table["dim"] != common)].iterrows():
            problems.append(Problem(
                "error",
                f"feature dimension {int(r['dim'])} differs from the cohort's {common} "
                "(most bags)",
                r["path"],
            ))
    return CheckReport(table, problems, cohort)


def _span(values: pd.Series) -> str:
    v = values.dropna()
    if v.empty:
        return "n/a"
    return f"min {v.min():g}  median {v.median():g}  max {v.max():g}"


def format_report(rep: CheckReport, max_rows: int = 30, verbose: bool = False) -> str:
    """Human summary: matching, classes, patches, dims, steps, degrees and problems."""
    t = rep.table
    lines = []
    if rep.cohort is not None:
        c = rep.cohort
        lines.append(
            f"slides     {len(c.slides)} matched, {len(c.missing)} labelled without a bag, "
            f"{len(c.unlabelled)} bags without a label"
        )
        lines.append(f"cases      {c.slides['case_id'].nunique()}")
        counts = c.case_counts()
        lines.append("classes    " + "   ".join(
            f"{i}={name}: {int(counts.loc[name, 'slides'])} slides / "
            f"{int(counts.loc[name, 'cases'])} cases" for i, name in enumerate(c.classes)
        ) + "   (index = sorted label order)")
    else:
        lines.append(f"bags       {len(t)}")
    if not t.empty and "patches" in t:
        lines.append(f"patches    {_span(t['patches'])}  (total {int(t['patches'].sum()):,})")
        dims = Counter(t["dim"].dropna().astype(int))
        dtypes = Counter(t["dtype"].dropna())
        lines.append(
            "features   D = " + ", ".join(f"{d} ({n} bags)" for d, n in dims.most_common())
            + "; on disk " + ", ".join(f"{k} ({n})" for k, n in dtypes.most_common())
        )
        if "reader" in t:
            lines.append("readers    " + ", ".join(
                f"{k} ({n})" for k, n in Counter(t["reader"].dropna()).most_common()))
    if "step" in t and t["step"].notna().any():
        known = t[t["step"].notna()]
        groups = Counter(zip(known["step"], known["step_source"], strict=True))
        lines.append("step       " + "; ".join(
            f"{s:g} from {src} ({n} slides)" for (s, src), n in sorted(groups.items())))
        lines.append(
            f"graph      degree (neighbours, window 2) {_span(t['degree_median'])} per-slide "
            f"median; overall min {int(t['degree_min'].min())}, max {int(t['degree_max'].max())};"
            f" isolated patches {int(t['isolated'].sum())}"
        )
    if not t.empty and (verbose or len(t) <= max_rows):
        cols = [c for c in ("slide_id", "label", "reader", "patches", "dim", "step",
                            "step_source", "degree_median", "isolated", "status") if c in t]
        lines.append("")
        lines.append(t[cols].to_string(index=False, na_rep="-"))
    elif not t.empty:
        lines.append(f"(per-slide table of {len(t)} slides: --verbose or --table FILE.csv)")
    lines.append("")
    errors = [p for p in rep.problems if p.is_error]
    warnings = [p for p in rep.problems if not p.is_error]
    if not rep.problems:
        lines.append("problems   none")
    else:
        lines.append(f"problems   {len(errors)} error(s), {len(warnings)} warning(s)")
        lines.extend(f"  {p}" for p in errors + warnings)
    verdict = "ready to train" if rep.ok else "NOT ready: fix the errors above"
    lines.append(f"verdict    {verdict}")
    return "\n".join(lines)
