"""compiler/query.py: the verification query of a property, per example.

The decisive check: at any point of the box, the query's negated body (its disjunction of
conjunctions of linear rows, evaluated at y = f(x)) says "counterexample" exactly where the
property's own exact checker says the body fails."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustspec.compiler import compile_spec
from robustspec.compiler.query import build_query
from robustspec.dsl.diagnostics import SpecError
from robustspec.runtime.models import PaperMLP

SPECS = Path(__file__).resolve().parents[1] / "specs"


def spec(name):
    return compile_spec(SPECS / f"{name}.spec")


def _net(seed=0, n=6, h=5, m=4):
    torch.manual_seed(seed)
    return PaperMLP(n, h, m).eval()


def _cex(q, y, x, t=None):
    """Bool [B]: does some active disjunct hold at (y, x, t)? (query without softmax atoms)"""
    v = q.row_values(y, x, t)
    ok = torch.where(q.strict.unsqueeze(0), v > 0, v >= 0)
    common = ok[:, list(q.common)].all(1) if q.common else torch.ones(len(x), dtype=torch.bool)
    ds = torch.stack([ok[:, list(r)].all(1) for r, _ in q.disjuncts], 1)
    return (ds & q.active).any(1) & common


def test_sr_is_2m_disjuncts_of_one_row_and_f_x0_is_a_constant():
    net = _net()
    x0 = torch.rand(7, 6)
    q = build_query(spec("standard_robustness")["sr"], net, x0=x0, y=torch.zeros(7, dtype=torch.long),
                    params={"eps": 0.1, "delta": 0.3})
    assert len(q.disjuncts) == 2 * 4 and all(len(r) == 1 for r, _ in q.disjuncts)
    assert q.cx is None and q.n_aux == 0 and q.linear
    assert bool(q.strict.all())  # norm > delta: strict
    # each row is +-(y_j - f(x0)_j) - delta
    with torch.no_grad():
        fx0 = net(x0)
    # the constants are -+f(x0)_j - delta: f(x0) computed once, in torch
    assert torch.allclose((q.c + 0.3).sort(1).values, torch.cat([fx0, -fx0], 1).sort(1).values,
                          atol=1e-6)
    rows = q.row_values(fx0, x0)
    assert torch.allclose(rows, torch.full_like(rows, -0.3), atol=1e-6)  # y = f(x0): every row -delta
    assert torch.equal(q.lo, (x0 - 0.1).clamp(0, 1)) and torch.equal(q.hi, (x0 + 0.1).clamp(0, 1))


def test_cr_margin_has_m_minus_1_active_disjuncts():
    q = build_query(spec("classification_robustness")["cr_margin"], _net(), x0=torch.rand(5, 6),
                    y=torch.tensor([0, 1, 2, 3, 1]))
    assert q.active.sum(1).tolist() == [3] * 5
    assert not bool(q.active[torch.arange(5), torch.tensor([0, 1, 2, 3, 1])].any())
    assert not bool(q.strict.any())  # not (f(x)[y] > f(x)[j]) is f(x)[j] >= f(x)[y]


def test_lr_has_one_auxiliary_variable_bounded_by_the_input_distance():
    q = build_query(spec("lipschitz_robustness")["lr"], _net(), x0=torch.rand(3, 6),
                    y=torch.zeros(3, dtype=torch.long), params={"eps": 0.05, "L": 2.0})
    assert q.n_aux == 1 and len(q.common) == 2 * 6
    assert torch.all(q.aux_lo == 0) and torch.all(q.aux_hi <= 0.05 + 1e-7)


def test_scr_is_a_softmax_threshold_not_linear_rows():
    q = build_query(spec("strong_classification_robustness")["scr"], _net(), x0=torch.rand(3, 6),
                    y=torch.tensor([0, 1, 2]))
    assert not q.linear and len(q.softmax) == 1
    atom = q.softmax[0]
    assert atom.below and atom.strict and torch.allclose(atom.threshold, torch.full((3,), 0.52))


@pytest.mark.parametrize("name,prop,params", [
    ("standard_robustness", "sr", {"eps": 0.2, "delta": 0.05}),
    ("classification_robustness", "cr_margin", {"eps": 0.3}),
    ("lipschitz_robustness", "lr", {"eps": 0.2, "L": 0.3}),
    ("class_groups", "brighter_not_lower", {"eps": 0.3}),
])
def test_query_says_counterexample_exactly_where_the_checker_does(name, prop, params):
    p = compile_spec(SPECS / f"{name}.spec")[prop]
    net = _net(3, 6, 8, 10 if name == "class_groups" else 4)
    B = 64
    torch.manual_seed(1)
    x0 = torch.rand(B, 6)
    y = torch.randint(0, 4, (B,))
    args = {"x0": x0, "y": y} if len(p.args) == 2 else {"x0": x0}
    q = build_query(p, net, params=params, **args)
    disagreements, violated_seen = 0, 0
    for _ in range(10):
        x = q.lo + (q.hi - q.lo) * torch.rand_like(q.lo)
        with torch.no_grad():
            fy = net(x)
        t = (x - x0).abs().amax(1, keepdim=True) if q.n_aux else None
        query_says = _cex(q, fy, x, t)
        violated = p.check(net, params=params, at=x, **args).violated
        disagreements += int((query_says != violated).sum())
        violated_seen += int(violated.sum())
    assert disagreements == 0
    assert 0 < violated_seen < 10 * B  # both answers occurred: the comparison meant something


REFUSED = {
    "softmax sum": ("network f : Tensor -> Tensor[10]\nparam eps : Real = 0.1\n"
                    "property p(x0 : Tensor) = forall x . norm_inf(x - x0) <= eps =>\n"
                    "  softmax(f(x))[5] + softmax(f(x))[7] <= 0.5\n", "softmax"),
    "alternation": ("network f : Tensor -> Tensor\nparam eps : Real = 0.1\n"
                    "property p(x0 : Tensor) = forall x . norm_inf(x - x0) <= eps =>\n"
                    "  exists z . norm_inf(z - x) <= eps and f(z)[0] >= f(x)[0]\n", "alternation"),
    "exists": ("network f : Tensor -> Tensor\nparam eps : Real = 0.1\n"
               "property p(x0 : Tensor) = exists x . norm_inf(x - x0) <= eps and f(x)[0] >= 1\n",
               "witness"),
    "argmax": (None, "max_except"),
    "product": ("network f : Tensor -> Tensor\nparam eps : Real = 0.1\n"
                "property p(x0 : Tensor) = forall x . norm_inf(x - x0) <= eps =>\n"
                "  f(x)[0] * f(x)[1] <= 1\n", "not linear"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_non_linear_parts_are_refused_at_the_operator(case):
    text, word = REFUSED[case]
    p = spec("classification_robustness")["cr"] if text is None else compile_spec(text)["p"]
    args = {"x0": torch.rand(2, 6)}
    if len(p.args) == 2:
        args["y"] = torch.zeros(2, dtype=torch.long)
    with pytest.raises(SpecError) as e:
        build_query(p, _net(m=10), **args)
    d = e.value.diagnostics[0]
    assert word in d.message and "verification query" in d.message
    assert d.span is not None and d.span.text()  # points at the operator in the source
