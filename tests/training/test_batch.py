"""Several bags per optimiser step (train.bags_per_step) and the batch-level Cox loss."""

import numpy as np
import pytest
import torch
from lightning.fabric import Fabric
from tests.tasks.test_tasks import SMALL, _bags

from srmil.models import create_model
from srmil.tasks.survival import SurvivalTask, breslow_baseline, cox_partial_likelihood
from srmil.training.batch import train_step


def _cox_reference(risk, time, event):
    """The partial likelihood written out, one event at a time (Breslow's ties)."""
    terms = [risk[i] - np.log(np.sum(np.exp(risk[time >= time[i]])))
             for i in range(len(risk)) if event[i]]
    return -np.mean(terms) if terms else 0.0


def test_cox_loss_is_the_partial_likelihood_written_out():
    rng = np.random.default_rng(0)
    risk = rng.standard_normal(9)
    time = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5], dtype=float)  # ties at 1 and 5
    event = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1])
    got = cox_partial_likelihood(torch.tensor(risk), torch.tensor(time), torch.tensor(event))
    assert float(got) == pytest.approx(_cox_reference(risk, time, event), rel=1e-12)
    # a shift of every risk leaves it unchanged; ranking the events first lowers it
    assert float(cox_partial_likelihood(torch.tensor(risk + 3), torch.tensor(time),
                                        torch.tensor(event))) == pytest.approx(float(got))
    good = torch.tensor(-time)  # shorter time, higher risk
    assert float(cox_partial_likelihood(good, torch.tensor(time), torch.tensor(event))) < \
        float(cox_partial_likelihood(-good, torch.tensor(time), torch.tensor(event)))


def test_cox_loss_without_an_event_is_zero_with_zero_gradient():
    risk = torch.randn(4, requires_grad=True)
    loss = cox_partial_likelihood(risk, torch.arange(4.0), torch.zeros(4))
    loss.backward()
    assert float(loss) == 0.0 and torch.count_nonzero(risk.grad) == 0


def test_breslow_baseline_matches_scikit_survival():
    from sksurv.linear_model.coxph import BreslowEstimator

    rng = np.random.default_rng(1)
    risk, time = rng.standard_normal(30), rng.integers(1, 12, 30).astype(float)
    event = rng.integers(0, 2, 30)
    at = np.array([0.5, 2.0, 5.5, 11.0, 20.0])
    ref = BreslowEstimator().fit(risk, event.astype(bool), time).cum_baseline_hazard_
    want = [ref(min(max(t, ref.x[0]), ref.x[-1])) if t >= ref.x[0] else 0.0 for t in at]
    np.testing.assert_allclose(breslow_baseline(risk, time, event, at), want, rtol=1e-10)


def _fabric():
    return Fabric(accelerator="cpu", devices=1)


def _setup(name, task, seed=0):
    torch.manual_seed(seed)
    net = create_model(name, 6, task.out_dim, SMALL[name], task if task.name != "classification"
                       else None)
    fabric = _fabric()
    model = fabric.setup_module(net)
    model.mark_forward_method("loss")
    return fabric, model, net


def _targeted(bags, targets):
    for b, t in zip(bags, targets, strict=True):
        b.y = t
    return bags


def test_bags_per_step_is_the_gradient_of_the_mean_objective():
    """Accumulated bag by bag (memory of one bag) = the gradient of the B bags' mean loss."""
    from srmil.tasks import ClassificationTask

    task = ClassificationTask(["a", "b"])
    bags = _targeted(_bags(3), [0, 1, 1])
    fabric, model, net = _setup("abmil", task)
    net.eval()  # no dropout: the reference below sees the same function
    train_step(fabric, model, net, iter(bags), 3)
    got = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    ref = sum(net.loss(b, torch.tensor(b.y))["total"] for b in bags) / 3
    ref.backward()
    for g, p in zip(got, net.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-7)
    with pytest.raises(RuntimeError, match="expected 3 bags, got 2"):
        train_step(fabric, model, net, iter(bags[:2]), 3)


def test_one_bag_per_step_is_bit_identical_to_a_plain_backward():
    from srmil.tasks import ClassificationTask

    bags = _targeted(_bags(1), [1])
    fabric, model, net = _setup("srmil", ClassificationTask(["a", "b"]))
    torch.manual_seed(5)
    parts = train_step(fabric, model, net, iter(bags), 1)
    got = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    torch.manual_seed(5)
    ref = net.loss(bags[0], torch.tensor(1))
    ref["total"].backward()
    assert parts["total"] == float(ref["total"])
    for g, p in zip(got, net.parameters(), strict=True):
        assert torch.equal(g, p.grad)


def _survival(n):
    task = SurvivalTask(loss="cox", bins=3)
    targets = [(1.0 + (i * 7) % n, int(i % 3 != 0)) for i in range(n)]
    task.fit(targets)
    return task, targets


def test_srmil_cox_step_is_its_objective_over_the_batch():
    """SRMIL's (2 − w_gen)·[(2 − w_ce)·Cox(masked) + w_ce·Cox(full)] + w_gen·mean(rec), the Cox
    terms over the step's bags, from one backward; same masks and dropout (same seed)."""
    task, targets = _survival(4)
    bags = _targeted(_bags(4), targets)
    fabric, model, net = _setup("srmil", task)
    torch.manual_seed(3)
    parts = train_step(fabric, model, net, iter(bags), 4, task=task)
    got = [p.grad.clone() for p in net.parameters()]
    assert set(parts) == {"total", "cox_masked", "cox_full", "rec"}

    seen = []
    net._objective = lambda out_m, out_f, y, rec: (  # capture the terms, then the same tail
        seen.append((out_m, out_f, rec)) or {"total": rec})
    net.zero_grad()
    torch.manual_seed(3)
    for b in bags:
        net.loss(b, torch.tensor(b.y))
    t = torch.tensor(targets, dtype=torch.float32)
    cox = lambda outs: cox_partial_likelihood(torch.stack(outs).view(-1), t[:, 0], t[:, 1])  # noqa: E731
    l_m, l_f = cox([o for o, _, _ in seen]), cox([o for _, o, _ in seen])
    rec = torch.stack([r for _, _, r in seen]).mean()
    w_gen, w_ce = net.cfg.w_gen, net.cfg.w_ce
    ref = (2 - w_gen) * ((2 - w_ce) * l_m + w_ce * l_f) + w_gen * rec
    ref.backward()
    assert parts["total"] == pytest.approx(float(ref), rel=1e-5)
    assert parts["cox_masked"] == pytest.approx(float(l_m), rel=1e-5)
    assert parts["rec"] == pytest.approx(float(rec), rel=1e-5)
    for g, p in zip(got, net.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["abmil", "dtfd", "dsmil", "clam_sb", "patchgcn"])
def test_every_objective_takes_the_cox_loss(name):
    task, targets = _survival(4)
    bags = _targeted(_bags(4), targets)
    fabric, model, net = _setup(name, task)
    parts = train_step(fabric, model, net, iter(bags), 4, task=task)
    assert all(np.isfinite(v) for v in parts.values())
    assert any(p.grad is not None and torch.count_nonzero(p.grad) for p in net.parameters())
    with pytest.raises(RuntimeError, match="compares bags"):
        net.loss(bags[0], torch.tensor(bags[0].y))  # outside a step: no per-bag value


def test_cox_predictions_need_the_fitted_baseline():
    task, targets = _survival(6)
    out = torch.tensor([0.3])
    assert np.isnan(task.transform(out)[1:]).all()
    task.fit_outputs(np.array([[r] + [0.0] * 3 for r in np.linspace(-1, 1, 6)]))
    row = task.transform(out)
    assert row[0] == pytest.approx(0.3) and np.all(np.diff(row[1:]) <= 0)
    assert 0 < row[-1] < 1
    from srmil.tasks import task_of_state
    again = task_of_state(task.state(), [])
    np.testing.assert_array_equal(again.transform(out), row)
