"""Applying a trained run: ``predict`` (new bags) and ``evaluate`` (labelled bags)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from srmil.api.results import EvaluateResult, PredictResult
from srmil.errors import SrmilError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def _labelled(columns: list[str], task: str, source: PathLike) -> bool:
    """Whether a CSV's columns hold the ``task``'s labels (else it only maps slides to cases)."""
    from srmil.bags.cohort import label_task

    return label_task(columns, "auto", source) == task and (task != "classification"
                                                            or "label" in columns)


def _columns(path: PathLike) -> list[str]:
    """A CSV's column names (none when it cannot be read: its reader then says why)."""
    import pandas as pd

    try:
        return [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
    except (OSError, ValueError):  # pandas' parser errors are ValueErrors
        return []


def metrics_path(out: PathLike) -> Path:
    """Where :func:`predict` writes the metrics beside its CSV: ``<stem>.metrics.json``."""
    out = Path(out)
    return out.with_name(out.stem + ".metrics.json")


def predict(run: PathLike, bags: PathLike, out: PathLike | None = None, fold: int | None = None,
            overwrite: bool = False, labels: PathLike | None = None) -> PredictResult:
    """Class probabilities per slide (per case for a patient-level run) with a run's selected
    model(s).

    With several finished folds the probabilities are averaged over the folds' models (an
    ensemble) unless ``fold`` picks one. A run trained with ``train.calibrate temperature``
    applies each fold's temperature to its model's probabilities first.

    ``labels`` is a CSV with ``slide_id`` and usually ``case_id``: only its slides are
    predicted, and a patient-level run (``data.bag_level patient``) predicts its cases, one row
    per case with the case's slides (as training does). When it also has the run's label
    columns (``label``; ``time, event``; ``target``) the predictions are scored: the metrics
    of the ensemble per slide, or per case for a patient-level run.

    Args:
        run: the run directory (:func:`srmil.api.train` / :func:`srmil.api.cv`).
        bags: directory of bags, or one bag file.
        out: CSV to write (``None``: nothing written); with labels, the metrics go beside it
            (:func:`metrics_path`).
        fold: use this fold's model only.
        overwrite: replace an existing ``out``.
        labels: slide → case table, labelled or not (default: every bag on its own).

    Returns:
        The table ``slide_id, folds, pred, prob_<class>…`` (S rows; patient-level: ``case_id,
        slides, folds, …``, one per case; with labels the target columns too; survival: ``risk,
        surv_bin<k>…``, each fold's model on its own time bins, averaged; regression: ``pred``
        in the target's units), the folds used, the CSV, and the metrics when labelled.
    """
    import numpy as np
    import pandas as pd

    from srmil.bags.cohort import load_cohort, read_cases
    from srmil.bags.readers import find_bags
    from srmil.storage import write_csv, write_json
    from srmil.tasks import ClassificationTask
    from srmil.training.calibration import apply_temperature, scored
    from srmil.training.data import BagDataset, patient_dataset, require_one_label_per_case
    from srmil.training.inference import ensemble
    from srmil.training.loop import predict_proba, prediction_table
    from srmil.training.rundir import RunDir

    if out is not None and Path(out).exists() and not overwrite:  # before any model runs
        raise SrmilError("already exists; refusing to overwrite it (overwrite=True replaces "
                         "it)", out)
    rd = RunDir(run).require()
    cfg = rd.config()
    task_name = cfg.task if cfg.task != "auto" else "classification"  # saved runs resolve it
    labelled = labels is not None and _labelled(_columns(labels), task_name, labels)
    if labelled and out is not None and metrics_path(out).exists() and not overwrite:
        raise SrmilError("already exists; refusing to overwrite it (overwrite=True replaces "
                         "it)", metrics_path(out))
    models = rd.models(fold)
    classes = rd.classes()
    nets = [net for _, net in models]
    patient = cfg.data.bag_level == "patient"
    found = find_bags(bags)
    if labels is None:
        if patient:
            log.warning("a patient-level run, but no labels CSV: each bag is predicted as a "
                        "case of its own (a labels CSV with slide_id,case_id predicts cases)")
        rows = pd.DataFrame({"slide_id": list(found), "case_id": list(found)})
        targets = None
    else:
        if labelled:
            cohort = load_cohort(labels, bags, classes=classes, task=task_name,
                                 strata=cfg.regression.strata)
            rows, missing = cohort.slides, cohort.missing
            if patient:
                require_one_label_per_case(rows, labels)
            targets = rows["target"].tolist()
        else:
            table = read_cases(labels)
            rows = table[table.slide_id.isin(found)].reset_index(drop=True)
            missing = sorted(set(table.slide_id) - set(found))
            targets = None
        extra = len(set(found) - set(rows.slide_id))
        if missing and not Path(bags).is_file():
            log.warning("%d slide(s) of %s have no bag in %s (e.g. %s): not predicted",
                        len(missing), Path(labels).name, bags, ", ".join(missing[:3]))
        if extra:
            log.warning("%d bag(s) in %s have no row in %s: not predicted", extra, bags,
                        Path(labels).name)
        if rows.empty:
            raise SrmilError(f"no slide of the labels CSV has a bag in {bags}", labels)
    ids = rows["slide_id"].tolist()
    if labelled and rd.splits_path.exists():
        splits = rd.splits()
        seen = set(splits.loc[splits.split.isin(["train", "val"]), "slide_id"]) & set(ids)
        if seen:
            log.warning("%d of %d slides were in this run's train/val splits: the metrics are "
                        "not an external validation (srmil evaluate re-tests each fold on its "
                        "own test split)", len(seen), len(ids))
    slides = BagDataset([found[s] for s in ids], ids, targets, rd.graph_config(),
                        nets[0].uses_graph, nets[0].in_dim, cache=len(nets) > 1)
    data = patient_dataset(slides, rows[["slide_id", "case_id"]]) if (
        patient and labels is not None) else slides
    raw = [(k, predict_proba(net, data)[0]) for k, net in models]
    probs = ensemble([apply_temperature(r, rd.temperature(k)) for k, r in raw])
    # (S, C) or the task's outputs (T = 1 there)
    table = prediction_table(data, probs, classes, task=nets[0].task)
    folds = [k for k, _ in models]
    table.insert(2 if "slides" in table else 1, "folds", ",".join(str(k) for k in folds))
    metrics = None
    if labelled:
        task = nets[0].task or ClassificationTask(classes)
        metrics = task.metrics(data.targets, probs)
        if task.name == "classification":
            uncal = ensemble([r for _, r in raw]) if any(
                rd.temperature(k) != 1.0 for k, _ in raw) else None
            metrics.update(scored(np.asarray(data.targets), probs, uncal))
        metrics["unit"] = "case" if patient else "slide"
    path = mpath = None
    if out is not None:
        path = write_csv(out, table, overwrite=overwrite)
        if metrics is not None:
            mpath = write_json(metrics_path(out), metrics, overwrite=overwrite)
    what = "case(s)" if hasattr(data, "members") else "slide(s)"
    log.info("%d %s%s (%d model(s) averaged)", len(table), what,
             f" → {out}" if out is not None else "", len(nets))
    return PredictResult(table, folds, path, metrics, mpath)


def evaluate(run: PathLike, labels: PathLike | None = None, bags: PathLike | None = None,
             out: PathLike | None = None) -> EvaluateResult:
    """Re-test a run's selected models: on its own test splits, or on a labelled cohort.

    Args:
        run: the run directory.
        labels: labels CSV of an external cohort (with ``bags``); default: each fold's own
            test split of the run's cohort.
        bags: bags of the external cohort.
        out: new directory for ``metrics.json`` and ``predictions.csv`` (``None``: none).

    A patient-level run (``data.bag_level patient``) is evaluated per case. Probabilities are
    temperature-scaled when the run calibrates; the metrics then hold the
    calibration before scaling too (``uncalibrated``).

    Returns:
        Metrics per fold (and of the fold ensemble on an external cohort), the predictions,
        and warnings (e.g. slides of the "external" cohort that the run trained on).
    """
    import numpy as np
    import pandas as pd

    from srmil.bags.cohort import load_cohort
    from srmil.storage import write_csv, write_json
    from srmil.tasks import ClassificationTask
    from srmil.training.calibration import apply_temperature, scored
    from srmil.training.data import BagDataset, patient_dataset, require_one_label_per_case
    from srmil.training.inference import ensemble
    from srmil.training.loop import predict_proba, prediction_table
    from srmil.training.rundir import RunDir

    if (labels is None) != (bags is None):
        raise SrmilError("--labels and --bags go together")
    if out is not None and Path(out).exists() and any(Path(out).iterdir()):
        raise SrmilError("is not empty; choose a new --out", out)
    rd = RunDir(run).require()
    models = rd.models()
    classes = rd.classes()
    external = labels is not None
    labels = labels or rd.data().get("labels")
    bags = bags or rd.data().get("features")
    if not labels or not bags:
        raise SrmilError("the run does not record its data; give --labels and --bags", run)
    task_name = rd.config().task
    cohort = load_cohort(labels, bags, classes=classes, task=task_name,
                         strata=rd.config().regression.strata)
    patient = rd.config().data.bag_level == "patient"  # cases as bags, as the run trained
    if patient:
        require_one_label_per_case(cohort.slides, labels)
    splits = rd.splits()
    warnings: list[str] = []
    if external:
        seen = set(splits.loc[splits.split.isin(["train", "val"]), "slide_id"])
        inside = sorted(seen & set(cohort.slides["slide_id"]))
        if inside:
            warnings.append(f"{len(inside)} of {len(cohort.slides)} slides (e.g. {inside[0]}) "
                            "were in this run's train/val splits: the metrics are not an "
                            "external validation")
            log.warning("%s", warnings[-1])
    results, tables, probs_all = {}, [], []
    rows = cohort.slides.set_index("slide_id")
    net0 = models[0][1]
    pool = BagDataset(rows["path"].tolist(), rows.index.tolist(), rows["target"].tolist(),
                      rd.graph_config(), net0.uses_graph, net0.in_dim)  # each bag read once
    for k, net in models:
        if external:
            ids = rows.index.tolist()
        else:
            ids = splits.loc[(splits.fold == k) & (splits.split == "test"), "slide_id"].tolist()
            ids = [s for s in ids if s in rows.index]
        if not ids:
            raise SrmilError(f"fold {k}: no slide to evaluate", run)
        data = (patient_dataset(pool, rows.loc[ids, ["case_id"]].reset_index()) if patient
                else pool.subset(ids))
        raw, _ = predict_proba(net, data)  # (S, C) or the task's outputs
        task = net.task or ClassificationTask(classes)
        temp = rd.temperature(k)
        probs = apply_temperature(raw, temp)
        results[f"fold_{k}"] = task.metrics(data.targets, probs)
        if task.name == "classification":
            results[f"fold_{k}"].update(scored(np.asarray(data.targets), probs,
                                               None if temp == 1.0 else raw))
        t = prediction_table(data, probs, classes, task=net.task)
        t.insert(1, "fold", k)
        tables.append(t)
        probs_all.append(probs)
    if external and len(probs_all) > 1:
        targets = data.targets  # every fold's model saw the same bags, in order
        task = net0.task or ClassificationTask(classes)
        ens = ensemble(probs_all)
        results["ensemble"] = task.metrics(targets, ens)
        if task.name == "classification":
            results["ensemble"].update(scored(np.asarray(targets), ens))
    predictions = pd.concat(tables, ignore_index=True)
    if out is not None:
        write_json(Path(out) / "metrics.json", results)
        write_csv(Path(out) / "predictions.csv", predictions)
    return EvaluateResult(results, predictions, external, warnings,
                          Path(out) if out is not None else None)
