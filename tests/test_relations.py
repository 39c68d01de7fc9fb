"""Section 3 of the paper as executable properties, with the compiled checkers of specs/.

    LR(eps, L) => SR(eps, eps * L)         SCR(eps, eta > 0.5) => CR(eps)
    SR, LR  vs  SCR, CR: not comparable     (witnesses found both ways, and printed)

Networks are random Linear(4, 3) layers followed by the paper's clamp(-100, 100), in float64;
points lie on a dyadic grid, so |x - x0| <= eps holds exactly and no verdict depends on
rounding. For a linear layer (the clamp stays inactive, which the tests assert), the worst case
of SR, CR and SCR over the clipped eps-box is at one of its 16 vertices (|W d|, the margins
and sum_k exp(f_k - f_y) are convex in x), so checking the vertices with the compiled checker
decides the property on the whole ball, not only at sampled points. LR is not decided by
vertices; it holds on the ball when L >= max_i sum_j |W_ij| (the L-inf operator norm).
"""
from __future__ import annotations

import functools
import itertools
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, find, given, settings
from hypothesis import strategies as st

from robustspec.compiler import compile_spec

SPECS = Path(__file__).resolve().parent.parent / "specs"
D = torch.float64
IN, OUT = 4, 3
FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


class Net(torch.nn.Module):
    """Linear(4, 3) -> clamp(-100, 100), the paper's output layer on a tiny input."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.lin = torch.nn.Linear(IN, OUT).to(D)
        with torch.no_grad():
            self.lin.weight.copy_(weight)
            self.lin.bias.copy_(bias)

    def forward(self, x):
        return self.lin(x).clamp(-100, 100)

    @property
    def linf_norm(self) -> float:
        return float(self.lin.weight.detach().abs().sum(1).max())


# dyadic values: exact in binary floating point
SCALES = (0.0625, 0.25, 1.0, 4.0)
EPSILONS = (0.0625, 0.125, 0.25)


@st.composite
def nets(draw):
    """Weights on a dyadic grid times a scale, and a lead for one class."""
    w = draw(st.lists(st.integers(-8, 8), min_size=IN * OUT, max_size=IN * OUT))
    scale = draw(st.sampled_from(SCALES))
    b = draw(st.lists(st.integers(-8, 8), min_size=OUT, max_size=OUT))
    weight = torch.tensor(w, dtype=D).reshape(OUT, IN) * scale / 8
    bias = torch.tensor(b, dtype=D) * draw(st.sampled_from((0.125, 1.0, 4.0)))
    return Net(weight, bias)


def grid_points(draw, n: int) -> torch.Tensor:
    return torch.tensor(draw(st.lists(st.lists(st.integers(0, 16), min_size=IN, max_size=IN),
                                      min_size=n, max_size=n)), dtype=D) / 16


def in_ball(x0: torch.Tensor, eps: float, u: torch.Tensor) -> torch.Tensor:
    """x0 + eps * u (u in [-1, 1], multiples of 1/8), clipped to [0, 1]: exactly in the ball."""
    return (x0 + eps * u).clamp(0, 1)


def vertices(x0: torch.Tensor, eps: float) -> torch.Tensor:
    """The 16 vertices of the clipped box [clip(x0 - eps), clip(x0 + eps)]: [batch, 16, 4]."""
    lo, hi = (x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1)
    corners = torch.tensor(list(itertools.product((0, 1), repeat=IN)), dtype=torch.bool)
    return torch.where(corners, hi[:, None, :], lo[:, None, :])


@functools.lru_cache(maxsize=None)
def _load(file: str, name: str, params: tuple):
    return compile_spec(SPECS / file, params=dict(params))[name]


def load(file: str, name: str, **params):
    return _load(file, name, tuple(sorted(params.items())))


def SR(eps, delta):
    return load("standard_robustness.spec", "sr", eps=eps, delta=delta)


def LR(eps, L):
    return load("lipschitz_robustness.spec", "lr", eps=eps, L=L)


def SCR(eps, eta):
    return load("strong_classification_robustness.spec", "scr", eps=eps, eta=eta)


def CR(eps):
    return load("classification_robustness.spec", "cr", eps=eps)


def at(prop, model, x0, y, pts) -> torch.Tensor:
    """The body of the property at the given points, exactly (bool [batch])."""
    return prop.check(model, x0=x0, y=y, at={"x": pts}).holds


def on_ball(prop, model, x0, y, eps) -> torch.Tensor:
    """Does the property hold on the whole eps-ball (decided at the box's vertices)?"""
    vs = vertices(x0, eps)  # [batch, 16, 4]: one batch of batch * 16 checks
    n = vs.shape[1]
    holds = at(prop, model, x0.repeat_interleave(n, 0), y.repeat_interleave(n, 0),
               vs.reshape(-1, IN))
    return holds.reshape(-1, n).all(1)


def assert_linear(model, pts):
    with torch.no_grad():
        assert model.lin(pts.reshape(-1, IN)).abs().max() < 100  # the clamp is inactive


# ---------------------------------------------------------------- the implications
@FAST
@given(model=nets(), data=st.data(), eps=st.sampled_from(EPSILONS),
       L=st.sampled_from((0.25, 1.0, 2.0, 4.0, 16.0)))
def test_lr_implies_sr_at_the_same_points(model, data, eps, L):
    x0 = grid_points(data.draw, 8)
    u = torch.tensor(data.draw(st.lists(st.lists(st.integers(-8, 8), min_size=IN, max_size=IN),
                                        min_size=8, max_size=8)), dtype=D) / 8
    pts = in_ball(x0, eps, u)
    assert ((pts - x0).abs().amax(1) <= eps).all()
    y = torch.zeros(8, dtype=torch.long)
    lr = at(LR(eps, L), model, x0, y, pts)
    sr = at(SR(eps, eps * L), model, x0, y, pts)
    assert not (lr & ~sr).any(), (x0[lr & ~sr], pts[lr & ~sr])


@FAST
@given(model=nets(), data=st.data(), eps=st.sampled_from(EPSILONS),
       eta=st.sampled_from((0.5 + 2 ** -20, 0.52, 0.75, 0.9)))
def test_scr_with_eta_above_half_implies_cr_at_the_same_points(model, data, eps, eta):
    x0 = grid_points(data.draw, 8)
    pts = torch.cat([in_ball(x0, eps, torch.tensor(
        data.draw(st.lists(st.lists(st.integers(-8, 8), min_size=IN, max_size=IN), min_size=8,
                           max_size=8)), dtype=D) / 8), vertices(x0, eps)[:, 0]])
    x0 = torch.cat([x0, x0])
    y = torch.tensor(data.draw(st.lists(st.integers(0, OUT - 1), min_size=16, max_size=16)))
    scr = at(SCR(eps, eta), model, x0, y, pts)
    cr = at(CR(eps), model, x0, y, pts)
    assert not (scr & ~cr).any()


@FAST
@given(model=nets(), data=st.data(), eps=st.sampled_from(EPSILONS))
def test_the_implications_hold_on_whole_balls(model, data, eps):
    """LR (by the operator norm) => SR, and SCR => CR, each decided on the whole ball."""
    x0 = grid_points(data.draw, 4)
    y = torch.tensor(data.draw(st.lists(st.integers(0, OUT - 1), min_size=4, max_size=4)))
    assert_linear(model, vertices(x0, eps))
    L = model.linf_norm
    if L > 0:
        assert on_ball(SR(eps, eps * L), model, x0, y, eps).all()
    scr = on_ball(SCR(eps, 0.52), model, x0, y, eps)
    assert not (scr & ~on_ball(CR(eps), model, x0, y, eps)).any()


def test_the_implications_are_not_vacuous():
    """The premises of both implications hold for a good share of the sampled cases."""
    gen = torch.Generator().manual_seed(0)
    lr_held = scr_held = 0
    for _ in range(20):
        model = Net(torch.randn(OUT, IN, generator=gen, dtype=D).round() / 4,
                    torch.randn(OUT, generator=gen, dtype=D).round() * 2)
        x0 = torch.randint(0, 17, (16, IN), generator=gen).to(D) / 16
        pts = in_ball(x0, 0.125, torch.randint(-8, 9, (16, IN), generator=gen).to(D) / 8)
        y = model(x0).argmax(1)
        lr_held += int(at(LR(0.125, 2.0), model, x0, y, pts).sum())
        scr_held += int(at(SCR(0.125, 0.52), model, x0, y, pts).sum())
    assert lr_held > 40 and scr_held > 40


def _scr_without_cr(model, x0, y) -> bool:
    """SCR(0.125, eta=0.4) holds on the whole ball while CR(0.125) fails somewhere in it."""
    return bool((on_ball(SCR(0.125, 0.4), model, x0, y, 0.125)
                 & ~on_ball(_cr_weak(0.125), model, x0, y, 0.125)).any())


def test_eta_at_most_half_breaks_scr_implies_cr():
    """The paper's caveat, on a hand-built witness: f = (-4, 0, 1/8) everywhere, y = 1.
    softmax gives y 1 / (e^-4 + 1 + e^(1/8)) = 0.465 >= 0.4, yet class 2 scores higher."""
    model = Net(torch.zeros(OUT, IN, dtype=D), torch.tensor([-4.0, 0.0, 0.125], dtype=D))
    x0, y = torch.full((1, IN), 0.5, dtype=D), torch.tensor([1])
    assert _scr_without_cr(model, x0, y)
    # with eta above 1/2 the same network fails SCR too, as the implication demands
    assert not bool(on_ball(SCR(0.125, 0.52), model, x0, y, 0.125).any())


def test_eta_at_most_half_witnesses_are_found_by_search():
    """Hypothesis finds such witnesses by itself among small networks with a low third class."""
    @st.composite
    def cases(draw):
        weight = torch.zeros(OUT, IN, dtype=D)
        weight[draw(st.integers(0, OUT - 1)), draw(st.integers(0, IN - 1))] = draw(
            st.sampled_from((0.0, 0.5, -0.5)))
        bias = torch.tensor(draw(st.lists(st.sampled_from((0.0, 0.125, -4.0)), min_size=OUT,
                                          max_size=OUT)), dtype=D)
        return Net(weight, bias), grid_points(draw, 1), torch.tensor([draw(st.integers(0, OUT - 1))])
    model, x0, y = find(cases(), lambda case: _scr_without_cr(*case),
                        settings=_witness_settings())
    print("\nSCR(0.125, eta=0.4) holds but CR(0.125) fails:", _show(model, x0, y))


# ---------------------------------------------------------------- incomparable pairs: witnesses
EPS, DELTA, ETA, LIP = 0.125, 0.5, 0.52, 2.0


@st.composite
def sparse_nets(draw):
    """A few non-zero weights and biases: a small search space, so witnesses shrink fast."""
    weight = torch.zeros(OUT, IN, dtype=D)
    for i, j, w in draw(st.lists(st.tuples(st.integers(0, OUT - 1), st.integers(0, IN - 1),
                                           st.sampled_from((0.5, -0.5, 2.5, -2.5, 4.0, -4.0, 8.0))),
                                 max_size=3)):
        weight[i, j] = w
    bias = torch.tensor(draw(st.lists(st.sampled_from((0.0, 0.125, 0.75, 4.0)), min_size=OUT,
                                      max_size=OUT)), dtype=D)
    return Net(weight, bias)


def _cases():
    @st.composite
    def case(draw):
        model = draw(sparse_nets())
        x0 = grid_points(draw, 1)
        y = torch.tensor([draw(st.integers(0, OUT - 1))])
        return model, x0, y
    return case()


def _witness_settings():
    return settings(max_examples=500, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


# CR without ties either way: it holds with strict margins (cr_margin), and it fails only where
# another class scores strictly higher than y (not merely ties with it)
CR_WEAK = """network f : Tensor -> Tensor
param eps : Real = 0.1
property cr_weak(x0 : Tensor, y : Label) =
  forall x . norm_inf(x - x0) <= eps and 0 <= x <= 1 =>
    forall j in classes . f(x)[y] >= f(x)[j]
"""


@functools.lru_cache(maxsize=None)
def _cr_weak(eps: float):
    return compile_spec(CR_WEAK, params={"eps": eps})["cr_weak"]


def _holds(name: str, model, x0, y) -> bool:
    """The property on the whole ball: vertices for SR, CR, SCR; the operator norm for LR
    (which, when it fails, is shown to fail at a vertex)."""
    if name == "LR":
        return model.linf_norm <= LIP
    prop = {"SR": SR(EPS, DELTA), "SCR": SCR(EPS, ETA),
            "CR": load("classification_robustness.spec", "cr_margin", eps=EPS)}[name]
    return bool(on_ball(prop, model, x0, y, EPS).all())


def _fails(name: str, model, x0, y) -> bool:
    """A concrete counterexample at a vertex, found by the compiled checker."""
    prop = {"SR": SR(EPS, DELTA), "SCR": SCR(EPS, ETA), "CR": _cr_weak(EPS),
            "LR": LR(EPS, LIP)}[name]
    return not bool(on_ball(prop, model, x0, y, EPS).all())


def _show(model, x0, y) -> str:
    with torch.no_grad():
        f0 = model(x0)[0]
    return (f"W={model.lin.weight.tolist()}, b={model.lin.bias.tolist()}, x0={x0[0].tolist()}, "
            f"y={int(y)}, f(x0)={[round(v, 4) for v in f0.tolist()]}, "
            f"softmax(f(x0))={[round(v, 4) for v in torch.softmax(f0, -1).tolist()]}")


PAIRS = [("SR", "SCR"), ("SR", "CR"), ("LR", "SCR"), ("LR", "CR")]


@pytest.mark.parametrize("a, b", [p for pair in PAIRS for p in (pair, pair[::-1])])
def test_witness_one_holds_on_the_ball_the_other_fails(a, b):
    def witness(case):
        model, x0, y = case
        with torch.no_grad():
            assume(model.lin(vertices(x0, EPS).reshape(-1, IN)).abs().max() < 100)
        return _holds(a, model, x0, y) and _fails(b, model, x0, y)
    model, x0, y = find(_cases(), witness, settings=_witness_settings())
    assert_linear(model, vertices(x0, EPS))
    print(f"\n{a} holds on the {EPS}-ball and {b} fails (eps={EPS}, delta={DELTA}, eta={ETA}, "
          f"L={LIP}): {_show(model, x0, y)}")
