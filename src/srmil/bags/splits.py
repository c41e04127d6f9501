"""Patient-level splits: stratified k-fold with a validation part, or CLAM's published splits.

Splits are a long table, one row per (fold, slide)::

    fold,slide_id,case_id,label,split        split ∈ {train, val, test}

No case (patient) is ever in two parts of one fold. Folds are stratified by the case's label
(scikit-learn ``StratifiedKFold`` over cases); the validation part takes ``val_fraction`` of each
class's remaining cases (at least one). Everything is deterministic from the seed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from srmil.config import SplitConfig
from srmil.errors import CohortError, Problem, exc_line

PARTS = ("train", "val", "test")
SPLIT_COLUMNS = ["fold", "slide_id", "case_id", "label", "split"]


def _case_table(slides: pd.DataFrame) -> pd.DataFrame:
    """One row per case with its label (the most frequent label of its slides)."""
    return (
        slides.groupby("case_id")["label"]
        .agg(lambda s: s.value_counts().sort_index().idxmax())
        .reset_index()
        .sort_values("case_id", kind="stable")
        .reset_index(drop=True)
    )


def fold_problems(slides: pd.DataFrame, folds: int, source: str | None = None) -> list[Problem]:
    """Problems that stop a ``folds``-fold patient-level split: too few cases in a class, or a
    case whose slides carry different labels (a warning: it is stratified by its majority)."""
    out = []
    mixed = slides.groupby("case_id")["label"].nunique()
    if (mixed > 1).any():
        out.append(Problem(
            "warning",
            f"{int((mixed > 1).sum())} case(s) have slides with different labels, e.g. "
            f"{mixed[mixed > 1].index[0]!r}; folds are stratified by each case's majority label",
            source,
        ))
    counts = _case_table(slides)["label"].value_counts()
    for label, n in sorted(counts.items()):
        if n < folds:
            out.append(Problem(
                "error",
                f"class {label!r} has {n} case(s); {folds} folds need at least {folds}",
                source,
            ))
    return out


def make_splits(slides: pd.DataFrame, cfg: SplitConfig = SplitConfig()) -> pd.DataFrame:
    """Patient-level stratified k-fold splits with a validation part.

    Args:
        slides: at least ``slide_id``, ``case_id``, ``label``.
        cfg: folds, validation fraction and seed.

    Returns:
        The long split table (``SPLIT_COLUMNS``), rows ordered by fold, split, slide_id.

    Raises:
        CohortError: fewer than 2 folds, or a class with fewer cases than folds.
    """
    if cfg.folds < 2:
        raise CohortError(f"need at least 2 folds, got {cfg.folds}")
    if not 0 < cfg.val_fraction < 1:
        raise CohortError(f"val_fraction must be in (0, 1), got {cfg.val_fraction}")
    errors = [p for p in fold_problems(slides, cfg.folds) if p.is_error]
    if errors:
        raise CohortError(errors[0].message)
    cases = _case_table(slides)
    skf = StratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed)
    rows = []
    for k, (rest_idx, test_idx) in enumerate(skf.split(cases, cases["label"])):
        part = pd.Series("train", index=cases.index)
        part.iloc[test_idx] = "test"
        rng = np.random.default_rng([cfg.seed, k])
        rest = cases.iloc[rest_idx]
        for _, grp in rest.groupby("label", sort=True):
            if len(grp) < 2:
                continue  # keep the lone case for training
            n_val = min(max(1, int(round(cfg.val_fraction * len(grp)))), len(grp) - 1)
            part.loc[rng.permutation(grp.index.to_numpy())[:n_val]] = "val"
        case_part = dict(zip(cases["case_id"], part, strict=True))
        fold = slides[["slide_id", "case_id", "label"]].copy()
        fold.insert(0, "fold", k)
        fold["split"] = fold["case_id"].map(case_part)
        rows.append(fold)
    out = pd.concat(rows, ignore_index=True)
    out["_p"] = out["split"].map({p: i for i, p in enumerate(PARTS)})
    out = out.sort_values(["fold", "_p", "slide_id"], kind="stable").drop(columns="_p")
    return out.reset_index(drop=True)[SPLIT_COLUMNS]


_CLAM_SPLIT = re.compile(r"^splits_(\d+)\.csv$")


def read_clam_splits(path: str | os.PathLike, slides: pd.DataFrame) -> pd.DataFrame:
    """Read CLAM's ``splits_<k>.csv`` (header ``,train,val,test``, NaN-padded columns).

    Args:
        path: one ``splits_<k>.csv`` or a directory of them (``_bool`` / ``_descriptor`` files
            are ignored).
        slides: the cohort's slides, to attach ``case_id`` and ``label``.
    """
    p = Path(path)
    files = (
        sorted((f for f in p.iterdir() if _CLAM_SPLIT.match(f.name)),
               key=lambda f: int(_CLAM_SPLIT.match(f.name).group(1)))
        if p.is_dir() else [p]
    )
    if not files:
        raise CohortError("no CLAM splits_<k>.csv files in this directory", p)
    info = slides.set_index("slide_id")[["case_id", "label"]]
    rows = []
    for f in files:
        m = _CLAM_SPLIT.match(f.name)
        k = int(m.group(1)) if m else 0
        try:
            df = pd.read_csv(f, dtype=str)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
            raise CohortError(f"cannot read CLAM splits: {exc_line(exc)}", f) from None
        missing = [c for c in PARTS if c not in df.columns]
        if missing:
            raise CohortError(
                f"not a CLAM splits file: missing column(s) {', '.join(missing)}", f
            )
        for part in PARTS:
            ids = df[part].dropna().str.strip()
            ids = ids[ids != ""]
            unknown = sorted(set(ids) - set(info.index))
            if unknown:
                raise CohortError(
                    f"{len(unknown)} slide(s) in {part!r} are not in the cohort, e.g. "
                    f"{unknown[0]!r}", f,
                )
            rows.append(pd.DataFrame({
                "fold": k, "slide_id": ids.to_numpy(),
                "case_id": info.loc[ids, "case_id"].to_numpy(),
                "label": info.loc[ids, "label"].to_numpy(), "split": part,
            }))
    out = pd.concat(rows, ignore_index=True)[SPLIT_COLUMNS]
    validate_splits(out, p)
    return out


def read_splits(path: str | os.PathLike, slides: pd.DataFrame) -> pd.DataFrame:
    """Read a split table: srmil's ``splits.csv`` or CLAM's ``splits_<k>.csv`` (file or dir)."""
    p = Path(path)
    if not p.exists():
        raise CohortError("no such file or directory", p)
    if p.is_dir() or _CLAM_SPLIT.match(p.name):
        return read_clam_splits(p, slides)
    df = pd.read_csv(p, dtype=str, keep_default_na=False)
    if not set(SPLIT_COLUMNS) <= set(df.columns):
        if set(PARTS) <= set(df.columns):
            return read_clam_splits(p, slides)
        raise CohortError(f"not a splits file: needs columns {', '.join(SPLIT_COLUMNS)}", p)
    df["fold"] = df["fold"].astype(int)
    unknown = sorted(set(df.slide_id) - set(slides.slide_id))
    if unknown:
        raise CohortError(f"{len(unknown)} slide(s) not in the cohort, e.g. {unknown[0]!r}", p)
    validate_splits(df[SPLIT_COLUMNS], p)
    return df[SPLIT_COLUMNS]


def validate_splits(splits: pd.DataFrame, source: str | os.PathLike | None = None) -> None:
    """Raise when a case is in two parts of one fold, a part name is unknown, a slide appears
    twice in a fold, or a fold has no training or no test slide."""
    bad = sorted(set(splits["split"]) - set(PARTS))
    if bad:
        raise CohortError(f"unknown split name(s) {', '.join(bad)}; use train, val, test", source)
    for k, fold in splits.groupby("fold"):
        dup = fold["slide_id"][fold["slide_id"].duplicated()]
        if len(dup):
            raise CohortError(f"fold {k}: slide {dup.iloc[0]!r} is in two parts", source)
        parts = fold.groupby("case_id")["split"].nunique()
        if (parts > 1).any():
            case = parts[parts > 1].index[0]
            where = sorted(fold.loc[fold.case_id == case, "split"].unique())
            raise CohortError(
                f"fold {k}: case {case!r} is in {' and '.join(where)} (patient leakage)", source
            )
        for part in ("train", "test"):
            if not (fold["split"] == part).any():
                raise CohortError(f"fold {k}: no {part} slide", source)
