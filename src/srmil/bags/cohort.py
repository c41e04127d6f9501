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


def read_labels(path: str | os.PathLike, classes: list[str] | None = None) -> pd.DataFrame:
    """Read and validate a labels CSV; ids and labels are read as strings.

    ``case_id`` defaults to ``slide_id`` when the column is absent (one slide per patient).

    Raises:
        CohortError: missing file or column, empty ids or labels, duplicate slide_id, or a
            label outside ``classes`` when those are given.
    """
    p = Path(path)
    if not p.is_file():
        raise CohortError("no such file", p)
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CohortError(f"cannot parse as CSV: {exc_line(exc)}", p) from None
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise CohortError(
            f"missing column(s) {', '.join(missing)}; found: {', '.join(df.columns)}", p
        )
    if "case_id" not in df.columns:
        df.insert(1, "case_id", df["slide_id"])
    for col in ("slide_id", "case_id", "label"):
        df[col] = df[col].str.strip()
        empty = df.index[df[col] == ""]
        if len(empty):
            raise CohortError(f"empty {col} on line {int(empty[0]) + 2}", p)
    dup = df["slide_id"][df["slide_id"].duplicated()]
    if len(dup):
        raise CohortError(f"duplicate slide_id {dup.iloc[0]!r} ({len(dup)} duplicates)", p)
    if classes is not None:
        unknown = sorted(set(df["label"]) - set(classes))
        if unknown:
            raise CohortError(
                f"unknown label(s) {', '.join(map(repr, unknown))}; known classes: "
                f"{', '.join(classes)}", p,
            )
    return df.reset_index(drop=True)


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
    labels: str | os.PathLike, features: str | os.PathLike, classes: list[str] | None = None
) -> Cohort:
    """Match a labels CSV to a features directory (or one bag file).

    Args:
        labels: CSV with ``slide_id``, ``label`` and usually ``case_id``.
        features: directory of ``<slide_id>.h5`` / ``<slide_id>.pt`` bags, or one bag file.
        classes: fixed class order (e.g. from a checkpoint); default sorted label names.
    """
    df = read_labels(labels, classes)
    bags = find_bags(features)
    fp = Path(features)
    if fp.is_file():  # a single bag checks against its own row only
        df = df[df.slide_id.isin(bags)]
    has_bag = df["slide_id"].isin(bags)
    missing = df.loc[~has_bag, "slide_id"].tolist()
    unlabelled = sorted(set(bags) - set(df["slide_id"]))
    slides = df[has_bag].copy()
    cls = list(classes) if classes is not None else class_map(df["label"])
    slides.insert(3, "target", slides["label"].map({c: i for i, c in enumerate(cls)}))
    slides["path"] = slides["slide_id"].map(lambda s: str(bags[s]))
    return Cohort(
        slides.reset_index(drop=True), cls, Path(labels), fp, missing, unlabelled
    )
