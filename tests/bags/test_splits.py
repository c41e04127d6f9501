import numpy as np
import pandas as pd
import pytest

from srmil.bags.splits import make_splits, read_splits, validate_splits
from srmil.config import SplitConfig
from srmil.errors import CohortError


def cohort_table(n_cases=40, seed=0, classes=("a", "b", "c")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_cases):
        label = classes[i % len(classes)]
        for j in range(int(rng.integers(1, 4))):  # 1–3 slides per case
            rows.append((f"s{i:03d}_{j}", f"case{i:03d}", label))
    return pd.DataFrame(rows, columns=["slide_id", "case_id", "label"])


def test_no_case_in_two_parts_and_every_case_tested_once():
    slides = cohort_table()
    sp = make_splits(slides, SplitConfig(folds=5, seed=3))
    for _, fold in sp.groupby("fold"):
        assert fold.groupby("case_id").split.nunique().max() == 1
        assert set(fold.slide_id) == set(slides.slide_id)
        assert set(fold.split) == {"train", "val", "test"}
    test_cases = sp[sp.split == "test"].groupby("case_id").fold.nunique()
    assert len(test_cases) == slides.case_id.nunique() and test_cases.max() == 1


def test_folds_are_stratified_and_val_has_every_class():
    slides = cohort_table(n_cases=60)
    sp = make_splits(slides, SplitConfig(folds=5, seed=0))
    for _, fold in sp.groupby("fold"):
        test_cases = fold[fold.split == "test"].drop_duplicates("case_id")
        counts = test_cases.label.value_counts()
        assert counts.max() - counts.min() <= 1  # 20 cases per class → 4 per fold
        assert set(fold[fold.split == "val"].label) == {"a", "b", "c"}


def test_deterministic_from_seed():
    slides = cohort_table()
    a = make_splits(slides, SplitConfig(seed=7))
    b = make_splits(slides.sample(frac=1, random_state=1), SplitConfig(seed=7))
    pd.testing.assert_frame_equal(a, b)
    c = make_splits(slides, SplitConfig(seed=8))
    assert not a.equals(c)


def test_too_few_cases_for_the_folds():
    slides = cohort_table(n_cases=12)  # 4 cases per class
    with pytest.raises(CohortError, match="class 'a' has 4 case\\(s\\); 5 folds need at least 5"):
        make_splits(slides, SplitConfig(folds=5))


def test_round_trip_through_csv(tmp_path):
    slides = cohort_table()
    sp = make_splits(slides)
    p = tmp_path / "splits.csv"
    sp.to_csv(p, index=False)
    back = read_splits(p, slides)
    pd.testing.assert_frame_equal(back.reset_index(drop=True), sp)


def test_reads_clam_splits_directory(tmp_path):
    slides = cohort_table(n_cases=9)
    slides["slide_id"] = [f"{i:03d}" for i in range(len(slides))]  # zero-padded ids
    cases = slides.drop_duplicates("case_id").case_id.tolist()
    for k in range(2):
        parts = {"train": cases[3:], "val": cases[:1], "test": cases[1:3]} if k == 0 else \
            {"train": cases[:6], "val": cases[6:7], "test": cases[7:]}
        cols = {p: slides[slides.case_id.isin(c)].slide_id.tolist() for p, c in parts.items()}
        width = max(map(len, cols.values()))
        df = pd.DataFrame({p: v + [np.nan] * (width - len(v)) for p, v in cols.items()})
        df.to_csv(tmp_path / f"splits_{k}.csv")  # CLAM writes the index as the first column
    (tmp_path / "splits_0_bool.csv").write_text("ignored\n")
    sp = read_splits(tmp_path, slides)
    assert sorted(sp.fold.unique()) == [0, 1]
    assert set(sp[sp.fold == 0].slide_id) == set(slides.slide_id)
    assert sp.slide_id.str.len().eq(3).all()
    one = read_splits(tmp_path / "splits_1.csv", slides)
    assert (one.fold == 1).all()


def test_leakage_and_unknown_slides_are_refused(tmp_path):
    slides = cohort_table(n_cases=9)
    sp = make_splits(slides, SplitConfig(folds=3))
    two = pd.DataFrame({"fold": 0, "slide_id": ["x", "y"], "case_id": "P", "label": "a",
                        "split": ["train", "test"]})
    with pytest.raises(CohortError, match="case 'P' is in test and train"):
        validate_splits(two)
    bad = tmp_path / "s.csv"
    sp.assign(slide_id=sp.slide_id.where(sp.index > 0, "ghost")).to_csv(bad, index=False)
    with pytest.raises(CohortError, match="not in the cohort, e.g. 'ghost'"):
        read_splits(bad, slides)
