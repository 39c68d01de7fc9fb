"""Quantifier search: the domain is never left, the model is left as found, restarts only help,
pinned candidates give exact values, and an attack on a hand-built linear model succeeds."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustspec.compiler import DL2, FGSM, PGD, FixedPoints, RandomSampling, compile_spec
from robustspec.dsl.errors import InputError
from robustspec.runtime.models import PaperMLP

SPECS = Path(__file__).parents[1] / "specs"
BATCH = 7
N_IN, N_OUT = 4, 3

DOMAIN_SPEC = f"""
network f : Tensor[{N_IN}] -> Tensor[{N_OUT}]
param eps : Real = 0.1
param delta : Real = 0.001
property linf(x0 : Tensor[{N_IN}]) =
  forall x . norm_inf(x - x0) <= eps and 0 <= x <= 1 => norm_inf(f(x) - f(x0)) <= delta
property l2(x0 : Tensor[{N_IN}]) =
  forall x . norm_2(x - x0) <= eps and 0 <= x <= 1 => norm_inf(f(x) - f(x0)) <= delta
property l2_only(x0 : Tensor[{N_IN}]) =
  forall x . norm_2(x - x0) <= eps => norm_inf(f(x) - f(x0)) <= delta
property witness(x0 : Tensor[{N_IN}]) =
  exists x . norm_inf(x - x0) <= eps and 0 <= x <= 1 and f(x)[0] >= 100
"""


@pytest.fixture(scope="module")
def dspec():
    return compile_spec(DOMAIN_SPEC, filename="domain.spec")


def mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(N_IN, 8), torch.nn.Tanh(), torch.nn.Linear(8, N_OUT))


def inputs(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(BATCH, N_IN, generator=g)
    x0[0, 0], x0[1, 1], x0[2] = 0.0, 1.0, 0.0  # on the box's faces and corner
    return x0


STRATEGIES = {
    "pgd": lambda: PGD(steps=4, step_size=0.5),
    "pgd_default_step": lambda: PGD(steps=3, restarts=2),
    "fgsm": lambda: FGSM(),
    "fgsm_big_step": lambda: FGSM(step_size=5.0),
    "random": lambda: RandomSampling(samples=4),
    "points": lambda: FixedPoints({"x": torch.randn(BATCH, 3, N_IN) * 3}),
}


def assert_in_domain(prop_name, x, x0, eps):
    assert x.shape == x0.shape
    assert torch.isfinite(x).all()
    if prop_name in ("linf", "witness"):
        assert ((x - x0).abs() <= eps + 1e-6).all()
    else:
        assert ((x - x0).norm(dim=1) <= eps + 1e-5).all()
    if prop_name != "l2_only":
        assert (x >= 0).all() and (x <= 1).all()


@settings(max_examples=12, deadline=None)
@given(eps=st.sampled_from([0.0, 0.01, 0.1, 0.3]) | st.floats(0.0, 0.6),
       seed=st.integers(0, 2 ** 16), strategy=st.sampled_from(sorted(STRATEGIES)))
@pytest.mark.parametrize("prop_name", ["linf", "l2", "l2_only", "witness"])
def test_search_stays_in_the_domain(dspec, prop_name, eps, seed, strategy):
    prop = dspec[prop_name]
    x0 = inputs(seed)
    found = prop.search(mlp(seed), x0=x0, search=STRATEGIES[strategy](), params={"eps": eps},
                        generator=torch.Generator().manual_seed(seed))
    assert list(found) == ["x"]
    assert_in_domain(prop_name, found["x"], x0, eps)


@pytest.mark.parametrize("search, opts", [("pgd", {"steps": 3}), ("fgsm", {}),
                                          ("random", {"samples": 3})])
def test_search_by_name_stays_in_the_domain(dspec, search, opts):
    x0 = inputs(1)
    for name in ("linf", "l2"):
        found = dspec[name].search(mlp(1), x0=x0, search=search, params={"eps": 0.2}, **opts)
        assert_in_domain(name, found["x"], x0, 0.2)


def test_search_without_quantifiers_finds_nothing():
    spec = compile_spec("network f : Tensor -> Tensor\nproperty p(x0 : Tensor) = f(x0) <= 1")
    assert len(spec["p"].search(torch.nn.Linear(2, 2), x0=torch.rand(BATCH, 2))) == 0


# ---------------------------------------------------------------- the model is left as found
class Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(N_IN, N_OUT)
        self.drop = torch.nn.Dropout(0.5)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.drop(self.lin(x))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("call", ["search", "holds", "check", "loss"])
@pytest.mark.parametrize("strategy", ["pgd", "fgsm", "random"])
def test_model_mode_restored_and_no_gradients_left(dspec, training, call, strategy):
    m = Recorder()
    m.train(training)
    opts = {"pgd": {"steps": 2}, "fgsm": {}, "random": {"samples": 2}}[strategy]
    getattr(dspec["linf"], call)(m, x0=inputs(0), search=strategy, **opts)
    assert m.training is training and m.drop.training is training
    assert all(p.grad is None for p in m.parameters())
    assert m.modes, "the network was never called"
    if training:
        assert m.modes[0] is False, "the search runs the network in eval mode"


@pytest.mark.parametrize("call", ["search", "holds", "check"])
def test_search_and_check_never_run_the_network_in_train_mode(dspec, call):
    m = Recorder().train()
    getattr(dspec["linf"], call)(m, x0=inputs(0), steps=2)
    assert m.modes and not any(m.modes)


def test_check_at_fixed_points_is_deterministic_for_a_model_in_train_mode(dspec):
    torch.manual_seed(0)
    m = Recorder().train()
    x0, params = inputs(0), {"delta": 0.3}
    found = dspec["linf"].search(m, x0=x0, steps=5, params=params)
    verdicts = [dspec["linf"].holds(m, x0=x0, at=found, params=params) for _ in range(5)]
    m.eval()
    want = dspec["linf"].holds(m, x0=x0, at=found, params=params)
    assert all(torch.equal(v, want) for v in verdicts)


def test_loss_searches_in_eval_mode_but_evaluates_in_the_models_mode(dspec):
    m = Recorder().train()
    loss = dspec["linf"].loss(m, x0=inputs(0), steps=2)
    assert m.training
    assert False in m.modes and True in m.modes
    assert all(p.grad is None for p in m.parameters())
    loss.backward()
    assert m.lin.weight.grad is not None


def test_eval_mode_leaves_a_network_in_eval_mode_alone_and_restores_a_training_one():
    from robustspec.compiler.quantifiers import eval_mode
    calls = []

    class Counting(torch.nn.Sequential):
        def train(self, mode=True):
            calls.append(mode)
            return super().train(mode)
    m = Counting(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5))
    m.eval()
    calls.clear()
    with eval_mode({"f": m}):
        assert not m.training and not m[1].training
    assert calls == []  # nothing in training mode: no walk over the modules
    m.train()
    calls.clear()
    with eval_mode({"f": m}):
        assert not m.training and not m[1].training
    assert calls == [False, True] and m.training and m[1].training
    m.eval()
    m[1].train()  # one submodule in training mode is enough to switch
    with eval_mode({"f": m}):
        assert not m[1].training
    assert not m.training and m[1].training and not m[0].training  # each flag restored
    m.train()
    m[1].eval()  # e.g. a frozen batch norm in a training model: stays frozen
    calls.clear()
    with eval_mode({"f": m}):
        assert not m.training and not m[1].training
    assert m.training and m[0].training and not m[1].training and calls == [False, True]
    # a network known to compute the same in both modes is not switched: nothing it runs
    # reads the flag
    mlp = PaperMLP(4, hidden=3, classes=2).train()
    with eval_mode({"f": mlp}):
        assert mlp.training
    dropout = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5)).train()
    with eval_mode({"f": dropout}):
        assert not dropout.training and not dropout[1].training
    assert dropout.training and dropout[1].training


# ---------------------------------------------------------------- restarts
def sr_objective(model, x, x0, delta):
    """The forall's search objective: the DL2 loss of the negated body `n > delta`."""
    with torch.no_grad():
        n = (model(x) - model(x0)).abs().amax(-1)
    return torch.relu(delta - n) + (n == delta).to(n.dtype)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2 ** 16), restarts=st.integers(1, 3), delta=st.sampled_from([0.05, 0.3, 1.0]))
def test_more_restarts_never_give_a_worse_point(dspec, seed, restarts, delta):
    prop, model, x0 = dspec["linf"], mlp(seed), inputs(seed)
    objectives = []
    for r in (restarts, restarts + 1, restarts + 3):
        found = prop.search(model, x0=x0, search=PGD(steps=3, restarts=r, step_size=0.02),
                            params={"eps": 0.2, "delta": delta},
                            generator=torch.Generator().manual_seed(seed))
        obj = found.objective["x"]
        assert obj.shape == (BATCH,)
        # the objective reported is the objective at the point kept
        assert torch.allclose(obj, sr_objective(model, found["x"], x0, delta), atol=1e-6)
        objectives.append(obj)
    assert (objectives[1] <= objectives[0]).all()
    assert (objectives[2] <= objectives[1]).all()


def test_same_seed_same_points(dspec):
    prop, model, x0 = dspec["linf"], mlp(3), inputs(3)
    runs = [prop.search(model, x0=x0, steps=3, generator=torch.Generator().manual_seed(7))["x"]
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


# ---------------------------------------------------------------- pinned candidates, exact values
SUM_SPEC = """
network f : Tensor[2] -> Real
property fa(x0 : Tensor[2]) = forall x . norm_inf(x - x0) <= 0.5 => f(x) <= 1
property ex(x0 : Tensor[2]) = exists x . norm_inf(x - x0) <= 0.5 and f(x) >= 1
"""


def f_sum(x):
    return x.sum(-1)


T = torch.tensor
X0 = T([[0.0, 0.0], [0.5, 0.5], [0.5, 0.5], [0.0, 0.0], [1.0, 0.0], [0.25, 0.25], [0.0, 0.5]])
CANDIDATES = T([
    [[0.1, 0.1], [0.5, 0.2], [2.0, 2.0]],     # the last projects to (0.5, 0.5): f = 1 exactly
    [[1.0, 1.0], [0.9, 0.9], [0.0, 0.0]],
    [[0.9, 0.9], [1.0, 1.0], [3.0, 3.0]],     # the last projects to (1, 1), like the second
    [[-1.0, -1.0], [0.5, 0.5], [0.25, 0.5]],  # the first projects to (-0.5, -0.5)
    [[1.5, 0.5], [1.2, 0.1], [0.0, 0.0]],     # the last projects to (0.5, 0)
    [[0.25, 0.25], [0.25, 0.25], [0.25, 0.25]],
    [[10.0, -10.0], [0.4, 0.9], [0.5, 1.0]],  # the first projects to (0.5, 0)
])


@pytest.fixture(scope="module")
def sspec():
    return compile_spec(SUM_SPEC, filename="sum.spec")


def test_fixed_points_forall_exact(sspec):
    # counterexample search descends the loss of `f(x) > 1`: relu(1 - f) + [f == 1]; equal
    # objectives go to the larger violation relu(f - 1)
    prop = sspec["fa"]
    search = FixedPoints({"x": CANDIDATES})
    found = prop.search(f_sum, x0=X0, search=search)
    chosen = T([[0.5, 0.2], [1.0, 1.0], [1.0, 1.0], [0.25, 0.5], [1.5, 0.5], [0.25, 0.25],
                [0.5, 1.0]])
    assert torch.equal(found["x"], chosen)
    f = chosen.sum(-1)  # 0.7, 2, 2, 0.75, 2, 0.5, 1.5
    assert torch.allclose(found.objective["x"], torch.relu(1 - f))
    loss = prop.loss(f_sum, x0=X0, search=search, reduction="none")
    assert torch.allclose(loss, T([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.5]))
    assert prop.holds(f_sum, x0=X0, at=found).tolist() == [True, False, False, True, False, True, False]
    assert prop.holds(f_sum, x0=X0, search=search).tolist() == [True, False, False, True, False, True,
                                                               False]


def test_fixed_points_forall_xi_changes_the_choice(sspec):
    # with xi = 0.25 the point with f == 1 (objective 0.25) beats f = 0.7 (objective 0.3)
    found = sspec["fa"].search(f_sum, x0=X0, search=FixedPoints({"x": CANDIDATES}),
                               logic=DL2(xi=0.25))
    assert torch.equal(found["x"][0], T([0.5, 0.5]))
    assert torch.equal(found["x"][3], T([0.5, 0.5]))
    assert torch.equal(found["x"][1:3], T([[1.0, 1.0], [1.0, 1.0]]))


def test_fixed_points_exists_exact(sspec):
    # witness search descends the loss of the body `f(x) >= 1`: relu(1 - f); ties keep the first
    prop = sspec["ex"]
    search = FixedPoints(CANDIDATES)  # a bare tensor names the only variable
    found = prop.search(f_sum, x0=X0, search=search)
    chosen = T([[0.5, 0.5], [1.0, 1.0], [0.9, 0.9], [0.5, 0.5], [1.5, 0.5], [0.25, 0.25],
                [0.4, 0.9]])
    assert torch.equal(found["x"], chosen)
    loss = prop.loss(f_sum, x0=X0, search=search, reduction="none")
    assert torch.allclose(loss, T([0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0]))
    assert prop.holds(f_sum, x0=X0, at=found).tolist() == [True] * 5 + [False, True]


def test_fixed_points_are_projected(sspec):
    far = torch.full((BATCH, 1, 2), 100.0)
    found = sspec["fa"].search(f_sum, x0=X0, search=FixedPoints({"x": far}))
    assert torch.equal(found["x"], X0 + 0.5)


# ---------------------------------------------------------------- attacking classification robustness
def flip_model():
    m = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        m.weight.copy_(T([[1.0, -1.0], [-1.0, 1.0]]))  # class 0 iff x[0] > x[1]
    return m


# x0, label: the first three are robust at eps = 0.1, the others have a counterexample
CR_X0 = T([[0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.52, 0.48], [0.45, 0.55], [0.5, 0.42], [0.3, 0.7]])
CR_Y = T([0, 1, 0, 0, 1, 0, 0])
CR_ROBUST = [True, True, True, False, False, False, False]


@pytest.mark.parametrize("search", [PGD(steps=10), PGD(steps=10, restarts=2), FGSM()])
@pytest.mark.parametrize("name", ["cr", "cr_margin"])
def test_cr_attack_finds_the_counterexamples(name, search):
    prop = compile_spec(SPECS / "classification_robustness.spec")[name]
    m = flip_model()
    found = prop.search(m, x0=CR_X0, y=CR_Y, search=search, generator=torch.Generator().manual_seed(0))
    x = found["x"]
    assert ((x - CR_X0).abs() <= 0.1 + 1e-6).all() and (x >= 0).all() and (x <= 1).all()
    with torch.no_grad():
        pred = m(x).argmax(-1)
    flipped = pred != CR_Y
    assert flipped.tolist() == [not r for r in CR_ROBUST]
    assert prop.holds(m, x0=CR_X0, y=CR_Y, at=found).tolist() == CR_ROBUST
    if name == "cr":  # the argmax was searched through its margin form
        assert (found.objective["x"][~torch.tensor(CR_ROBUST)] == 0).all()
        assert (found.objective["x"][torch.tensor(CR_ROBUST)] > 0).all()


def test_cr_margin_loss_positive_exactly_where_attackable():
    prop = compile_spec(SPECS / "classification_robustness.spec")["cr_margin"]
    loss = prop.loss(flip_model(), x0=CR_X0, y=CR_Y, steps=10, reduction="none",
                     generator=torch.Generator().manual_seed(0))
    assert ((loss > 0) == ~torch.tensor(CR_ROBUST)).all()


def test_per_example_eps(dspec):
    eps = T([0.0, 0.1, 0.2, 0.0, 0.3, 0.05, 0.0])
    x0 = inputs(5)
    found = dspec["linf"].search(mlp(5), x0=x0, params={"eps": eps}, search=PGD(steps=3, step_size=1.0))
    dist = (found["x"] - x0).abs().amax(1)
    assert (dist <= eps + 1e-6).all()
    assert (dist[eps == 0] == 0).all()


# ------------------------------------------------------------------ PGD(keep="last")
LAST_SPEC = """
network f : Tensor -> Tensor
param eps : Real = 0.1
property up(x0 : Tensor) =
  forall x . norm_inf(x - x0) <= eps and 0 <= x <= 1 => f(x)[0] <= 100
"""


class Wavy(torch.nn.Module):
    """f(x)[0] = sum(sin(5 x) * w): its gradient's signs change along a PGD path."""

    def __init__(self, n: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(n, generator=torch.Generator().manual_seed(1)))

    def forward(self, x):
        v = (torch.sin(5 * x.flatten(1)) * self.w).sum(1, keepdim=True)
        return torch.cat([v, -v], 1)


@pytest.mark.parametrize("steps", [0, 1, 4])
def test_pgd_keep_last_returns_the_last_iterate(steps):
    """keep="last" gives the points of `steps` projected signed steps from the start, with no
    objective; the steps checked against a hand-written loop from the same start (the
    objective is relu(100 - f(x)[0]) under DL2 here, never 0, so each step is
    x + size * sign(grad f(x)[0]) clamped to the box)."""
    prop = compile_spec(LAST_SPEC)["up"]
    net = Wavy(6)
    x0 = torch.rand(5, 6, generator=torch.Generator().manual_seed(2))
    size = 0.03

    def last(k):
        return prop.search(net, x0=x0, search=PGD(steps=k, step_size=size, keep="last",
                                                  early_stop=False),
                           generator=torch.Generator().manual_seed(3))
    found = last(steps)
    assert found.objective == {}  # nothing was evaluated at the last points
    x = last(0)["x"]  # the start: the same draw
    lo, hi = (x0 - 0.1).clamp(0, 1), (x0 + 0.1).clamp(0, 1)
    assert ((x >= lo) & (x <= hi)).all()
    signs = []
    for _ in range(steps):
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(x)[:, 0].sum(), x)
        signs.append(g.sign())
        x = torch.clamp(x.detach() + size * g.sign(), lo, hi)
    torch.testing.assert_close(found["x"], x, rtol=0, atol=0)
    if steps > 1:  # the signs do change along the path: not a straight run to a corner
        assert any(bool((a != b).any()) for a, b in zip(signs, signs[1:]))
    if steps:  # keep="best" (the default) has an objective at its points
        best = prop.search(net, x0=x0, search=PGD(steps=steps, step_size=size,
                                                  early_stop=False),
                           generator=torch.Generator().manual_seed(3))
        assert best.objective["x"].shape == (5,)
    assert "the last iterate is kept" in PGD(keep="last", early_stop=False).describe()


def test_pgd_keep_last_by_name_and_its_refusals():
    prop = compile_spec(LAST_SPEC)["up"]
    x0 = torch.rand(3, 6)
    found = prop.search(Wavy(6), x0=x0, search="pgd", steps=2, keep="last", early_stop=False)
    assert found["x"].shape == (3, 6) and found.objective == {}
    with pytest.raises(InputError, match="early_stop=False"):
        PGD(keep="last")
    with pytest.raises(InputError, match="restarts=1"):
        PGD(keep="last", restarts=3, early_stop=False)
    with pytest.raises(InputError, match="'best' point or the 'last' iterate"):
        PGD(keep="worst")
