"""``srmil report``: one self-contained HTML page about a run.

``RUN/report/index.html`` embeds every image (base64 PNG), so the one file can be mailed or
archived; the PNGs also lie beside it (``figures/``, ``heatmaps/``) for slides and papers.
Sections: summary (mean ± std, 95 % CI), per-fold metrics, per-class recall and precision,
class map, ROC and PR curves per fold, confusion matrix, calibration (ECE, Brier, before and
after temperature scaling, reliability diagrams per fold and pooled), training curves,
configuration, and a gallery of the heatmaps of the test slides at both ends of a ranking
(classification: confidence = the predicted class's probability; survival: predicted risk;
regression: predicted value; each slide drawn with the fold model whose test split held it).
Survival runs add Kaplan–Meier curves of the risk groups and calibration at a horizon;
regression runs the predicted-vs-true scatter. A patient-level run's rows are cases, and its
gallery shows each case's slides, scored together as the case's bag.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from srmil.config import HeatmapConfig
from srmil.errors import SrmilError
from srmil.storage import write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1150px;color:#222;line-height:1.4;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;
padding-bottom:.2rem;margin-top:2rem}.meta{color:#666;font-size:.9rem}
table{border-collapse:collapse;font-size:.88rem;margin:.5rem 0;display:block;max-width:100%;
overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:1rem}.figs figure{margin:0;flex:1 1 45%;min-width:320px}
.figs img{width:100%}
img{max-width:100%;height:auto;border:1px solid #eee}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:1rem}
.card{border:1px solid #ddd;border-radius:6px;padding:.5rem;font-size:.85rem}
.ok{color:#1a7f37}.wrong{color:#c62828}pre{background:#f7f7f7;padding:.8rem;overflow:auto;
font-size:.8rem}.note{color:#8a5a00}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):  # keeps each column's type (ints stay ints)
        cells = []
        for v in row:
            if isinstance(v, float | np.floating):
                txt = "–" if np.isnan(v) else floatfmt.format(v)
            else:
                txt = str(v)
            cells.append(f"<td>{html.escape(txt)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _probs(t: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return t[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)


RANKINGS = {  # task → (what ranks the gallery, the titles of its two ends)
    "classification": ("confidence", ("Most confident test {u}", "Least confident test {u}")),
    "survival": ("risk", ("Highest predicted risk (test {u})", "Lowest predicted risk (test {u})")),
    "regression": ("value", ("Highest predicted value (test {u})",
                             "Lowest predicted value (test {u})")),
}


def gallery_ranking(tests: dict[int, pd.DataFrame], classes: list[str], k: int,
                    task: str = "classification") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``k`` test rows (slides, or a patient-level run's cases) at each end of a ranking
    over all folds: classification by confidence (the predicted class's probability),
    survival by predicted risk, regression by predicted value.

    Returns:
        Two tables (top first, then bottom, the most extreme first), columns ``id, slides``
        (the row's slide ids), ``fold, label, pred, score, correct`` (``None`` unless
        classification).
    """
    rows = []
    for f, t in tests.items():
        ids = t["case_id"] if "case_id" in t and "slide_id" not in t else t["slide_id"]
        slides = (t["slides"].astype(str).str.split(";") if "slides" in t
                  else ids.map(lambda s: [s]))
        p = _probs(t, classes) if task == "classification" else None
        for i, rid in enumerate(ids):
            row: dict[str, Any] = {"id": str(rid), "slides": list(slides.iloc[i]), "fold": f}
            if p is not None:
                c = int(p[i].argmax())
                row.update(label=str(t["label"].iloc[i]), pred=classes[c],
                           score=float(p[i, c]), correct=bool(t["label"].iloc[i] == classes[c]))
            elif task == "survival":
                seen = "event" if int(t["event"].iloc[i]) else "censored"
                row.update(label=f"time {float(t['time'].iloc[i]):.3g} ({seen})",
                           pred=f"risk {float(t['risk'].iloc[i]):.3g}",
                           score=float(t["risk"].iloc[i]), correct=None)
            else:
                row.update(label=f"target {float(t['target'].iloc[i]):.3g}",
                           pred=f"{float(t['pred'].iloc[i]):.3g}",
                           score=float(t["pred"].iloc[i]), correct=None)
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty or k <= 0:
        return df.head(0), df.head(0)
    df = df.sort_values(["score", "id"], ascending=[False, True])
    top = df.head(k)
    bottom = df[~df["id"].isin(top["id"])].tail(k).iloc[::-1]
    return top.reset_index(drop=True), bottom.reset_index(drop=True)


def _gallery(run: Path, out: Path, bags: Path | None, picks: list[pd.DataFrame],
             overwrite: bool, titles: tuple[str, str], task: str = "classification") -> str:
    ids = [s for t in picks for sl in t["slides"] for s in sl]
    if not ids:
        return "<p>No test slides.</p>"
    if bags is None or not bags.exists():
        return (f'<p class="note">Bags not found at {html.escape(str(bags))}: no heatmaps '
                "(pass --bags).</p>")
    from srmil.reports.slide_heatmaps import heatmap_run

    cfg = replace(HeatmapConfig(), geojson=False, max_side=700)
    try:
        results = heatmap_run(run, bags, out / "heatmaps", slide_ids=ids, cfg=cfg,
                              overwrite=overwrite, progress=False)
    except SrmilError as exc:
        return f'<p class="note">No heatmaps: {html.escape(str(exc))}</p>'
    status = {r.slide_id: r for r in results}
    parts = []
    for title, t in zip(titles, picks, strict=True):
        cards = []
        for _, r in t.iterrows():
            bodies = []
            for sid in r["slides"]:
                res = status.get(sid)
                png = out / "heatmaps" / sid / "heatmap.png"
                if png.exists() and (res is None or res.status != "failed"):
                    bodies.append(_img(png, f"heatmap of {sid}"))
                else:
                    err = res.error if res is not None else "not drawn"
                    bodies.append(f'<p class="note">{html.escape(sid)}: {html.escape(err)}</p>')
            who = f"<b>{html.escape(r['id'])}</b>"
            if r["slides"] != [r["id"]]:  # a case: name its slides
                who = (f"case {who}, slide(s) "
                       f"{html.escape(', '.join(r['slides']))}")
            if task == "classification":
                verdict = ('<span class="ok">correct</span>' if r["correct"]
                           else '<span class="wrong">wrong</span>')
                cap = (f"{who} (fold {r['fold']}): label {html.escape(r['label'])}, predicted "
                       f"{html.escape(r['pred'])} (p = {r['score']:.2f}), {verdict}")
            else:
                cap = (f"{who} (fold {r['fold']}): {html.escape(r['label'])}, predicted "
                       f"{html.escape(r['pred'])}")
            cards.append(f'<div class="card">{"".join(bodies)}<div>{cap}</div></div>')
        parts.append(f"<h3>{title}</h3><div class=\"gallery\">{''.join(cards)}</div>")
    return "".join(parts)


def _task_sections(rd: Any, tests: dict[int, pd.DataFrame], figs: Path, task: str
                   ) -> list[str]:
    """Survival: Kaplan–Meier curves of the test patients split at their fold's training
    median risk, log-rank p, and calibration at a horizon (quantile groups of predicted
    survival against their Kaplan–Meier estimate, per fold and pooled). Regression: predicted
    vs true."""
    from srmil.reports.task_figures import (
        km_figure,
        risk_groups,
        scatter_figure,
        survival_calibration,
        survival_calibration_figure,
    )

    if not tests:
        return []
    unit = "cases" if "case_id" in next(iter(tests.values())) else "slides"
    if task == "regression":
        png = scatter_figure(tests, figs / "scatter.png", unit=unit)
        return [f"<h2>Predicted vs true (test {unit}, per fold)</h2>"
                + _img(png, "predicted vs true target")]
    cuts = {k: float(m["train_risk_median"]) for k in tests
            if (m := rd.metrics(k)) is not None and "train_risk_median" in m}
    groups = risk_groups(tests, cuts)
    png, p = km_figure(groups, figs / "km.png")
    ptxt = "–" if np.isnan(p) else f"{p:.3g}"
    ids = "case_id" if "case_id" in groups else "slide_id"
    counts = groups.groupby("group").agg(patients=(ids, "size"),
                                         events=("event", "sum")).reset_index()
    out = ["<h2>Kaplan–Meier curves of the risk groups (test, pooled)</h2><p>Each fold's test "
           f"{unit} split at the median predicted risk of that fold's training split "
           f"(high above it); log-rank p = {ptxt}.</p>" + _img(png, "Kaplan-Meier curves")
           + _table(counts)]
    states = {k: rd.task_state(k) for k in tests}
    if all(states.values()):
        from srmil.tasks import task_of_state

        fitted = {k: task_of_state(st, []) for k, st in states.items()}
        # the middle of each fold's horizons (default: the median training event time)
        horizon = float(np.median([np.median(t.horizons) for t in fitted.values()
                                   if len(t.horizons)] or [np.nan]))
        if np.isfinite(horizon):
            frame = pd.concat([pd.DataFrame({
                "fold": k, "time": t["time"].astype(float), "event": t["event"].astype(int),
                "predicted": fitted[k].survival_at(fitted[k].outputs_of(t),
                                                   np.array([horizon]))[:, 0]})
                for k, t in tests.items()], ignore_index=True)
            cal = survival_calibration(frame, horizon)
            fig = survival_calibration_figure(cal, horizon, figs / "survival_calibration.png")
            counted = ("" if unit == "cases" else ": a patient's slides share its outcome "
                       "and count once each")
            out.append(f"<h2>Calibration at t = {horizon:.3g}</h2><p>Predicted survival at "
                       "t (the middle of the folds' horizons: by default the median event "
                       "time of the training splits), read from each model's per-bin survival "
                       f"columns, against the Kaplan–Meier estimate of the test {unit} (95 % "
                       "CI, Greenwood): each fold's test set and all of them pooled, cut into "
                       "groups of equal size by predicted survival (group 1 = lowest; up to "
                       f"4, at least 5 per group; n counts test {unit}{counted}). On the "
                       "diagonal, the predictions mean what they say; – where t lies beyond a "
                       "group's follow-up.</p>"
                       + _img(fig, "survival calibration per fold and pooled")
                       + _table(cal))
    return out


def _per_class_section(fold_metrics: dict[int, dict[str, Any]], classes: list[str]) -> str:
    """Test recall and precision of each class, per fold (from ``metrics.json``)."""
    rows = []
    for k, m in fold_metrics.items():
        t = m.get("test", {})
        if "recall_per_class" not in t:
            continue
        row: dict[str, Any] = {"fold": k}
        for c, name in enumerate(classes):
            row[f"recall {name}"] = t["recall_per_class"][c]
            row[f"precision {name}"] = t["precision_per_class"][c]
        rows.append(row)
    if not rows:
        return ""
    return ("<h2>Per-class recall and precision (test)</h2><p>Recall = share of the class's "
            "slides predicted as it; precision = share of the slides predicted as the class "
            "that are it (0 when none is).</p>" + _table(pd.DataFrame(rows)))


def _calibration_section(rd: Any, tests: dict[int, pd.DataFrame],
                         fold_metrics: dict[int, dict[str, Any]], classes: list[str],
                         figs: Path) -> str:
    """ECE / adaptive ECE / Brier per fold (before and after temperature scaling when the run
    calibrates) and the reliability diagrams per fold and pooled."""
    from srmil.reports.figures import reliability_figure
    from srmil.training.calibration import apply_temperature, calibration_metrics

    rows, curves = [], {}
    pooled: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    for k, t in tests.items():
        y, p = t["target"].to_numpy(), _probs(t, classes)
        temp = fold_metrics.get(k, {}).get("temperature")
        # predictions.csv holds the scaled probabilities; T⁻¹ undoes the scaling exactly
        before = None if temp is None else apply_temperature(p, 1.0 / temp)
        row: dict[str, Any] = {"fold": k}
        if temp is not None:
            row["temperature"] = temp
            row.update({f"{n} before": v for n, v in calibration_metrics(y, before).items()})
        row.update(calibration_metrics(y, p))
        rows.append(row)
        curves[f"fold {k}"] = (y, p, before)
        pooled.append((y, p, before))
    if not rows:
        return ""
    has_before = all(b is not None for _, _, b in pooled)
    curves["pooled"] = (np.concatenate([y for y, _, _ in pooled]),
                        np.concatenate([p for _, p, _ in pooled]),
                        np.concatenate([b for _, _, b in pooled]) if has_before else None)
    fig = reliability_figure(curves, figs / "reliability.png")
    note = (" Temperature scaling was fitted on each fold's validation split "
            "(<code>train.calibrate temperature</code>); <i>before</i> = the model's own "
            "probabilities." if has_before else "")
    return ("<h2>Calibration (test)</h2><p>ECE: expected calibration error over 15 "
            "equal-width confidence bins; adaptive: 15 equal-mass bins; Brier: multi-class "
            "Brier score (lower is better for all three)." + note + "</p>"
            + _table(pd.DataFrame(rows)) + _img(fig, "reliability diagrams"))


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                 bags: str | os.PathLike | None = None, gallery: int = 3,
                 overwrite: bool = False) -> Path:
    """Write the run's report; returns the HTML file.

    Args:
        run_dir: the run directory.
        out: report directory (default ``RUN/report``).
        bags: bags for the gallery's heatmaps (default: ``data.json``'s features directory).
        gallery: slides at each end of the confidence ranking (0: no gallery).
        overwrite: replace an existing report.

    Raises:
        SrmilError: not a run, no fold with predictions yet, or a report already there.
    """
    from srmil.reports.figures import confusion_figure, history_figure, pr_figure
    from srmil.reports.roc import roc_figure
    from srmil.training.rundir import RunDir

    rd = RunDir(run_dir).require()
    run = rd.path
    classes: list[str] = rd.classes()
    cfg: dict[str, Any] = rd.config_dict()
    out = Path(out) if out is not None else run / "report"
    page = out / "index.html"
    if page.exists() and not overwrite:
        raise SrmilError("already exists; pass --overwrite to replace it", page)
    tables = rd.predictions()
    if not tables:
        raise SrmilError("no fold has predictions.csv yet: nothing to report", run)
    tests = {k: t[t["split"] == "test"].reset_index(drop=True) for k, t in tables.items()}
    tests = {k: t for k, t in tests.items() if len(t)}
    figs = out / "figures"
    sections: list[str] = []
    patient = (cfg.get("data") or {}).get("bag_level") == "patient"
    unit = "cases" if patient else "slides"
    if patient:
        sections.append("<h2>Bags: one per patient</h2><p>This run predicts <b>cases</b> "
                        "(<code>data.bag_level patient</code>): every slide of a case forms "
                        "one bag (features side by side, each slide keeping its own graph), so "
                        "predictions, metrics and model selection are per case and the "
                        "bootstrap resamples cases. Heatmaps stay per slide.</p>")

    # summary and per-fold metrics
    s = rd.summary()
    if s is not None:
        rows = [{"metric": m, "mean": e.get("mean", np.nan), "std": e.get("std", np.nan),
                 "95% CI": ("–" if not e.get("ci95") or np.isnan(e["ci95"][0])
                            else f"[{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]")}
                for m, e in s.get("metrics", {}).items()]
        sections.append("<h2>Summary</h2><p>Test split of each fold; mean ± std over folds; "
                        f"95 % bootstrap CI of the mean over folds ({unit} resampled within each "
                        "fold's test set).</p>" + _table(pd.DataFrame(rows)))
    else:
        sections.append('<h2>Summary</h2><p class="note">No summary.json: the run is not '
                        "finished; the figures below use the folds that have predictions.</p>")
    per_fold = rd.summary_table()
    if per_fold is not None:
        sections.append("<h2>Per-fold metrics</h2>" + _table(per_fold))
    fold_metrics = {k: m for k in sorted(tests) if (m := rd.metrics(k)) is not None}
    task = cfg.get("task", "classification")
    if task not in ("survival", "regression"):
        sections.append(_per_class_section(fold_metrics, classes))
    if task in ("survival", "regression"):
        sections += _task_sections(rd, tests, figs, task)

    # class map
    counts = pd.concat(tests.values())["label"].value_counts() if tests and task not in (
        "survival", "regression") else pd.Series()
    cmap_rows = pd.DataFrame({"index": range(len(classes)), "class": classes,
                              f"test {unit} (all folds)": [int(counts.get(c, 0))
                                                          for c in classes]})
    if task not in ("survival", "regression"):
        sections.append("<h2>Class map</h2><p>Class index = sorted label order (classes.json); "
                        "<code>prob_&lt;class&gt;</code> columns follow it.</p>"
                        + _table(cmap_rows))

    # curves
    curves = {f"fold {k}": (t["target"].to_numpy(), _probs(t, classes))
              for k, t in tests.items()} if task not in ("survival", "regression") else {}
    imgs = []
    if curves:
        pos = f" (positive: {classes[1]})" if len(classes) == 2 else " (micro-average)"
        roc = roc_figure(curves, figs / "roc.png", title=f"Test ROC per fold{pos}")
        pr = pr_figure(curves, figs / "pr.png", title=f"Test precision-recall per fold{pos}")
        pooled = pd.concat(tests.values(), ignore_index=True)
        y = pooled["target"].to_numpy()
        pred = _probs(pooled, classes).argmax(axis=1)
        cm = confusion_figure(y, pred, classes, figs / "confusion.png")
        imgs += [(roc, "ROC curves per fold"), (pr, "precision-recall curves per fold"),
                 (cm, "confusion matrix")]
        sections.append("<h2>ROC and precision-recall (test, per fold)</h2><div class=\"figs\">"
                        + "".join(f"<figure>{_img(p, a)}</figure>" for p, a in imgs[:2])
                        + "</div><h2>Confusion matrix (test, pooled)</h2>"
                        + _img(cm, "confusion matrix"))
        sections.append(_calibration_section(rd, tests, fold_metrics, classes, figs))
    histories = {k: h for k in tables if (h := rd.history(k)) is not None}
    if histories:
        best = {k: int(m["best_epoch"]) for k in histories if (m := rd.metrics(k)) is not None}
        hist = history_figure(histories, figs / "training.png", best)
        sections.append("<h2>Training curves</h2><p>Loss parts per epoch (mean over the "
                        "training bags), validation loss and metrics.</p>"
                        + _img(hist, "training curves"))

    # gallery
    if gallery > 0 and tests:
        rank, ends = RANKINGS.get(task, RANKINGS["classification"])
        titles = (ends[0].format(u=unit), ends[1].format(u=unit))
        top, bottom = gallery_ranking(tests, classes, gallery, task)
        bag_dir = Path(bags) if bags is not None else (
            Path(rd.data()["features"]) if rd.data().get("features") else None)
        what = ("of the predicted class" if task == "classification"
                else "of the risk" if task == "survival" else "of the predicted value")
        per_case = (" The run predicts cases: each case's slides were scored together, as "
                    "one bag, and each slide is drawn with its own patches' scores."
                    if patient else "")
        sections.append(f"<h2>Heatmaps: test {unit} ranked by {rank}</h2><p>Per-patch "
                        f"scores (attention, or gradient × input {what} for models without "
                        "attention) of the fold model whose test split held the slide, "
                        f"colour = rank percentile within the slide.{per_case}</p>"
                        + _gallery(run, out, bag_dir, [top, bottom], overwrite, titles, task))

    sections.append("<h2>Configuration</h2><pre>"
                    + html.escape(json.dumps(cfg, indent=2), quote=False)
                    + "</pre>")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"<h1>srmil run report: {html.escape(run.resolve().name)}</h1>"
            f"<p class=\"meta\">model <b>{html.escape(str(cfg.get('model')))}</b> · "
            f"{len(tables)} fold(s) · {html.escape(task)}"
            f"{' per patient' if patient else ''}"
            + (f" · classes {html.escape(', '.join(classes))}"
               if task not in ("survival", "regression")
               else "")
            + " · srmil "
            f"{html.escape(str(cfg.get('version', '?')))} · written {now}<br>"
            f"run: {html.escape(str(run.resolve()))}</p>")
    doc = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
           f"<title>srmil report: {html.escape(run.resolve().name)}</title>"
           f"<link rel=\"icon\" href=\"data:,\"><style>{CSS}</style></head><body>"
           + head + "".join(sections) + "</body></html>\n")
    return write_text(page, doc, overwrite=overwrite)
