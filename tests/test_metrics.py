"""runtime.metrics.evaluate on a hand-built network whose answers are known in closed form.

The network reads the mean pixel m of its input and outputs [10 * relu(m - 0.5), 0.5]. With
SR(eps = 0.1, delta = 0.5):

* inputs with every pixel <= 0.4 cannot reach the ramp: f is constant on the ball, SR holds;
* inputs with every pixel in [0.6, 0.9] sit on the ramp: moving all pixels by eps changes
  output 0 by 10 * 0.1 = 1.0 > delta, so SR is violated (PGD finds it in one signed step).

Seven examples, three on the ramp: constraint security at eps 0.1 is exactly 4/7.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from robustspec.compiler import compile_spec
from robustspec.dsl.errors import InputError
from robustspec.runtime.metrics import EvalResult, EvalRow, evaluate

SPECS = Path(__file__).resolve().parents[1] / "specs"

VALUES = [0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.8]
ON_RAMP = [4, 5, 6]  # the examples SR(0.1, 0.5) is violated at
LABELS = [1, 1, 1, 0, 0, 0, 1]  # predictions are [1, 1, 1, 1, 0, 0, 0]: 5 of 7 correct


class Ramp(nn.Module):
    """f(x) = [10 * relu(mean(x) - 0.5), 0.5]; records the mode of every forward call."""

    def __init__(self):
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([10 * torch.relu(m - 0.5), torch.full_like(m, 0.5)], 1)


def images(values=VALUES):
    return torch.tensor(values).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


@pytest.fixture(scope="module")
def sr():
    return compile_spec(SPECS / "standard_robustness.spec")["sr"]


@pytest.fixture
def data():
    return images(), torch.tensor(LABELS)


def test_known_security_clean_accuracy_and_eps_zero(sr, data):
    x, y = data
    r = evaluate(Ramp(), sr, x, y, eps=[0.0, 0.1], steps=10, samples=0, params={"delta": 0.5})
    assert [row.eps for row in r.rows] == [0.0, 0.1]
    for row in r.rows:
        assert row.n == 7
        assert row.clean_accuracy == pytest.approx(5 / 7)
        assert row.vacuous == 0  # SR has no premise besides its domain
        assert row.constraint_accuracy is None  # samples=0 skips it
        assert row.seconds >= 0
    assert r.rows[0].constraint_security == 1.0  # eps 0: the ball is the point itself
    assert r.rows[1].constraint_security == pytest.approx((7 - len(ON_RAMP)) / 7)


def test_constraint_accuracy_by_sampling(sr, data):
    x, y = data
    x = x[:, :, :1, :1]  # one pixel: a uniform sample moves it by more than 0.05 half the time
    r = evaluate(Ramp(), sr, x, y, eps=[0.0, 0.1], steps=10, samples=50, params={"delta": 0.5})
    assert r.rows[0].constraint_accuracy == 1.0
    # on-ramp examples are violated once the pixel moves by more than 0.05 (missed by all 50
    # samples with probability 2**-50); off-ramp ones always hold
    assert r.rows[1].constraint_accuracy == pytest.approx(4 / 7)


def test_delta_large_enough_means_secure(sr, data):
    x, y = data
    # the largest possible move of output 0 within eps 0.1 is 1.0
    r = evaluate(Ramp(), sr, x, y, eps=[0.1], steps=10, samples=10, params={"delta": 1.5})
    assert r.rows[0].constraint_security == 1.0 and r.rows[0].constraint_accuracy == 1.0


def test_chunking_gives_the_same_answers(sr, data):
    x, y = data
    kw = dict(eps=[0.0, 0.03, 0.1], steps=10, samples=20, params={"delta": 0.5})
    one = evaluate(Ramp(), sr, x, y, batch_size=1000, **kw)
    chunked = evaluate(Ramp(), sr, x, y, batch_size=3, **kw)
    for a, b in zip(one.rows, chunked.rows):
        assert (a.eps, a.n, a.clean_accuracy, a.constraint_security, a.vacuous) == \
               (b.eps, b.n, b.clean_accuracy, b.constraint_security, b.vacuous)
    # at eps 0.03 an on-ramp example moves output 0 by at most 0.3 < delta: never violated
    assert [r.constraint_security for r in one.rows] == pytest.approx([1.0, 1.0, 4 / 7])


class Rows(Ramp):
    """Ramp that also records the number of rows of every forward call."""

    def __init__(self):
        super().__init__()
        self.rows: list[int] = []

    def forward(self, x):
        self.rows.append(x.shape[0])
        return super().forward(x)


def test_forward_rows_splits_the_passes_and_keeps_the_answers(sr, data):
    x, y = data
    kw = dict(eps=[0.0, 0.03, 0.1], steps=10, samples=20, params={"delta": 0.5})
    whole, split = Rows(), Rows()
    one = evaluate(whole, sr, x, y, **kw)
    two = evaluate(split, sr, x, y, forward_rows=2, **kw)
    for a, b in zip(one.rows, two.rows):
        assert (a.eps, a.clean_accuracy, a.constraint_security, a.constraint_accuracy,
                a.vacuous) == (b.eps, b.clean_accuracy, b.constraint_security,
                               b.constraint_accuracy, b.vacuous)
    assert max(whole.rows) == 7 and max(split.rows) == 2  # 7 inputs: passes of 2, 2, 2, 1
    assert sorted(set(split.rows)) == [1, 2]
    assert not any(split.modes)  # every pass in eval mode through the wrapper
    assert two.settings["forward_rows"] == 2 and "forward_rows" not in one.settings
    # as many rows as the chunk (or more): one pass each, nothing recorded
    wide = Rows()
    r = evaluate(wide, sr, x, y, forward_rows=7, **kw)
    assert max(wide.rows) == 7 and "forward_rows" not in r.settings


def test_row_chunks_outputs_and_gradients_match_one_pass():
    from robustspec.runtime.metrics import RowChunks
    from robustspec.runtime.models import SmallCNN

    torch.manual_seed(0)
    cnn = SmallCNN(1, 8, classes=3, width=2, hidden=4).eval()
    x = torch.rand(5, 1, 8, 8, requires_grad=True)
    whole = cnn(x)
    (g_whole,) = torch.autograd.grad(whole.square().sum(), x)
    split = RowChunks(cnn, 2)
    assert not split.training and not cnn.training
    out = split(x)
    (g_split,) = torch.autograd.grad(out.square().sum(), x)
    assert out.shape == whole.shape
    torch.testing.assert_close(out, whole)
    torch.testing.assert_close(g_split, g_whole)


def test_a_network_made_after_another_is_freed_gets_its_own_class_count():
    """The output size a property learns for `classes` belongs to the network object, not to
    its id: evaluate's RowChunks wrapper is made and freed per call, and the next call's
    wrapper often has the same id. With ids as keys a network of 8 outputs was once checked
    over the 7 classes of the one before, missing its only sensitive output (security 1.0
    instead of 0.0)."""
    import gc

    prop = compile_spec("""
network f : Tensor -> Tensor
param eps : Real = 0.1
param delta : Real = 0.5
property pc(x0 : Tensor, y : Label) =
  forall x . norm_inf(x - x0) <= eps and 0 <= x <= 1 =>
    forall j in classes . abs(f(x)[j] - f(x0)[j]) <= delta
""")["pc"]
    x, y = torch.rand(6, 4), torch.zeros(6, dtype=torch.long)
    for k in range(2, 12):
        net = nn.Linear(4, k)
        with torch.no_grad():  # only the last output moves: 10 * 0.1 > delta on the ball
            net.weight.zero_()
            net.bias.zero_()
            net.weight[-1] = 10.0
        r = evaluate(net, prop, x, y, eps=[0.1], steps=5, samples=0, forward_rows=2)
        assert r.rows[0].constraint_security == 0.0, k
    del net, r
    gc.collect()  # and nothing is kept for networks that are gone
    assert len(prop._class_sizes._weak) == 0 and not prop._class_sizes._strong


@pytest.mark.parametrize("bad", [0, -3, 2.5, "many"])
def test_forward_rows_must_be_a_positive_whole_number(sr, data, bad):
    x, y = data
    with pytest.raises(InputError, match="forward_rows"):
        evaluate(Ramp(), sr, x, y, eps=[0.1], steps=2, samples=0, forward_rows=bad)


def test_vacuous_count_for_a_false_premise(data):
    x, y = data
    spec = compile_spec("""
network f : Tensor -> Tensor
param eps : Real = 0.1
param delta : Real = 0.5
property guarded(x0 : Tensor, y : Label) =
  forall x . norm_inf(x - x0) <= eps and 0 <= x <= 1 and f(x0)[0] >= 1.5 =>
    norm_inf(f(x) - f(x0)) <= delta
""")
    # f(x0)[0] >= 1.5 only for x0 = 0.7 and 0.8: the other five hold vacuously
    r = evaluate(Ramp(), spec["guarded"], x, y, eps=[0.0, 0.1], steps=10, samples=0)
    assert [row.vacuous for row in r.rows] == [5, 5]
    # security counts only non-vacuous successes: at eps 0 the two guarded inputs hold,
    # at eps 0.1 both are violated; the five vacuous ones are reported apart
    assert r.rows[0].constraint_security == pytest.approx(2 / 7)
    assert r.rows[1].constraint_security == 0.0


def test_model_mode_is_restored_and_eval_used(sr, data):
    x, y = data
    for training in (True, False):
        model = Ramp()
        model.train(training)
        evaluate(model, sr, x, y, eps=[0.1], steps=3, samples=2)
        assert model.training is training
        assert model.modes and not any(model.modes)  # every forward ran in eval mode


def test_model_mode_restored_after_an_error(sr, data):
    x, y = data

    class Broken(Ramp):
        def forward(self, x):
            if not torch.is_grad_enabled():
                return super().forward(x)
            raise RuntimeError("boom")

    model = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        evaluate(model, sr, x, y, eps=[0.1], steps=3, samples=0)
    assert model.training


def test_unknown_eps_param(sr, data):
    x, y = data
    with pytest.raises(ValueError, match="no parameter 'radius'.*eps, delta"):
        evaluate(Ramp(), sr, x, y, eps_param="radius")


def test_sweep_another_parameter(sr, data):
    x, y = data
    r = evaluate(Ramp(), sr, x, y, eps=[2.0, 0.5], eps_param="delta", steps=10, samples=0,
                 params={"eps": 0.1})
    assert [row.constraint_security for row in r.rows] == pytest.approx([1.0, 4 / 7])


def test_table_and_save(sr, data, tmp_path):
    x, y = data
    r = evaluate(Ramp(), sr, x, y, eps=[0.0, 0.1], steps=5, samples=3, params={"delta": 0.5},
                 seed=7)
    text = r.table()
    assert text.splitlines()[0] == "property sr"
    for word in ("eps", "clean acc", "security", "accuracy", "vacuous"):
        assert word in text
    assert len(text.splitlines()) == 3 + 2  # title, head, rule, one line per eps
    assert str(r) == text
    assert r.settings == {"steps": 5, "step_size": None, "restarts": 1, "samples": 3,
                          "logic": "dl2", "seed": 7, "n": 7, "swept": "eps",
                          "spec": sr.spec_name, "params": {"delta": 0.5}}  # every value used
    # a stem with a dot keeps it ("eta0.9" must not become "eta0.json")
    assert [p.name for p in r.save(tmp_path / "scr-eta0.9")] == ["scr-eta0.9.json",
                                                                 "scr-eta0.9.csv"]
    with pytest.raises(ValueError, match="eps must be one or more finite numbers >= 0"):
        evaluate(Ramp(), sr, x, y, eps=[-0.1])

    j, c = r.save(tmp_path / "out" / "eval-sr")
    assert (j.name, c.name) == ("eval-sr.json", "eval-sr.csv")
    saved = json.loads(j.read_text())
    assert saved["property"] == "sr" and saved["settings"]["seed"] == 7
    assert [row["eps"] for row in saved["rows"]] == [0.0, 0.1]
    assert saved["rows"][1]["constraint_security"] == pytest.approx(4 / 7)
    with open(c, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["eps", "n", "clean_accuracy", "constraint_security",
                             "constraint_accuracy", "vacuous", "seconds"]
    assert len(rows) == 2
    assert float(rows[1]["constraint_security"]) == pytest.approx(4 / 7)
    assert int(rows[0]["n"]) == 7


def test_table_without_constraint_accuracy():
    r = EvalResult("p", [EvalRow(0.1, 10, 0.5, 0.25, None, 0, 1.0)])
    line = r.table().splitlines()[-1]
    assert "-" in line.split()[3] and math.isclose(float(line.split()[2]), 0.25)
