"""Folds (× specs) as parallel jobs into one run / comparison directory; summarise; executors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from srmil import api
from srmil.bags.synth import write_cohort
from srmil.cli.main import main
from srmil.config import ExecutorConfig, RunConfig, SplitConfig, SynthConfig, TrainConfig
from srmil.locks import Claim
from srmil.training.rundir import RunDir

SRMIL = str(Path(sys.executable).parent / "srmil")
CFG = RunConfig(model="mean", train=TrainConfig(epochs=1, bootstrap=20, accelerator="cpu"),
                split=SplitConfig(folds=3))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[str, str]:
    out = tmp_path_factory.mktemp("par_cohort")
    s = write_cohort(SynthConfig(slides=15, dim=6, min_patches=20, max_patches=40, seed=5), out)
    return s["labels_csv"], s["features_dir"]


@pytest.fixture(scope="module")
def sequential(cohort, tmp_path_factory):
    """The same run done the ordinary way: ``srmil cv`` in one process."""
    labels, feats = cohort
    return api.cv(labels, feats, tmp_path_factory.mktemp("seq") / "run", CFG)


def cli(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def cv_args(cohort, out, *extra) -> list[str]:
    labels, feats = cohort
    return ["cv", "--labels", labels, "--bags", feats, "--out", str(out), "--model", "mean",
            "--epochs", "1", "--device", "cpu", "--folds", "3", "--set", "train.bootstrap=20",
            *map(str, extra)]


def snapshot(d: Path) -> dict[str, float]:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in sorted(d.rglob("*"))}


def test_fold_jobs_started_together_share_one_setup_and_the_last_summarises(
        cohort, sequential, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([SRMIL, *cv_args(cohort, run, "--fold", k)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    failed = "\n".join(e for (_, e), p in zip(outs, procs, strict=True) if p.returncode)
    assert [p.returncode for p in procs] == [0, 0, 0], failed
    assert not any("written by another process" in e for _, e in outs)
    r = RunDir(run)
    assert r.is_done() and r.finished_folds() == [0, 1, 2]
    # one set-up, identical to the sequential run's; the summary the same numbers
    seq = sequential.run
    for name in ("config.json", "classes.json", "splits.csv"):
        assert (run / name).read_text() == (seq.path / name).read_text(), name
    assert r.summary() == seq.summary()
    assert sum("test_auc" in o for o, _ in outs) >= 1  # the last job printed the table
    assert not list(run.glob(".*.lock")) and not list(tmp_path.glob(".*.lock"))


def test_a_fold_job_of_another_config_or_split_is_refused_in_one_line(capsys, cohort,
                                                                        tmp_path):
    run = tmp_path / "run"
    code, _, err = cli(capsys, *cv_args(cohort, run, "--fold", 0))
    assert code == 0 and "fold(s) not done yet: 1 (not started), 2 (not started)" in err
    before = snapshot(run)
    code, _, err = cli(capsys, *cv_args(cohort, run, "--fold", 1, "--set", "train.lr=0.01"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "holds a run of another config (train.lr: 0.0005 in the run, 0.01 now)" in err
    code, _, err = cli(capsys, *cv_args(cohort, run, "--fold", 1, "--set", "split.seed=7"))
    assert code == 2 and "split.seed: 0 in the run, 7 now" in err
    # same config, other folds (a --splits file): refused too
    other = pd.read_csv(run / "splits.csv", dtype={"slide_id": str, "case_id": str})
    other["fold"] = 2 - other["fold"]
    other.to_csv(tmp_path / "other.csv", index=False)
    code, _, err = cli(capsys, *cv_args(cohort, run, "--fold", 1, "--splits",
                                        tmp_path / "other.csv"))
    assert code == 2 and "holds a run of other splits than this job's" in err
    assert snapshot(run) == before  # nothing written by the refused jobs


@pytest.mark.parametrize("mode", ["flock", "file"])
def test_a_fold_another_job_trains_is_refused_never_trained_twice(capsys, cohort, tmp_path,
                                                                   mode):
    run = tmp_path / "run"
    assert cli(capsys, *cv_args(cohort, run, "--fold", 0, "--lock", mode))[0] == 0
    other = Claim(RunDir(run).fold_dir(1), mode=mode)  # another job on fold 1
    assert other.acquire()
    try:
        code, _, err = cli(capsys, *cv_args(cohort, run, "--fold", 1, "--lock", mode))
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert f"fold 1 is being trained by {os.getpid()}@" in err and "never trained twice" in err
        assert not RunDir(run).fold_dir(1).exists()
        code, _, err = cli(capsys, "summarise", run, "--lock", mode)
        assert code == 2 and "2 of 3 fold(s) not done: fold 1 (training (" in err
        assert "fold 2 (not started)" in err
    finally:
        other.release()
    assert cli(capsys, *cv_args(cohort, run, "--fold", 1, "--lock", mode))[0] == 0
    code, out, err = cli(capsys, *cv_args(cohort, run, "--fold", 2, "--lock", mode))
    assert code == 0 and "test_auc" in out  # the last fold's job wrote and printed the summary
    assert RunDir(run).is_done()
    code, out, _ = cli(capsys, "summarise", run)
    assert code == 0 and "test_auc" in out
    # a finished fold's job again (an array resubmitted): nothing trained, nothing rewritten
    before = snapshot(run)
    assert cli(capsys, *cv_args(cohort, run, "--fold", 0))[0] == 0
    assert snapshot(run) == before


def test_summarise_of_what_is_neither_run_nor_comparison(capsys, tmp_path):
    code, _, err = cli(capsys, "summarise", tmp_path)
    assert code == 2 and "not a run or comparison directory" in err


def test_compare_jobs_per_spec_and_fold_give_the_table_of_one_compare(capsys, cohort,
                                                                        tmp_path):
    labels, feats = cohort
    common = ["compare", "--labels", labels, "--bags", feats, "--folds", 2, "--epochs", 1,
              "--device", "cpu", "--set", "train.bootstrap=20", "--models", "mean,abmil"]
    assert cli(capsys, *common, "--out", tmp_path / "one")[0] == 0
    out = tmp_path / "jobs"
    for spec, k in [("mean", 0), ("1", 1), ("abmil", 0)]:  # "1": abmil, by its index
        code, _, err = cli(capsys, *common, "--out", out, "--spec", spec, "--fold", k)
        assert code == 0 and "fold(s) not done yet" in err, err
    code, _, err = cli(capsys, "summarise", out)
    assert code == 2 and "1 fold(s) not done: mean fold 1 (not started)" in err
    code, stdout, _ = cli(capsys, *common, "--out", out, "--spec", 0, "--fold", 1)
    assert code == 0 and "| abmil |" in stdout
    a = pd.read_csv(tmp_path / "one" / "comparison.csv")
    b = pd.read_csv(out / "comparison.csv")
    pd.testing.assert_frame_equal(a, b)
    assert (out / "comparison_roc.png").is_file() and (out / "DONE").is_file()
    code, _, err = cli(capsys, *common[:-1], "mean,abmil,srmil", "--out", out, "--spec", 2,
                       "--fold", 0)
    assert code == 2 and "holds a comparison of other specs than this job's" in err
    code, _, err = cli(capsys, *common, "--out", out, "--spec", 5, "--fold", 0)
    assert code == 2 and "--spec 5: only 2 model spec(s)" in err


def test_cv_on_the_local_executor_two_jobs_at_a_time(capsys, cohort, sequential, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli(capsys, *cv_args(cohort, run, "--executor", "local", "--jobs", 2))
    assert code == 0, err
    assert "test_auc" in out and ": finished (3 of 3" in err
    assert RunDir(run).summary() == sequential.run.summary()
    assert list((run / "logs").glob("*_log.err"))  # each job's log, beside the run
    # everything done: --resume submits nothing and reprints the table
    code, out, err = cli(capsys, *cv_args(cohort, run, "--executor", "local", "--resume"))
    assert code == 0 and "test_auc" in out and "started" not in err
    code, _, err = cli(capsys, *cv_args(cohort, run, "--executor", "local"))
    assert code == 2 and "is a finished run" in err


def test_compare_on_submitits_debug_executor_and_the_executor_section(cohort, tmp_path):
    labels, feats = cohort
    conf = tmp_path / "c.yaml"
    conf.write_text("train:\n  epochs: 1\nexecutor:\n  kind: debug\n  timeout_min: 5\n")
    ex = api.resolve_executor_config(conf)
    assert ex == ExecutorConfig(kind="debug", timeout_min=5)
    assert api.resolve_executor_config(conf, "local", 3).jobs == 3
    base = api.resolve_run_config(config=conf, train={"accelerator": "cpu"}, folds=2,
                                  sets=["train.bootstrap=20"])
    assert base.train.epochs == 1  # the executor section is not part of the run config
    res = api.compare(labels, feats, tmp_path / "cmp", ["mean", "abmil"], base, executor=ex)
    assert res.table["model"].tolist() == ["mean", "abmil"] and res.roc.is_file()
    assert not res.missing
    setup = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert "executor" not in setup["base"]
    with pytest.raises(Exception, match="executor.kind must be one of"):
        api.resolve_executor_config(None, "lsf")


def test_slurm_submits_one_job_array_with_the_executor_section(cohort, tmp_path, monkeypatch):
    """A stand-in ``sbatch`` (no SLURM here) records what submitit hands it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'Submitted batch job 4242'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    labels, feats = cohort
    ex = ExecutorConfig(kind="slurm", wait=False, jobs=2, partition="gpu", gpus_per_node=1,
                        setup=("module load cuda",), timeout_min=90)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(Exception, match="--executor slurm: Could not detect \"srun\""):
        api.cv(labels, feats, tmp_path / "none", CFG, executor=ex)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    res = api.cv(labels, feats, tmp_path / "run", CFG, executor=ex)
    assert res.missing == {0: "not started", 1: "not started", 2: "not started"}
    script = (tmp_path / "run" / "logs" / "4242_submission.sh").read_text()  # the sbatch file
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --time=90", "module load cuda"):
        assert line in script, line
    assert (tmp_path / "run" / "config.json").is_file()  # set up before anything was submitted
