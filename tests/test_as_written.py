"""The IR keeps a formula's nesting as written, and run-time-only mistakes are located errors.

Flattening `A and (B and C)` into `and(A, B, C)` applies associativity, which STL's smooth min
does not have; a per-call parameter can reach `range(n)` after the checker's limits; shapes of
undeclared tensors meet only at run time.
"""
import pytest
import torch

from robustspec.compiler import compile_spec
from robustspec.compiler.logics import get_logic
from robustspec.compiler.ops import T
from robustspec.dsl.diagnostics import SpecError
from robustspec.dsl.errors import InputError, RobustspecError

NET = "network f : Tensor -> Tensor[3]\n"


def outputs(x0):
    return x0[:, :3]


def atoms(lg, x0):
    y = outputs(x0)
    one = torch.tensor(1.0)
    return [lg.cmp(T, ">=", y[:, j], one) for j in range(3)]


@pytest.mark.parametrize("logic", ["stl", "yager", "dl2", "product"])
def test_nested_and_keeps_its_nesting(logic):
    lg = get_logic(logic)
    x0 = torch.tensor([[0.2, 1.5, 0.7], [1.2, 0.1, 0.9], [0.5, 0.5, 2.0], [1.0, 1.0, 2.0]])
    a, b, c = atoms(lg, x0)
    nested = compile_spec(NET + "property p(x0 : Tensor) = f(x0)[0] >= 1 and "
                          "(f(x0)[1] >= 1 and f(x0)[2] >= 1)")["p"]
    chain = compile_spec(NET + "property p(x0 : Tensor) = f(x0)[0] >= 1 and "
                         "f(x0)[1] >= 1 and f(x0)[2] >= 1")["p"]
    got_nested = nested.value(outputs, logic=lg, x0=x0)
    got_chain = chain.value(outputs, logic=lg, x0=x0)
    torch.testing.assert_close(got_nested, lg.and_(T, [a, lg.and_(T, [b, c])]))
    torch.testing.assert_close(got_chain, lg.and_(T, [a, b, c]))


def test_stl_nesting_changes_the_value():
    # the point of the test above: under STL the two readings differ, so flattening would be
    # a law the logic does not have
    lg = get_logic("stl")
    x0 = torch.tensor([[1.0, 1.0, 2.0]])  # atom values 0, 0, 1 (docs/logics.md's witness)
    a, b, c = atoms(lg, x0)
    assert not torch.allclose(lg.or_(T, [a, lg.or_(T, [b, c])]), lg.or_(T, [a, b, c]))


def test_nested_or_in_an_implication_keeps_its_nesting():
    lg = get_logic("stl")
    x0 = torch.tensor([[0.2, 1.5, 0.7], [1.2, 0.1, 0.9], [1.0, 1.0, 2.0]])
    a, b, c = atoms(lg, x0)
    p = compile_spec(NET + "property p(x0 : Tensor) = f(x0)[0] >= 1 or "
                     "(f(x0)[1] >= 1 or f(x0)[2] >= 1)")["p"]
    torch.testing.assert_close(p.value(outputs, logic=lg, x0=x0), lg.or_(T, [a, lg.or_(T, [b, c])]))


def test_domain_premises_inside_a_helper_still_bound_the_variable():
    p = compile_spec(NET + "param eps : Real = 0.1\nvalid(x) = 0 <= x and x <= 1\n"
                     "property p(x0 : Tensor) = forall x . norm_inf(x - x0) <= eps and valid(x) "
                     "=> f(x)[0] <= 10")["p"]
    dom = p.normal.quantifiers()[0].attr.domains[0]
    assert len(dom.linf) == 1 and len(dom.lower) == 1 and len(dom.upper) == 1
    assert len(dom.premises) == 3  # the ball and both bounds of the helper, nested one level
    assert bool(p.holds(outputs, x0=torch.rand(4, 5)).all())


def test_run_time_shape_mismatch_is_a_located_spec_error():
    p = compile_spec("network f : Tensor -> Tensor\nparam eps : Real = 0.1\n"
                     "property p(x0 : Tensor) = forall x . norm_inf(x - x0) <= eps and 0 <= x <= 1"
                     " => norm_inf(x - f(x0)) <= 1", filename="shapes.spec")["p"]
    with pytest.raises(SpecError) as e:
        p.holds(torch.nn.Linear(6, 3), x0=torch.rand(2, 6))
    text = str(e.value)
    assert "shapes.spec:3:" in text and "[6] and [3]" in text and "hint:" in text


def test_per_call_range_parameter_is_checked():
    p = compile_spec(NET + "param n : Nat = 2\n"
                     "property p(x0 : Tensor) = forall j in range(n) . f(x0)[0] <= 1")["p"]
    x0 = torch.zeros(2, 3)
    assert bool(p.holds(outputs, x0=x0, params={"n": 3}).all())
    with pytest.raises(RobustspecError):
        p.holds(outputs, x0=x0, params={"n": -1})
    with pytest.raises(SpecError, match="range"):
        p.holds(outputs, x0=x0, params={"n": 10 ** 7})


def test_the_exact_checker_cannot_train():
    from robustspec.runtime import TrainConfig
    with pytest.raises(InputError, match="no gradient"):
        TrainConfig(regime="constraint", logic="boolean")
    TrainConfig(regime="constraint", logic="stl")  # a differentiable logic is fine
