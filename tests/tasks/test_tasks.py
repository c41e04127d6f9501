"""The task seam: survival and regression labels, losses, metrics, every model's head."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from srmil.bags.cohort import read_labels
from srmil.config import RunConfig, SurvivalConfig
from srmil.errors import CohortError, SrmilError
from srmil.models import MODELS, create_model
from srmil.tasks import (
    TASKS,
    ClassificationTask,
    RegressionTask,
    SurvivalTask,
    classification_loss,
    infer_task,
    make_task,
    task_of_state,
)
from srmil.tasks.survival import discrete_time_nll
from srmil.training.metrics import (
    bootstrap_ci_fn,
    harrell_c_index,
    paired_bootstrap_fn,
    regression_metrics,
    survival_metrics,
)

# ---- labels -------------------------------------------------------------------------------


def write(tmp_path, text, name="labels.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_task_is_inferred_from_the_columns(caplog):
    caplog.set_level("INFO")
    assert infer_task(["slide_id", "label"]) == "classification"
    assert infer_task(["slide_id", "time", "event"], "x/l.csv") == "survival"
    assert "task: survival (from the column(s) time + event of l.csv)" in caplog.text
    assert infer_task(["slide_id", "survival_months", "censorship"]) == "survival"
    assert infer_task(["slide_id", "target"]) == "regression"
    with pytest.raises(CohortError, match="no label column"):
        infer_task(["slide_id", "foo"])


def test_survival_labels_both_conventions(tmp_path):
    a = read_labels(write(tmp_path, "slide_id,case_id,time,event\ns1,c1,3.5,1\ns2,c2,7,0\n"))
    assert a.attrs["task"] == "survival"
    assert a["target"].tolist() == [(3.5, 1), (7.0, 0)]
    assert a["label"].tolist() == ["event", "censored"]
    b = read_labels(write(tmp_path, "slide_id,survival_months,censorship\ns1,3.5,0\ns2,7,1\n",
                          "clam.csv"))
    assert b["target"].tolist() == [(3.5, 1), (7.0, 0)]  # censorship 1 = censored
    assert b["case_id"].tolist() == ["s1", "s2"]


@pytest.mark.parametrize("text,task,message", [
    ("slide_id,label\ns1,a\n", "survival", "survival needs columns time \\+ event"),
    ("slide_id,time,event\ns1,1,1\ns2,-2,0\n", "auto", "line 3: time -2 is negative"),
    ("slide_id,time,event\ns1,abc,1\n", "auto", "line 2: time 'abc' is not a finite number"),
    ("slide_id,time,event\ns1,1,1\ns2,,0\n", "auto", "line 3: time is empty"),
    ("slide_id,time,event\ns1,1,2\n", "auto", "line 2: event must be 0 or 1, got '2'"),
    ("slide_id,survival_months,censorship\ns1,1,yes\n", "auto",
     "line 2: censorship 'yes' is not a finite number"),
    ("slide_id,target\ns1,1.5\ns2,nan\n", "auto", "line 3: target 'nan' is not a finite"),
    ("slide_id,target\ns1,\n", "auto", "line 2: target is empty"),
    ("slide_id,label\ns1,a\n", "regression", "regression needs a 'target' column"),
])
def test_bad_labels_are_one_line_naming_file_and_line(tmp_path, text, task, message):
    p = write(tmp_path, text)
    with pytest.raises(CohortError, match=message) as e:
        read_labels(p, task=task)
    line = str(e.value)
    assert "\n" not in line and str(p) in line


def test_regression_strata_are_target_quantiles(tmp_path):
    rows = "".join(f"s{i},{v}\n" for i, v in enumerate([5, 1, 3, 2, 8, 7, 4, 6]))
    df = read_labels(write(tmp_path, "slide_id,target\n" + rows), strata=4)
    assert df.attrs["task"] == "regression"
    order = df.sort_values("target")["label"].tolist()
    assert order == ["q1", "q1", "q2", "q2", "q3", "q3", "q4", "q4"]


# ---- losses -------------------------------------------------------------------------------


def test_discrete_nll_matches_a_hand_computation():
    logits = torch.tensor([[0.2, -0.5, 1.0], [-1.0, 0.3, 0.1]], dtype=torch.float64)
    y, event = torch.tensor([1, 2]), torch.tensor([1.0, 0.0])
    h = torch.sigmoid(logits)
    # patient 0: event in bin 1: survived bin 0, then the event
    l0 = -(math.log(1 - h[0, 0]) + math.log(h[0, 1]))
    # patient 1: censored in bin 2: survived bins 0, 1 and 2
    l1 = -math.log((1 - h[1, 0]) * (1 - h[1, 1]) * (1 - h[1, 2]))
    got = discrete_time_nll(logits, y, event)
    assert float(got) == pytest.approx((l0 + l1) / 2, rel=1e-12)
    # alpha adds weight on the uncensored term: (1-a)(l0 + l1)/2 + a·l0/2
    got_a = discrete_time_nll(logits, y, event, alpha=0.4)
    assert float(got_a) == pytest.approx(0.6 * (l0 + l1) / 2 + 0.4 * l0 / 2, rel=1e-12)


def test_survival_task_bins_and_loss_from_time():
    task = SurvivalTask(bins=4)
    targets = [(t, 1) for t in (1.0, 2.0, 3.0, 4.0, 5.0)] + [(9.0, 0)]
    task.fit(targets)
    assert task.edges == pytest.approx(np.quantile([1, 2, 3, 4, 5], [0.25, 0.5, 0.75]))
    assert task.bin_of(torch.tensor([0.5, 2.0, 3.5, 100.0])).tolist() == [0, 1, 2, 3]
    out = torch.tensor([0.1, 0.2, -0.3, 0.4])
    ref = discrete_time_nll(out[None], torch.tensor([2]), torch.tensor([0.0]))
    assert torch.equal(task.loss(out, torch.tensor([3.5, 0.0])), ref)
    row = task.transform(out)
    s = np.cumprod(1 - 1 / (1 + np.exp(-out.double().numpy())))
    np.testing.assert_allclose(row, np.r_[-s.sum(), s])
    back = task_of_state(task.state(), [])
    assert back.edges == task.edges and back.train_time == task.train_time


def test_survival_fit_without_an_event_is_one_line():
    with pytest.raises(SrmilError, match="no observed event"):
        SurvivalTask().fit([(1.0, 0), (2.0, 0)])


def test_regression_is_standardised_on_train_and_reported_in_units():
    task = RegressionTask("mse")
    task.fit([10.0, 20.0, 30.0])
    assert task.mean == 20.0 and task.std == pytest.approx(np.std([10, 20, 30]))
    out = torch.tensor([0.5])
    z = (torch.tensor(30.0) - 20) / task.std
    assert float(task.loss(out, torch.tensor(30.0))) == pytest.approx(float((0.5 - z) ** 2))
    assert task.transform(out)[0] == pytest.approx(20 + 0.5 * task.std)
    huber = RegressionTask("huber", huber_delta=0.1)
    huber.fit([10.0, 20.0, 30.0])
    assert float(huber.loss(out, torch.tensor(30.0))) == pytest.approx(
        float(F.huber_loss(out, z.view(1), delta=0.1)))


def test_classification_loss_is_plain_cross_entropy():
    out, y = torch.randn(3), torch.tensor(2)
    assert torch.equal(classification_loss(out, y), F.cross_entropy(out[None], y.view(1)))
    assert make_task("classification", RunConfig(), ["a", "b"]).out_dim == 2
    assert set(TASKS.names()) == {"classification", "regression", "survival"}


# ---- metrics ------------------------------------------------------------------------------


def test_harrell_c_index_matches_scikit_survival():
    from sksurv.metrics import concordance_index_censored

    rng = np.random.default_rng(0)
    for _ in range(5):
        t = rng.permutation(40).astype(float) + rng.uniform(0, 0.5, 40)  # no tied times
        e = rng.random(40) < 0.6
        r = np.round(rng.standard_normal(40), 1)  # some tied risks
        ref = concordance_index_censored(e, t, r)[0]
        assert harrell_c_index(t, e, r) == pytest.approx(ref, abs=1e-12)
    assert math.isnan(harrell_c_index(np.array([1.0, 2.0]), np.array([False, False]),
                                      np.array([0.0, 1.0])))


def test_survival_metrics_are_sane_and_undefined_without_events():
    rng = np.random.default_rng(1)
    risk = rng.standard_normal(80)
    t = rng.exponential(np.exp(-risk)) + 0.01
    e = rng.random(80) < 0.7
    surv = lambda ts: np.exp(-np.outer(np.exp(risk), ts))  # noqa: E731 - the true model
    m = survival_metrics(t[40:], e[40:], risk[40:], lambda ts: surv(ts)[40:], t[:40], e[:40],
                         list(np.quantile(t[:40][e[:40]], [0.25, 0.5, 0.75])))
    assert m["c_index"] > 0.6 and m["c_index_uno"] > 0.6 and m["td_auc"] > 0.6
    assert 0 < m["ibs"] < 0.25
    none = survival_metrics(t[:5], np.zeros(5, bool), risk[:5], lambda ts: surv(ts)[:5],
                            t, e, [1.0])
    assert all(math.isnan(none[k]) for k in ("c_index", "c_index_uno", "td_auc", "ibs"))


def test_regression_metrics_by_hand():
    y, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.5, 5.0])
    m = regression_metrics(y, p)
    assert m["mae"] == pytest.approx(0.5) and m["rmse"] == pytest.approx(math.sqrt(1.5 / 4))
    assert m["r2"] == pytest.approx(1 - 1.5 / 5)
    assert m["pearson"] == pytest.approx(np.corrcoef(y, p)[0, 1])
    assert m["spearman"] == pytest.approx(1.0)


def test_generic_bootstrap_brackets_the_estimate():
    rng = np.random.default_rng(2)
    y = rng.standard_normal(60)
    p = y + 0.5 * rng.standard_normal(60)
    fn = lambda idx: regression_metrics(y[idx], p[idx])["mae"]  # noqa: E731
    lo, hi = bootstrap_ci_fn([(fn, 60)], n_boot=200)
    assert lo < fn(np.arange(60)) < hi
    worse = lambda idx: regression_metrics(y[idx], p[idx] + 1.0)["mae"]  # noqa: E731
    res = paired_bootstrap_fn([(worse, fn, 60)], n_boot=200)
    assert res["diff"] > 0 and res["ci95_lo"] > 0 and res["p"] < 0.05


# ---- every model gets the head -----------------------------------------------------------

SMALL = {"srmil": {"heads": 2, "hidden": 8, "cls_hidden": 16},
         "srmil_lowmask": {"heads": 2, "hidden": 8, "cls_hidden": 16},
         "abmil": {"hidden": 16, "attn_dim": 8}, "abmil_gated": {"hidden": 16, "attn_dim": 8},
         "mean": {"hidden": 16}, "max": {"hidden": 16},
         "clam_sb": {"hidden": 16, "attn_dim": 8, "k_sample": 3},
         "transmil": {"dim": 16, "heads": 2, "landmarks": 8, "residual_kernel": 3,
                      "pinv_iterations": 2},
         "dsmil": {"q_dim": 8}, "dtfd": {"hidden": 16, "attn_dim": 8},
         "patchgcn": {"hidden": 8, "layers": 2}}


def _bags(n_bags: int, d: int = 6):
    from srmil.graphs.graph_bag import GraphBag
    from srmil.graphs.grid import build_edge_index

    rng = np.random.default_rng(0)
    out = []
    for i in range(n_bags):
        n = 12 + i
        side = int(np.ceil(np.sqrt(n))) + 1
        cells = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n]
        ei, _ = build_edge_index(cells * 224, 224.0)
        x = torch.from_numpy(rng.standard_normal((n, d)).astype(np.float32))
        out.append(GraphBag(x, torch.from_numpy(ei), f"s{i}", None))
    return out


def _fitted(kind: str):
    if kind == "survival":
        task = SurvivalTask(bins=3)
        targets = [(1.0 + i, i % 2) for i in range(6)]
    else:
        task = RegressionTask()
        targets = [float(i) for i in range(6)]
    task.fit(targets)
    return task, targets


def test_every_model_is_covered_here():
    assert set(MODELS.names()) <= set(SMALL)


@pytest.mark.parametrize("kind", ["survival", "regression"])
@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_trains_for_survival_and_regression(name, kind, tmp_path):
    from srmil.training.checkpoint import load_weights, save_weights

    task, targets = _fitted(kind)
    torch.manual_seed(0)
    net = create_model(name, 6, task.out_dim, SMALL[name], task)
    assert net.task is task and not net.classifies
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    bags = _bags(len(targets))
    net.train()
    for bag, t in zip(bags, targets, strict=True):
        parts = net.loss(bag, torch.tensor(t))
        assert all(torch.isfinite(v) for v in parts.values()), parts
        if name != "dtfd":  # DTFD logs its tiers (tier1, tier2), each a task loss
            assert task.loss_name in "".join(parts)  # the task loss is what is logged
        opt.zero_grad()
        parts["total"].backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        out = net(bags[0])
    assert out.shape == (task.out_dim,)
    row = task.transform(out)
    assert row.shape == ((1 + task.out_dim) if kind == "survival" else 1,)
    save_weights(tmp_path / "w.safetensors", net.state_dict(), {"task": task.state()})
    twin = create_model(name, 6, task.out_dim, SMALL[name], task_of_state(task.state(), []))
    meta = load_weights(tmp_path / "w.safetensors", twin)
    twin.eval()
    with torch.no_grad():
        assert torch.equal(twin(bags[0]), out)
    assert meta["task"]["task"] == kind


@pytest.mark.parametrize("kind", ["survival", "regression"])
def test_the_base_loss_is_the_task_loss(kind):
    task, targets = _fitted(kind)
    net = create_model("mean", 6, task.out_dim, SMALL["mean"], task).eval()
    bag, t = _bags(1)[0], torch.tensor(targets[0])
    parts = net.loss(bag, t)
    assert torch.equal(parts["total"], task.loss(net(bag), t))


def test_survival_config_is_checked():
    with pytest.raises(Exception, match="survival.bins"):
        SurvivalConfig(bins=0)
    with pytest.raises(Exception, match="survival.loss must be nll or cox"):
        SurvivalConfig(loss="ce")
    with pytest.raises(SrmilError, match="not a survival loss"):
        SurvivalTask(loss="ce")
    with pytest.raises(Exception, match="bags_per_step >= 2"):
        RunConfig(task="survival", survival=SurvivalConfig(loss="cox"))


def test_classification_task_round_trips_the_prediction_table():
    task = ClassificationTask(["a", "b"])
    p = np.array([[0.2, 0.8], [0.9, 0.1]])
    cols = task.table(p, [1, 0])
    df = pd.DataFrame(cols)
    assert df["pred"].tolist() == ["b", "a"]
    np.testing.assert_array_equal(task.outputs_of(df), p)


def test_risk_groups_logrank_and_calibration_by_hand():
    from srmil.reports.task_figures import calibration_table, logrank_p, risk_groups

    t = pd.DataFrame({"slide_id": list("abcdef"), "time": [1, 2, 3, 4, 5, 6.0],
                      "event": [1, 1, 0, 1, 0, 0], "risk": [5, 4, 3, 2, 1, 0.0]})
    g = risk_groups({0: t}, {0: 2.5})  # the training median, not this split's
    assert g["group"].tolist() == ["high"] * 3 + ["low"] * 3
    from sksurv.compare import compare_survival
    from sksurv.util import Surv

    ref = compare_survival(Surv.from_arrays(t.event.astype(bool), t.time), g.group.to_numpy())
    assert logrank_p(g) == pytest.approx(ref[1])
    cal = calibration_table(g, np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), 2.5).set_index(
        "risk group")
    # high risk: events at 1 and 2 among 3 at risk → KM (2/3)·(1/2) at t = 2.5
    assert cal.loc["high", "observed S(t) (Kaplan–Meier)"] == pytest.approx(1 / 3)
    assert cal.loc["low", "observed S(t) (Kaplan–Meier)"] == 1.0
    assert cal.loc["high", "predicted S(t)"] == pytest.approx(0.2)
