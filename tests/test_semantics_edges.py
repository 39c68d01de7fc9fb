"""Edge cases of meaning: variable capture through helpers, nested and alternating quantifiers,
points outside the domain, empty domains and sets, strict bounds, and bad parameter values.

Each test states a formula whose truth is known by hand, with the identity as the network.
"""
from __future__ import annotations

import pytest
import torch

from robustspec.compiler import SpecError, compile_spec
from robustspec.compiler.logics import available_logics

SPECS = "specs/standard_robustness.spec"


def identity(x):
    return x


def test_a_helper_quantifier_does_not_capture_the_callers_variable():
    spec = compile_spec("""
network f : Tensor -> Tensor[3]
top(v, j) = forall k in classes . k != j => v[j] >= v[k]
property p(x0 : Tensor) = forall k in classes . top(f(x0), k)
property q(x0 : Tensor) = forall m in classes . top(f(x0), m)
property some(x0 : Tensor) = exists k in classes . top(f(x0), k)
""")
    x0 = torch.tensor([[0.0, 1.0, 2.0]])
    # every class being the top is false; some class being the top is true
    for name, want in (("p", False), ("q", False), ("some", True)):
        assert spec[name].holds(identity, x0=x0).tolist() == [want], name
    assert spec["p"].loss(identity, x0=x0) == spec["q"].loss(identity, x0=x0) > 0


def test_two_index_quantifiers_over_different_sets_keep_their_own_values():
    spec = compile_spec("""
network f : Tensor -> Tensor
nonneg(v, n) = forall j in range(n) . v[j] >= 0
property p(x0 : Tensor) = nonneg(f(x0), 1) and nonneg(f(x0), 4)
property first(x0 : Tensor) = nonneg(f(x0), 1)
""")
    x0 = torch.tensor([[1.0, -1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    assert spec["first"].holds(identity, x0=x0).tolist() == [True, True]
    assert spec["p"].holds(identity, x0=x0).tolist() == [False, True]


def test_a_helper_with_a_quantifier_can_be_used_twice():
    spec = compile_spec("""
network f : Tensor -> Tensor
near_ok(c) = forall x . norm_inf(x - c) <= 0.1 => f(x)[0] >= 0
property p(x0 : Tensor, x1 : Tensor) = near_ok(x0) and near_ok(x1)
""")
    p = spec["p"]
    assert p.normal.variables() == ["x", "x_2"]
    x0, x1 = torch.full((2, 2), 0.5), torch.tensor([[0.5, 0.5], [0.05, 0.5]])
    assert p.holds(identity, x0=x0, x1=x1).tolist() == [True, False]


def test_iff_around_a_quantifier_compiles_and_checks():
    p = compile_spec("""
network f : Tensor -> Tensor
property p(x0 : Tensor) = (forall x . norm_inf(x - x0) <= 0.1 => f(x)[0] >= 0) <=> f(x0)[1] >= 0
""")["p"]
    x0 = torch.tensor([[0.5, 1.0], [0.05, 1.0], [0.05, -1.0]])
    # left side: x0[0] >= 0.1; right side: x0[1] >= 0
    assert p.holds(identity, x0=x0, steps=20).tolist() == [True, False, True]


@pytest.mark.parametrize("gap, want", [(0.0, True), (1.0, False)])
def test_alternating_quantifiers_search_both_levels(gap, want):
    p = compile_spec(f"""
network f : Tensor -> Tensor
property p(x0 : Tensor) =
  forall x . norm_inf(x - x0) <= 0.1 => exists z . norm_inf(z - x) <= 0.1 and f(z)[0] >= f(x)[0] + {gap}
""")["p"]
    x0 = torch.rand(3, 2, generator=torch.Generator().manual_seed(0))
    assert p.holds(identity, x0=x0, steps=10).tolist() == [want] * 3
    loss = p.loss(identity, x0=x0, steps=10)
    assert (loss == 0) if want else (loss > 0.5)
    assert set(p.search(identity, x0=x0, steps=3)) == {"x", "z"}


def test_a_point_outside_the_domain_decides_nothing():
    sr = compile_spec(SPECS, params={"delta": 0.3})["sr"]
    x0, y = torch.full((1, 4), 0.5), torch.tensor([0])
    verdict = sr.check(identity, x0=x0, y=y, at={"x": x0 + 0.45})  # |x - x0| = 0.45 > eps
    assert verdict.holds.tolist() == [True] and verdict.vacuous.tolist() == [True]
    e = compile_spec("""
network f : Tensor -> Tensor
property e(x0 : Tensor) = exists x . norm_inf(x - x0) <= 0.1 and f(x)[0] >= 5
""")["e"]
    assert e.holds(identity, x0=x0, at={"x": x0 + 10}).tolist() == [False]
    assert e.holds(identity, x0=x0).tolist() == [False]


def test_an_empty_domain_makes_forall_vacuous_under_every_logic():
    sr = compile_spec(SPECS, params={"delta": 0.3})["sr"]
    x0 = torch.tensor([[1.5, 1.5], [0.5, 0.5]])  # no valid pixel within eps of 1.5
    y = torch.tensor([0, 0])
    verdict = sr.check(identity, x0=x0, y=y, steps=5)
    assert verdict.holds.tolist() == [True, True] and verdict.vacuous.tolist() == [True, False]
    for logic in available_logics():
        assert sr.loss(identity, x0=x0, y=y, steps=5, logic=logic, reduction="none")[0] == 0, logic


def test_a_strict_bound_is_searched_closed_but_checked_exactly():
    p = compile_spec("""
network f : Tensor -> Tensor
property p(x0 : Tensor) = forall x . x0 < x <= x0 + 1 => f(x)[0] > x0[0]
""")["p"]
    x0 = torch.zeros(2, 1)
    assert p.holds(identity, x0=x0, steps=20).tolist() == [True, True]
    assert p.loss(identity, x0=x0, steps=20) == 0
    assert p.holds(identity, x0=x0, at={"x": x0}).tolist() == [True, True]  # x0 is excluded


def test_abs_of_a_difference_bounds_like_an_linf_ball():
    """Only the L-inf ball holds a counterexample: near its corner x0 + 0.1 the sum reaches 1.8 >
    1.75, while in an L2 ball of radius 0.1 it stays below 1.5 + 0.1 * sqrt(3) = 1.67."""
    spec = compile_spec("""
network f : Tensor -> Tensor
property sum_ok(x0 : Tensor) = forall x . abs(x - x0) <= 0.1 => f(x)[0] <= 3 * x0[0] + 0.25
property elem_ok(x0 : Tensor) = forall x . abs(x - x0) <= 0.1 => f(x)[0] <= x0[0] + 0.1
""")
    def total(x):
        return x.sum(1, keepdim=True)
    x0 = torch.full((2, 3), 0.5)
    found = spec["sum_ok"].search(total, x0=x0, steps=20)
    assert ((found["x"] - x0).abs() <= 0.1 + 1e-6).all() and (found["x"].sum(1) > 1.75).all()
    assert spec["sum_ok"].holds(total, x0=x0, at=found).tolist() == [False, False]
    assert spec["sum_ok"].holds(total, x0=x0, at={"x": x0 + 0.1}).tolist() == [False, False]
    assert spec["elem_ok"].holds(identity, x0=torch.rand(4, 3)).all()


def test_a_scalar_real_variable_is_searched():
    p = compile_spec("""
network f : Tensor -> Tensor
property bright(x0 : Tensor) = forall t : Real . 0.5 <= t <= 1 => f(t * x0)[0] >= 0.75 * x0[0]
""")["bright"]
    x0 = torch.rand(3, 4) + 0.1
    found = p.search(identity, x0=x0)
    t = found["t"]
    assert t.shape == (3,) and ((0.5 <= t) & (t < 0.75)).all()  # a counterexample, in [0.5, 1]
    assert p.holds(identity, x0=x0, at=found).tolist() == [False] * 3  # 0.5 x0 < 0.75 x0
    assert p.holds(identity, x0=x0, at={"t": torch.full((3,), 0.8)}).all()


@pytest.mark.parametrize("logic", available_logics())
def test_an_empty_finite_set(logic):
    spec = compile_spec("""
network f : Tensor -> Tensor
param n : Nat = 0
property all_of(x0 : Tensor) = forall j in range(n) . f(x0)[j] >= 100
property some_of(x0 : Tensor) = exists j in range(n) . f(x0)[j] >= -100
""")
    x0 = torch.zeros(2, 3)
    assert spec["all_of"].holds(identity, x0=x0).all()
    assert not spec["some_of"].holds(identity, x0=x0).any()
    assert spec["all_of"].loss(identity, x0=x0, logic=logic) == 0


@pytest.mark.parametrize("value", ["abc", None, [0.1, 0.2], True])
def test_a_parameter_value_that_is_not_a_number_is_a_spec_error(value):
    with pytest.raises(SpecError, match="parameter 'eps' must be a number"):
        compile_spec(SPECS, params={"eps": value})


def test_parameter_values_at_call_time_are_checked():
    sr = compile_spec(SPECS)["sr"]
    x0, y = torch.rand(2, 4), torch.tensor([0, 1])
    with pytest.raises(TypeError, match="parameter 'eps' takes a number"):
        sr.holds(identity, x0=x0, y=y, params={"eps": "0.1"})
    with pytest.raises(SpecError, match="is Nat but its value is -1"):
        compile_spec("network f : Tensor -> Tensor\nparam n : Nat = -1\n"
                      "property p(x0 : Tensor) = forall j in range(n) . f(x0)[j] >= 0")


@pytest.mark.parametrize("name", ["points", "random_start", "early_stop"])
def test_search_option_names_are_reserved(name):
    with pytest.raises(SpecError, match=f"'{name}' is reserved"):
        compile_spec(f"network f : Tensor -> Tensor\nproperty p({name} : Tensor) = f({name})[0] >= 0")


def test_a_misspelt_point_name_is_an_error():
    sr = compile_spec(SPECS)["sr"]
    x0, y = torch.rand(2, 4), torch.tensor([0, 1])
    with pytest.raises(TypeError, match="at= names 'z'.*its variables: x"):
        sr.holds(identity, x0=x0, y=y, at={"z": x0})


def test_check_searches_under_the_logic_given():
    sr = compile_spec(SPECS, params={"delta": 0.05})["sr"]
    x0, y = torch.full((2, 4), 0.5), torch.tensor([0, 1])
    assert not sr.holds(identity, x0=x0, y=y, logic="goedel").any()


def test_a_byte_order_mark_and_a_folder_path(tmp_path):
    f = tmp_path / "bom.spec"
    f.write_bytes("\ufeffnetwork f : Tensor -> Tensor\nproperty p(x0 : Tensor) = f(x0)[0] >= 0\n"
                  .encode("utf-8"))
    assert compile_spec(f)["p"].holds(identity, x0=torch.ones(1, 2)).all()
    with pytest.raises(SpecError, match="is a folder, not a spec file"):
        compile_spec(tmp_path)


def test_an_index_beyond_the_networks_outputs_is_a_spec_error_at_the_index():
    p = compile_spec("network f : Tensor -> Tensor\n"
                     "property p(x0 : Tensor, y : Label) = f(x0)[y] >= f(x0)[5]")["p"]
    with pytest.raises(SpecError, match=r"2:50: error: index out of range in `f\(x0\)\[5\]`"):
        p.holds(identity, x0=torch.rand(2, 3), y=torch.tensor([0, 1]))
    with pytest.raises(SpecError, match=r"index out of range in `f\(x0\)\[y\]`.*\n.*\n.*\n"
                                        r"hint: does the network have as many outputs"):
        p.holds(identity, x0=torch.rand(2, 9), y=torch.tensor([0, 12]))


def test_fixed_points_misuse_is_explained():
    from robustspec.compiler import FixedPoints
    p = compile_spec("network f : Tensor -> Tensor\nproperty p(x0 : Tensor) = "
                     "forall x . norm_inf(x - x0) <= 0.1 => forall z . norm_inf(z - x0) <= 0.1 => "
                     "f(x)[0] - f(z)[0] <= 0.5")["p"]
    x0 = torch.rand(2, 3)
    cases = [(FixedPoints(torch.rand(2, 5, 3)), TypeError, "covers \\['x', 'z'\\] jointly"),
             (FixedPoints({"x": torch.rand(2, 5, 3)}), TypeError, "no candidates for \\['z'\\]"),
             (FixedPoints({"x": torch.rand(2, 5, 3), "z": torch.rand(2, 4, 3)}), ValueError,
              "different numbers of candidates"),
             (FixedPoints({"x": torch.rand(5, 3), "z": torch.rand(5, 3)}), ValueError,
              "should have shape \\[batch, n, 3\\]")]
    for search, error, message in cases:
        with pytest.raises(error, match=message):
            p.holds(identity, x0=x0, search=search)
    ok = FixedPoints({"x": x0[:, None].repeat(1, 2, 1), "z": x0[:, None].repeat(1, 2, 1)})
    assert p.holds(identity, x0=x0, search=ok).all()
    with pytest.raises(TypeError, match="search='points' needs the candidates: points="):
        p.holds(identity, x0=x0, search="points")
