"""The sympy lowering as an independent reference: differential tests against the torch lowering
on random formulas and assignments, under every logic; and the printed formulas."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import sympy as sp
import torch
from hypothesis import HealthCheck, given, settings

from robustspec.compiler import compile_spec
from robustspec.compiler.logics import BUILTIN_LOGICS, get_logic
from robustspec.compiler.symbolic import (RangeMax, RangeMin, SympyOps, evaluate, expand,
                                          symbolic_loss, value_expression)
from robustspec.compiler.testing import (compiled, formula_values, formulas, render, rows,
                                         spec_text, to_args)

SPECS = Path(__file__).resolve().parent.parent / "specs"
FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def _agree(got: float, want: float, tol: float = 1e-9) -> bool:
    if math.isinf(got) or math.isinf(want):
        return got == want
    return abs(got - want) <= tol * (1 + abs(want))


LOGICS = list(BUILTIN_LOGICS) + ["yager:p=3", "stl:nu=0.25"]


@pytest.mark.parametrize("logic", LOGICS)
@FAST
@given(f=formulas(max_depth=3, constants=False), rws=rows(2))
def test_torch_and_sympy_lowerings_agree(logic, f, rws):
    """Two interpreters of the same IR: batched torch closures (tensor axes, broadcasting,
    quantifiers as reductions) and sympy expressions (big operators, evaluated numerically)."""
    prop = compiled(spec_text(f))
    got = formula_values(prop, logic, to_args(rws))
    expr = value_expression(prop.formula, logic, evaluate=False)
    for i, row in enumerate(rws):
        want = evaluate(expr, row)
        assert _agree(float(got[i]), want), (render(f), row, float(got[i]), want, expr)


DOIT = ["property p(a : Real, b : Real, v : Tensor[3]) = forall j in range(3) . v[j] <= a or b < v[j]",
        "property p(a : Real, b : Real, v : Tensor[3]) = exists j in range(3) . not (v <= a + v[j])",
        "property p(a : Real, b : Real, v : Tensor[3]) = (a <= b => v != a) and -a <= b"]


@pytest.mark.parametrize("logic", BUILTIN_LOGICS)
@pytest.mark.parametrize("text", DOIT)
def test_the_displayed_formula_expands_with_doit(logic, text):
    """The simplified expression `explain` prints, expanded by sympy's own .doit() and
    evaluated by sympy at 30 digits, agrees with torch."""
    prop = compile_spec(text)["p"]
    rws = [{"a": 0.25, "b": -0.5, "v": [0.5, 0.25, -1.0]}, {"a": 0.0, "b": 0.0, "v": [0.0, 1.0, 0.0]}]
    args = {"a": torch.tensor([r["a"] for r in rws], dtype=torch.float64),
            "b": torch.tensor([r["b"] for r in rws], dtype=torch.float64),
            "v": torch.tensor([r["v"] for r in rws], dtype=torch.float64)}
    got = formula_values(prop, logic, args)
    expr = value_expression(prop.formula, logic).doit()
    v = sp.IndexedBase("v")
    for i, row in enumerate(rws):
        subs = {sp.Symbol("a"): sp.Rational(row["a"]), sp.Symbol("b"): sp.Rational(row["b"])}
        subs.update({v[k]: sp.Rational(x) for k, x in enumerate(row["v"])})
        want = float(sp.N(expr.xreplace(subs), 30))
        assert _agree(float(got[i]), want), (text, row, float(got[i]), want)


def test_losses_agree_too():
    prop = compile_spec("property p(a : Real, b : Real) = a <= b or b <= 0 - a")["p"]
    a, b = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.5, 1.0], dtype=torch.float64)
    for name in LOGICS:
        got = prop.loss(None, a=a, b=b, logic=name, reduction="none")
        expr = symbolic_loss(prop.formula, name)
        for i in range(2):
            assert _agree(float(got[i]), evaluate(expr, {"a": float(a[i]), "b": float(b[i])}))


# ---------------------------------------------------------------- the printed formulas
QUANT = "property p(v : Tensor[3], a : Real) = forall j in range(3) . v[j] <= a"


@pytest.mark.parametrize("name, big", [("dl2", sp.Sum), ("product", sp.Product),
                                       ("goedel", RangeMin), ("lukasiewicz", sp.Sum),
                                       ("yager", sp.Sum), ("stl", sp.Sum)])
def test_finite_quantifiers_become_big_operators(name, big):
    expr = value_expression(compile_spec(QUANT)["p"].formula, name)
    assert expr.atoms(big) or expr.has(big), expr
    j = sp.Symbol("j", integer=True)
    assert any(lim[0] == j and lim[2] == 2 for b in expr.atoms(big) for lim in b.limits)


def test_goedel_exists_is_a_range_max_and_expands():
    prop = compile_spec("property p(v : Tensor[3], a : Real) = exists j in range(3) . v[j] <= a")["p"]
    expr = value_expression(prop.formula, "goedel")
    assert isinstance(expr, RangeMax)
    assert "max_{j=0..2}" in sp.sstr(expr)
    assert r"\max_{j=0}^{2}" in sp.latex(expr)
    v = sp.IndexedBase("v")
    assert isinstance(expr.doit(), sp.Max) and expr.doit().has(v[2])


def test_elementwise_comparisons_are_quantifiers_over_elements():
    prop = compile_spec("property p(v : Tensor[3], a : Real) = v <= a")["p"]
    dl2 = value_expression(prop.formula, "dl2")
    assert sp.sstr(dl2) == "Sum(Max(0, -a + v[i]), (i, 0, 2))"
    neg = compile_spec("property p(v : Tensor[3], a : Real) = not (v <= a)")["p"]
    assert isinstance(value_expression(neg.formula, "goedel"), RangeMax)


def test_unknown_class_count_is_a_symbol():
    prop = compile_spec(SPECS / "classification_robustness.spec")["cr_margin"]
    text = sp.sstr(value_expression(prop.formula, "goedel"))
    assert "min_{j=0..K - 1}" in text


def test_stl_and_fuzzy_losses():
    prop = compile_spec("property p(a : Real, b : Real) = a <= b")["p"]
    a, b = sp.symbols("a b")
    assert symbolic_loss(prop.formula, "stl") == sp.Max(0, a - b)
    assert symbolic_loss(prop.formula, "goedel") == 1 - 1 / (sp.Max(0, a - b) + 1)
    assert symbolic_loss(prop.formula, "dl2") == sp.Max(0, a - b)


def test_floats_of_options_print_as_fractions():
    prop = compile_spec("property p(a : Real, b : Real) = a < b")["p"]
    assert "1.0" not in sp.sstr(value_expression(prop.formula, "dl2"))
    yager = compile_spec("property p(a : Real, b : Real) = a <= b or b <= a")["p"]
    assert "sqrt" in sp.sstr(value_expression(yager.formula, "yager"))


def test_sympy_backend_families_map_and_reduce():
    T = SympyOps()
    j = sp.Symbol("j", integer=True)
    from robustspec.compiler.symbolic import Family
    fam = Family(sp.IndexedBase("v")[j], j, 0, 2)
    assert T.sum(1 - fam, -1) == sp.Sum(1 - sp.IndexedBase("v")[j], (j, 0, 2))
    assert T.size(fam, -1) == 3
    assert T.logsumexp(fam, -1).doit() == sp.log(sum(sp.exp(sp.IndexedBase("v")[k]) for k in range(3)))


@pytest.mark.parametrize("name", BUILTIN_LOGICS)
def test_explain_prints_unicode_and_latex(name):
    from robustspec.compiler.explain import explain
    prop = compile_spec(SPECS / "standard_robustness.spec")["sr"]
    text = explain(prop, logic=name, latex=True)
    assert "L = " in text and "LaTeX: " in text and "delta" in text


def test_explain_prints_the_stl_loss():
    from robustspec.compiler.explain import explain
    prop = compile_spec(SPECS / "standard_robustness.spec")["sr"]
    text = explain(prop, logic="stl", unicode=False)
    assert "L = " + sp.sstr(symbolic_loss(prop.formula, "stl")) in text


def test_value_expression_takes_names_and_instances():
    prop = compile_spec("property p(a : Real, b : Real) = a <= b")["p"]
    assert value_expression(prop.formula, get_logic("goedel")) == value_expression(prop.formula, "goedel")


def test_expand_writes_big_operators_out_without_simplifying():
    j, k = sp.symbols("j k", integer=True)
    v = sp.IndexedBase("v")
    expr = sp.Sum(RangeMin(v[j] - v[k], (j, 0, 2)), (k, 0, 1))
    out = expand(expr)
    assert not out.has(sp.Sum) and not out.has(RangeMin)
    assert out.doit().xreplace({v[0]: 1, v[1]: 2, v[2]: 4}) == (1 - 1) + (1 - 2)
    assert evaluate(expr, {"v": [1, 2, 4]}) == -1.0


def test_an_elementwise_comparison_on_a_tensor_of_unknown_shape_is_printed_elementwise():
    """`x0 <= a` with `x0 : Tensor` is for every element: the printed loss must say so, as the
    trained one does (and `f(x)[y]` of an unknown network stays a scalar)."""
    from robustspec.compiler.explain import explain
    spec = compile_spec("network f : Tensor -> Tensor\n"
                        "property p(x0 : Tensor, a : Real) = x0 <= a\n"
                        "property q(x0 : Tensor, y : Label) = f(x0)[y] >= 0\n")
    assert "Sum(Max(0, -a + x0[i]), (i, 0, n - 1))" in explain(spec["p"], logic="dl2")
    assert "Max(0, -f(x0)[y])" in explain(spec["q"], logic="dl2")
