import pytest

from helpers import labels_csv, trident_bag
from srmil.bags.cohort import class_map, load_cohort, read_labels
from srmil.errors import CohortError


def test_labels_keep_zero_padded_ids_extra_columns_and_sorted_classes(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("slide_id,case_id,label,site\n007,P1,LUSC,a\n010,P2,LUAD,b\n")
    df = read_labels(p)
    assert df.slide_id.tolist() == ["007", "010"]
    assert df.site.tolist() == ["a", "b"]
    assert class_map(df.label) == ["LUAD", "LUSC"]


def test_case_id_defaults_to_slide_id(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("slide_id,label\ns1,a\ns2,b\n")
    assert read_labels(p).case_id.tolist() == ["s1", "s2"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("slide_id,case_id\ns1,c1\n", "missing column(s) label"),
        ("slide_id,case_id,label\ns1,c1,a\ns1,c2,b\n", "duplicate slide_id 's1'"),
        ("slide_id,case_id,label\ns1,c1,a\ns2,c2,\n", "empty label on line 3"),
        ("slide_id,case_id,label\ns1,c1,a\ns2,c2,zebra\n", "unknown label(s) 'zebra'"),
    ],
)
def test_bad_labels_csv(tmp_path, text, message):
    p = tmp_path / "labels.csv"
    p.write_text(text)
    with pytest.raises(CohortError) as e:
        read_labels(p, classes=["a", "b"])
    assert str(e.value).startswith(f"{p}: ") and message in str(e.value)


def test_missing_labels_file(tmp_path):
    with pytest.raises(CohortError, match="no such file"):
        read_labels(tmp_path / "nope.csv")


def test_cohort_matches_bags_and_reports_missing_and_unlabelled(tmp_path):
    feats = tmp_path / "features"
    for s in ("s1", "s2", "s4"):
        trident_bag(feats / f"{s}.h5")
    lab = labels_csv(tmp_path / "labels.csv",
                     [("s1", "c1", "tumor"), ("s2", "c2", "normal"), ("s3", "c3", "tumor")])
    c = load_cohort(lab, feats)
    assert c.classes == ["normal", "tumor"]
    assert c.slides.slide_id.tolist() == ["s1", "s2"]
    assert c.slides.target.tolist() == [1, 0]
    assert c.missing == ["s3"] and c.unlabelled == ["s4"]
    msgs = [p.message for p in c.problems()]
    assert any("1 labelled slide(s) have no bag" in m for m in msgs)
    assert any("1 bag(s) have no row" in m for m in msgs)
    assert all(not p.is_error for p in c.problems())
    counts = c.case_counts()
    assert counts.loc["tumor", "slides"] == 1 and counts.loc["normal", "cases"] == 1


def test_fixed_class_order_is_respected(tmp_path):
    feats = tmp_path / "f"
    trident_bag(feats / "a.h5")
    trident_bag(feats / "b.h5")
    lab = labels_csv(tmp_path / "l.csv", [("a", "1", "x"), ("b", "2", "y")])
    c = load_cohort(lab, feats, classes=["y", "x"])
    assert c.slides.target.tolist() == [1, 0]


def test_one_class_is_an_error(tmp_path):
    feats = tmp_path / "f"
    trident_bag(feats / "a.h5")
    c = load_cohort(labels_csv(tmp_path / "l.csv", [("a", "1", "x")]), feats)
    assert any(p.is_error and "only one class" in p.message for p in c.problems())
