"""Applying a trained run: ``predict`` (new bags) and ``evaluate`` (labelled bags)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from srmil.api.results import EvaluateResult, PredictResult
from srmil.errors import SrmilError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def predict(run: PathLike, bags: PathLike, out: PathLike | None = None, fold: int | None = None,
            overwrite: bool = False) -> PredictResult:
    """Class probabilities per slide with a run's selected model(s).

    With several finished folds the probabilities are averaged over the folds' models (an
    ensemble) unless ``fold`` picks one. A run trained with ``train.calibrate temperature``
    applies each fold's temperature to its model's probabilities first.

    Args:
        run: the run directory (:func:`srmil.api.train` / :func:`srmil.api.cv`).
        bags: directory of bags, or one bag file.
        out: CSV to write (``None``: nothing written).
        fold: use this fold's model only.
        overwrite: replace an existing ``out``.

    Returns:
        The table ``slide_id, folds, pred, prob_<class>…`` (S rows; survival: ``risk,
        surv_bin<k>…``, each fold's model on its own time bins, averaged; regression: ``pred``
        in the target's units), the folds used, the CSV.
    """
    from srmil.bags.readers import find_bags
    from srmil.storage import write_csv
    from srmil.training.calibration import apply_temperature
    from srmil.training.data import BagDataset
    from srmil.training.inference import ensemble
    from srmil.training.loop import predict_proba, prediction_table
    from srmil.training.rundir import RunDir

    if out is not None and Path(out).exists() and not overwrite:  # before any model runs
        raise SrmilError("already exists; refusing to overwrite it (overwrite=True replaces "
                         "it)", out)
    rd = RunDir(run).require()
    models = rd.models(fold)
    classes = rd.classes()
    nets = [net for _, net in models]
    found = find_bags(bags)
    data = BagDataset(list(found.values()), list(found), None, rd.graph_config(),
                      nets[0].uses_graph, nets[0].in_dim, cache=len(nets) > 1)
    probs = ensemble([apply_temperature(predict_proba(net, data)[0], rd.temperature(k))
                      for k, net in models])  # (S, C) or the task's outputs (T = 1 there)
    table = prediction_table(data, probs, classes, task=nets[0].task)
    folds = [k for k, _ in models]
    table.insert(1, "folds", ",".join(str(k) for k in folds))
    path = None
    if out is not None:
        path = write_csv(out, table, overwrite=overwrite)
    log.info("%d slide(s)%s (%d model(s) averaged)", len(table),
             f" → {out}" if out is not None else "", len(nets))
    return PredictResult(table, folds, path)


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
