"""DDP training of one fold (train.devices > 1): 2 CPU processes with gloo."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from srmil import api
from srmil.bags.synth import write_cohort
from srmil.config import RunConfig, SplitConfig, SynthConfig, TrainConfig
from srmil.errors import SrmilError
from srmil.training.checkpoint import load_state
from srmil.training.distributed import rank_steps


@pytest.mark.parametrize(("n", "per_step", "world"), [(10, 1, 2), (11, 3, 2), (7, 2, 3),
                                                       (1, 1, 2), (9, 4, 1)])
def test_every_bag_once_per_epoch_and_the_step_mean_over_all_processes(n, per_step, world):
    order = list(np.random.default_rng(n).permutation(n))
    shares = [rank_steps(order, per_step, world, r) for r in range(world)]
    assert len({len(s) for s in shares}) == 1  # every process joins every all-reduce
    trained = [i for s in shares for own, _, scale in s if scale for i in own]
    assert sorted(trained) == list(range(n))  # each bag exactly once
    for step in zip(*shares, strict=True):
        n_step = step[0][1]
        # DDP averages the W gradients: Σ_r n_r · scale_r / W must be 1 (the step's mean)
        assert sum(len(own) * scale for own, _, scale in step if scale) / world == \
            pytest.approx(1.0)
        assert sum(len(own) for own, _, scale in step if scale) == n_step
        assert n_step <= per_step * world
    if world == 1:  # one process: the order cut into steps of per_step bags, scale 1 / bags
        assert [i for own, _, _ in shares[0] for i in own] == order


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    s = write_cohort(SynthConfig(slides=16, dim=8, min_patches=30, max_patches=60, seed=4),
                     tmp_path_factory.mktemp("ddp"))
    return s["labels_csv"], s["features_dir"]


def _cfg(devices, bags_per_step, epochs=3, model="mean", **train):
    settings = dict(epochs=epochs, bootstrap=20, accelerator="cpu", devices=devices,
                    bags_per_step=bags_per_step, loader_workers=0)
    return RunConfig(model=model, model_config={"dropout": 0.0} if model == "mean" else {},
                     train=TrainConfig(**{**settings, **train}), split=SplitConfig(folds=2))


def test_two_processes_train_what_one_process_trains_with_twice_the_bags(cohort, tmp_path):
    """devices=2 × 1 bag per step = devices=1 × 2 bags per step (a model without randomness):
    the same weights, the same gathered validation metrics and selection, and the
    checkpoint loads in a single-process predict."""
    labels, bags = cohort
    ddp = api.train(labels, bags, tmp_path / "ddp", _cfg(2, 1))
    one = api.train(labels, bags, tmp_path / "one", _cfg(1, 2))
    a = load_state(ddp.run.fold_dir(0) / "last.pt")
    b = load_state(one.run.fold_dir(0) / "last.pt")
    for k, v in b["model"].items():
        torch.testing.assert_close(a["model"][k], v, rtol=1e-5, atol=1e-6)
    assert len(a["rng_ranks"]) == 2 and "rng_ranks" not in b
    ha, hb = ddp.run.history(0), one.run.history(0)
    for col in ("val_loss", "val_auc", "val_accuracy", "train_ce"):
        np.testing.assert_allclose(ha[col], hb[col], rtol=1e-5)
    ma = json.loads((ddp.run.fold_dir(0) / "metrics.json").read_text())
    mb = json.loads((one.run.fold_dir(0) / "metrics.json").read_text())
    assert ma["best_epoch"] == mb["best_epoch"]
    assert ma["val"]["auc"] == pytest.approx(mb["val"]["auc"])
    p = api.predict(ddp.run.path, bags, fold=0)
    saved = pd.read_csv(ddp.run.fold_dir(0) / "predictions.csv").set_index("slide_id")
    got = p.table.set_index("slide_id").loc[saved.index]
    np.testing.assert_allclose(got["prob_scattered"], saved["prob_scattered"], rtol=1e-6)


def test_a_killed_ddp_run_resumes_to_the_uninterrupted_result(cohort, tmp_path):
    """SRMIL (masks, dropout: every process's RNG state in last.pt) killed after 2 of 5
    epochs with SIGKILL, then --resume: the same history and metrics as a run never
    stopped."""
    labels, bags = cohort
    argv = [sys.executable, "-m", "srmil", "train", "--labels", labels, "--bags", bags,
            "--model", "srmil", "--epochs", "5", "--device", "cpu", "--devices", "2",
            "--set", "model.heads=2", "--set", "model.hidden=8", "--set", "split.folds=2",
            "--set", "train.bootstrap=20", "--set", "train.loader_workers=0", "--quiet"]
    full = tmp_path / "full"
    done = subprocess.run([*argv, "--out", str(full)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen([*argv, "--out", str(cut)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    hist = cut / "fold_0" / "history.csv"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if hist.exists() and len(pd.read_csv(hist)) >= 2:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both training processes
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert not (cut / "fold_0" / "DONE").exists(), "the run ended before it could be killed"
    resumed = subprocess.run([*argv, "--out", str(cut), "--resume"], capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((full / "fold_0" / "metrics.json").read_text())
    b = json.loads((cut / "fold_0" / "metrics.json").read_text())
    assert a == b
    pd.testing.assert_frame_equal(pd.read_csv(full / "fold_0" / "history.csv").drop(
        columns="seconds"), pd.read_csv(cut / "fold_0" / "history.csv").drop(columns="seconds"))


def test_resuming_with_another_number_of_processes_is_refused(cohort, tmp_path):
    labels, bags = cohort
    api.train(labels, bags, tmp_path / "r", _cfg(2, 1, epochs=1))
    with pytest.raises(SrmilError, match="devices"):
        api.train(labels, bags, tmp_path / "r", _cfg(1, 1, epochs=1), resume=True)


def test_a_named_gpu_with_several_devices_is_one_line(cohort, tmp_path):
    labels, bags = cohort
    with pytest.raises(SrmilError, match="names one GPU"):
        api.train(labels, bags, tmp_path / "g", _cfg(2, 1, accelerator="cuda:0"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_under_torchrun_train_what_one_process_trains_with_twice_the_bags(
        cohort, tmp_path):
    """Two torchrun launches on this host as nodes 0 and 1 (one process each, static
    rendezvous on 127.0.0.1): rank 0 does the command's work and writes, rank 1 trains with
    it; the weights are those of one process with 2 bags per step."""
    labels, bags = cohort
    port = _free_port()
    out = tmp_path / "nodes"
    argv = ["-m", "srmil", "train", "--labels", labels, "--bags", bags, "--out", str(out),
            "--model", "mean", "--epochs", "3", "--device", "cpu", "--devices", "1",
            "--num-nodes", "2", "--set", "model.dropout=0.0", "--set", "split.folds=2",
            "--set", "train.bootstrap=20", "--set", "train.loader_workers=0", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank",
         str(node), "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port",
         str(port), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for node in (0, 1)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    one = api.train(labels, bags, tmp_path / "one", _cfg(1, 2))
    a = load_state(out / "fold_0" / "last.pt")
    b = load_state(one.run.fold_dir(0) / "last.pt")
    for k, v in b["model"].items():
        torch.testing.assert_close(a["model"][k], v, rtol=1e-5, atol=1e-6)
    assert len(a["rng_ranks"]) == 2
    np.testing.assert_allclose(pd.read_csv(out / "fold_0" / "history.csv")["val_loss"],
                               one.run.history(0)["val_loss"], rtol=1e-5)
    saved = json.loads((out / "config.json").read_text())
    assert (saved["train"]["devices"], saved["train"]["num_nodes"]) == (1, 2)


def test_torchrun_processes_other_than_the_config_are_one_line(cohort, tmp_path):
    """torchrun starts 2 processes on one node, the config says 1 × 1: one line, exit 2."""
    labels, bags = cohort
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "srmil", "train", "--labels", labels, "--bags", bags, "--out",
         str(tmp_path / "x"), "--model", "mean", "--epochs", "1", "--device", "cpu",
         "--quiet"], capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert "srmil train: error: torchrun started 1 node(s) × 2 process(es); pass --devices 2 " \
        "--num-nodes 1" in proc.stderr
    assert "srmil/" not in proc.stderr  # no traceback of srmil's (torchrun prints its own)
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_several_nodes_without_torchrun_is_one_line(cohort, tmp_path):
    labels, bags = cohort
    with pytest.raises(SrmilError, match="num_nodes 2 needs srmil started on every node"):
        api.train(labels, bags, tmp_path / "n", _cfg(1, 1, num_nodes=2))
