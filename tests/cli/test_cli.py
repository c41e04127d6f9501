import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import labels_csv, trident_bag
from srmil.cli.main import main

SRMIL = str(Path(sys.executable).parent / "srmil")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def small_cohort(tmp_path: Path, n_cases: int = 6) -> tuple[Path, Path]:
    feats = tmp_path / "features"
    rows = []
    for i in range(n_cases):
        sid = f"s{i:02d}"
        trident_bag(feats / f"{sid}.h5", n=40, d=8, mag0=20 if i % 2 else 40, seed=i)
        rows.append((sid, f"c{i:02d}", "tumor" if i % 2 else "normal"))
    return labels_csv(tmp_path / "labels.csv", rows), feats


def test_check_good_cohort(capsys, tmp_path):
    labels, feats = small_cohort(tmp_path)
    code, out, _ = run_cli(capsys, "check", "--labels", labels, "--features", feats,
                           "--folds", 3, "--table", tmp_path / "t.csv")
    assert code == 0
    assert "6 matched, 0 labelled without a bag, 0 bags without a label" in out
    assert "0=normal: 3 slides / 3 cases" in out
    assert "224 from attrs+coords (3 slides); 448 from attrs+coords (3 slides)" in out
    assert "problems   none" in out and "ready to train" in out
    table = (tmp_path / "t.csv").read_text()
    assert table.startswith("slide_id,label,path,reader,patches")


def test_check_reports_every_problem_and_fails(capsys, tmp_path):
    labels, feats = small_cohort(tmp_path)
    with h5py.File(feats / "s01.h5", "a") as h5:
        h5["features"][3, 0] = np.nan
    code, out, _ = run_cli(capsys, "check", "--labels", labels, "--features", feats)
    assert code == 1
    assert f"error: {feats / 's01.h5'}: features contain NaN/Inf in 1 of 40 rows" in out
    assert "class 'normal' has 3 case(s); 5 folds need at least 5" in out
    assert "NOT ready" in out


def test_check_dimension_mismatch_truncated_and_unlabelled(capsys, tmp_path):
    labels, feats = small_cohort(tmp_path)
    (feats / "s03.h5").unlink()
    trident_bag(feats / "s03.h5", n=40, d=12)
    data = (feats / "s04.h5").read_bytes()
    (feats / "s04.h5").write_bytes(data[: len(data) // 3])
    trident_bag(feats / "extra.h5")
    code, out, _ = run_cli(capsys, "check", "--labels", labels, "--features", feats,
                           "--folds", 0)
    assert code == 1
    assert f"{feats / 's03.h5'}: feature dimension 12 differs from the cohort's 8" in out
    assert f"{feats / 's04.h5'}:" in out
    assert "1 bag(s) have no row in labels.csv, e.g. extra" in out


def test_check_single_bag_without_labels(capsys, tmp_path):
    p = trident_bag(tmp_path / "one.h5", n=30)
    code, out, _ = run_cli(capsys, "check", "--features", p)
    assert code == 0 and "bags       1" in out and "448 from attrs+coords (1 slides)" in out


@pytest.mark.parametrize("which", ["labels", "features"])
def test_check_missing_inputs_are_one_line(capsys, tmp_path, which):
    labels, feats = small_cohort(tmp_path)
    if which == "labels":
        labels = tmp_path / "missing.csv"
        expect = f"{labels}: no such file"
    else:
        shutil.rmtree(feats)
        expect = f"{feats}: no such directory"
    code, out, err = run_cli(capsys, "check", "--labels", labels, "--features", feats)
    assert code == 2 and out == ""
    assert_one_line_error(err, "srmil check: error:", expect)


def test_check_duplicate_slide_id(capsys, tmp_path):
    labels, feats = small_cohort(tmp_path)
    labels.write_text(labels.read_text() + "s00,c99,tumor\n")
    code, _, err = run_cli(capsys, "check", "--labels", labels, "--features", feats)
    assert code == 2
    assert_one_line_error(err, f"{labels}: duplicate slide_id 's00'")


def test_synth_writes_and_refuses_to_overwrite(capsys, tmp_path):
    out_dir = tmp_path / "c"
    code, out, _ = run_cli(capsys, "synth", out_dir, "--slides", 6, "--dim", 4,
                           "--min-patches", 20, "--max-patches", 40)
    assert code == 0 and "cohort     spatial: 6 slides" in out and "oracle" in out
    assert (out_dir / "labels.csv").exists()
    code, _, err = run_cli(capsys, "synth", out_dir, "--slides", 6)
    assert code == 2
    assert_one_line_error(err, f"{out_dir}: a cohort is already there; refusing to overwrite")


def test_bench_graph_prints_its_table(capsys):
    code, out, _ = run_cli(capsys, "bench", "graph", "--sizes", "500,2000", "--repeats", 1)
    assert code == 0
    rows = [ln.split() for ln in out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["500", "2,000"]
    assert all(r[2] == "table" and float(r[3]) >= 0 for r in rows)


def test_entry_point_subprocess_error_has_no_traceback(tmp_path):
    """The installed `srmil` script itself: one stderr line, exit code 2."""
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([SRMIL, "check", "--features", str(bad)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert f"error: {bad}: cannot open as HDF5" in r.stdout
    r = subprocess.run([SRMIL, "check", "--features", str(tmp_path / "nope")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == \
        f"srmil check: error: {tmp_path / 'nope'}: no such directory"


def test_the_command_line_starts_without_importing_torch():
    """`srmil --help` and argument errors must be instant: heavy imports live inside run()."""
    code = ("import sys, srmil, srmil.cli.main as m; m.build_parser(); "
            "heavy = {'torch', 'sklearn', 'pandas', 'h5py', 'lightning'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_demo_cli_default_epochs_are_the_api_default():
    import argparse

    from srmil.api import runs
    from srmil.cli import demo

    sub = argparse.ArgumentParser().add_subparsers()
    demo.add_parser(sub)
    parser = sub.choices["demo"]
    assert parser.get_default("epochs") == runs.DEMO_EPOCHS == 20
    import inspect

    assert inspect.signature(runs.demo).parameters["epochs"].default == 20
