"""A cohort: a labels CSV (``slide_id``, ``case_id``, ``label``; extra columns kept) matched to a
directory of feature bags.

Class order: class names are sorted as strings (``sorted(set(labels))``) unless the caller gives
the list, and index i is the i-th name. The map is saved with every run (``classes.json``), so
predictions can always be read back to names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from srmil.bags.readers import find_bags
from srmil.errors import CohortError, Problem, exc_line

REQUIRED_COLUMNS = ("slide_id", "label")


def label_task(columns: list[str], task: str = "auto",
               source: str | os.PathLike | None = None) -> str:
    """The task of a labels CSV: ``task`` itself, or with ``auto`` the one its columns
    describe (:func:`srmil.tasks.infer_task`; classification when none fits, so the missing
    ``label`` column is what is reported)."""
    from srmil.tasks import TASKS, infer_task

    if task != "auto":
        return TASKS.get(task).name
    try:
        return infer_task(columns, source)
    except CohortError:
        return "classification"


def read_labels(path: str | os.PathLike, classes: list[str] | None = None,
                task: str = "auto", strata: int = 4) -> pd.DataFrame:
    """Read and validate a labels CSV; ids and labels are read as strings.

    ``case_id`` defaults to ``slide_id`` when the column is absent (one slide per patient).
    Survival and regression labels (``task``, or inferred from the columns) are checked by
    their task (:meth:`srmil.tasks.Task.parse_labels`), which sets ``label`` to the stratum
    the folds balance (event status; target quantile ``q1…`` of ``strata``) and ``target``
    to what the model learns (``(time, event)``; the value). The task is ``df.attrs["task"]``.

    Raises:
        CohortError: missing file or column, empty ids or labels, duplicate slide_id, or a
            label outside ``classes`` when those are given; for survival and regression, a
            missing, empty, non-numeric, negative (time) or non-0/1 (event) value, naming the
            line.
    """
    from srmil.tasks import TASKS

    p = Path(path)
    df = _read_table(p)
    name = label_task(list(df.columns), task, p)
    required = REQUIRED_COLUMNS if name == "classification" else ("slide_id",)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CohortError(
            f"missing column(s) {', '.join(missing)}; found: {', '.join(df.columns)}", p
        )
    _check_ids(df, p, ("label",) if name == "classification" else ())
    if name != "classification":
        df = TASKS.get(name).parse_labels(df, p, strata=strata)
    elif classes is not None:
        unknown = sorted(set(df["label"]) - set(classes))
        if unknown:
            raise CohortError(
                f"unknown label(s) {', '.join(map(repr, unknown))}; known classes: "
                f"{', '.join(classes)}", p,
            )
    df = df.reset_index(drop=True)
    df.attrs["task"] = name
    return df


def class_map(labels: pd.Series | list[str]) -> list[str]:
    """Stable class order: label names sorted as strings. Index i ↔ ``classes[i]``."""
    return sorted(set(labels))


@dataclass
class Cohort:
    """Labelled slides matched to their bags.

    Attributes:
        slides: one row per labelled slide with a bag: ``slide_id``, ``case_id``, ``label``,
            ``target`` (class index), ``path`` (bag file) and any extra CSV columns.
        classes: class names; index i ↔ ``classes[i]``.
        missing: slide_ids listed in the CSV without a bag.
        unlabelled: slide_ids with a bag but no row in the CSV.
    """

    slides: pd.DataFrame
    classes: list[str]
    labels_path: Path
    features_path: Path
    missing: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    task: str = "classification"  # classification | survival | regression (srmil.tasks)

    def problems(self) -> list[Problem]:
        out = []
        if self.missing:
            out.append(Problem(
                "warning",
                f"{len(self.missing)} labelled slide(s) have no bag in {self.features_path}, "
                f"e.g. {', '.join(self.missing[:3])}",
                self.labels_path,
            ))
        if self.unlabelled:
            out.append(Problem(
                "warning",
                f"{len(self.unlabelled)} bag(s) have no row in {self.labels_path.name}, "
                f"e.g. {', '.join(self.unlabelled[:3])}",
                self.features_path,
            ))
        if self.slides.empty:
            out.append(Problem("error", "no labelled slide has a bag", self.labels_path))
        elif self.task == "survival":
            if not (self.slides["label"] == "event").any():
                out.append(Problem("error", "no observed event among the slides with a bag: "
                                   "survival needs events", self.labels_path))
        elif self.task == "regression":
            if self.slides["target"].astype(float).nunique() < 2:
                out.append(Problem("error", "the target takes a single value; regression "
                                   "needs at least two", self.labels_path))
        elif len(self.classes) < 2:
            out.append(Problem(
                "error", f"only one class ({self.classes[0]!r}); need at least two",
                self.labels_path,
            ))
        return out

    def case_counts(self) -> pd.DataFrame:
        """Per class: number of slides and of cases (patients)."""
        g = self.slides.groupby("label")
        return pd.DataFrame({"slides": g.size(), "cases": g["case_id"].nunique()}).reindex(
            self.classes, fill_value=0
        )


def load_cohort(
    labels: str | os.PathLike, features: str | os.PathLike, classes: list[str] | None = None,
    task: str = "auto", strata: int = 4,
) -> Cohort:
    """Match a labels CSV to a features directory (or one bag file).

    Args:
        labels: CSV with ``slide_id``, ``label`` (or the survival / regression columns) and
            usually ``case_id``.
        features: directory of ``<slide_id>.h5`` / ``<slide_id>.pt`` bags, or one bag file.
        classes: fixed class order (e.g. from a checkpoint); default sorted label names (for
            survival and regression: the strata).
        task: ``auto`` (from the columns) or a task name; ``strata``: regression quantiles.
    """
    df = read_labels(labels, classes, task, strata)
    name = df.attrs.get("task", "classification")
    bags = find_bags(features)
    fp = Path(features)
    if fp.is_file():  # a single bag checks against its own row only
        df = df[df.slide_id.isin(bags)]
    has_bag = df["slide_id"].isin(bags)
    missing = df.loc[~has_bag, "slide_id"].tolist()
    unlabelled = sorted(set(bags) - set(df["slide_id"]))
    slides = df[has_bag].copy()
    if name == "classification":
        cls = list(classes) if classes is not None else class_map(df["label"])
        slides.insert(3, "target", slides["label"].map({c: i for i, c in enumerate(cls)}))
    else:  # ``target`` set by the task; the strata stand in for classes
        cls = class_map(df["label"])
    slides["path"] = slides["slide_id"].map(lambda s: str(bags[s]))
    return Cohort(
        slides.reset_index(drop=True), cls, Path(labels), fp, missing, unlabelled, name
    )


def read_cases(path: str | os.PathLike) -> pd.DataFrame:
    """Read a slide → case table without labels: ``slide_id`` and optionally ``case_id``
    (default: the slide's own id); ids as strings, any other column kept.

    For predicting a patient-level run's cases on a cohort that has no labels.

    Raises:
        CohortError: missing file or ``slide_id`` column, an empty id, a duplicate slide_id.
    """
    p = Path(path)
    df = _read_table(p)
    if "slide_id" not in df.columns:
        raise CohortError(f"missing column slide_id; found: {', '.join(df.columns)}", p)
    _check_ids(df, p)
    return df.reset_index(drop=True)


def _read_table(p: Path) -> pd.DataFrame:
    """A CSV of strings (no NaN), header names stripped.

    Raises:
        CohortError: missing file, or not parseable as CSV.
    """
    if not p.is_file():
        raise CohortError("no such file", p)
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CohortError(f"cannot parse as CSV: {exc_line(exc)}", p) from None
    df.columns = [c.strip() for c in df.columns]
    return df


def _check_ids(df: pd.DataFrame, p: Path, also: tuple[str, ...] = ()) -> None:
    """In place: ``case_id`` defaults to the slide's id; ``slide_id``, ``case_id`` and
    ``also`` stripped and never empty; no duplicate ``slide_id``.

    Raises:
        CohortError: an empty value (naming its line) or a duplicate slide_id.
    """
    if "case_id" not in df.columns:
        df.insert(1, "case_id", df["slide_id"])
    for col in ("slide_id", "case_id", *also):
        df[col] = df[col].str.strip()
        empty = df.index[df[col] == ""]
        if len(empty):
            raise CohortError(f"empty {col} on line {int(empty[0]) + 2}", p)
    dup = df["slide_id"][df["slide_id"].duplicated()]
    if len(dup):
        raise CohortError(f"duplicate slide_id {dup.iloc[0]!r} ({len(dup)} duplicates)", p)
