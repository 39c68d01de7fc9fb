"""Issue 7, defects 2 and 3: alternating quantifiers (the outer search must see how the inner
optimum moves with the outer variable) and premises of one implication under nested
quantifiers (each bounds the variable it bounds)."""
import pytest
import torch

from robustspec.compiler import compile_spec

ALTERNATING = """
network f : Tensor -> Tensor
property p(x0 : Tensor) = forall x . norm_inf(x - x0) <= 0.125 =>
  exists z . norm_inf(z - x) <= 0.25 and f(z)[0] >= -0.1
"""


def linear():
    """f(x) = x1 - 2 x2."""
    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0]]))
    return net


X0 = torch.tensor([[0.5, 0.5]])


def test_the_hand_computed_counterexample_is_one():
    # at x = (0.375, 0.625) the best z = x + (0.25, -0.25) reaches 0.625 - 2 * 0.375 = -0.125
    prop = compile_spec(ALTERNATING)["p"]
    v = prop.check(linear(), x0=X0, at={"x": torch.tensor([[0.375, 0.625]])})
    assert v.holds.tolist() == [False]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_outer_search_moves_and_finds_the_violation(seed):
    prop = compile_spec(ALTERNATING)["p"]
    gen = torch.Generator().manual_seed(seed)
    assert prop.holds(linear(), x0=X0, steps=30, generator=gen).tolist() == [False]
    gen = torch.Generator().manual_seed(seed)
    assert float(prop.loss(linear(), x0=X0, steps=30, generator=gen).detach()) > 0


def test_a_property_that_holds_still_holds():
    # with a wider inner ball z reaches f >= -0.1 from every x of the outer ball
    text = ALTERNATING.replace("0.25 and", "0.5 and")
    prop = compile_spec(text)["p"]
    gen = torch.Generator().manual_seed(0)
    assert prop.holds(linear(), x0=X0, steps=30, generator=gen).tolist() == [True]


NESTED = """
network f : Tensor -> Tensor
property q(x0 : Tensor) = forall x . forall z .
  norm_inf(x - x0) <= 0.125 and norm_inf(z - x) <= 0.25 => f(z)[0] <= 1
"""


def test_premises_under_nested_quantifiers_bound_each_variable():
    prop = compile_spec(NESTED)["q"]
    # z ranges over [x0 - 0.375, x0 + 0.375]: the largest f is 0.875 - 2 * 0.125 = 0.625 <= 1
    assert prop.holds(linear(), x0=X0, steps=20).tolist() == [True]
    gen = torch.Generator().manual_seed(0)
    bad = compile_spec(NESTED.replace("<= 1\n", "<= 0.5\n"))["q"]
    assert bad.holds(linear(), x0=X0, steps=20, generator=gen).tolist() == [False]


def test_exists_premises_under_nested_exists_bound_each_variable():
    text = """
network f : Tensor -> Tensor
property e(x0 : Tensor) = exists x . exists z .
  norm_inf(x - x0) <= 0.125 and norm_inf(z - x) <= 0.25 and f(z)[0] >= 0.5
"""
    prop = compile_spec(text)["e"]
    assert prop.holds(linear(), x0=X0, steps=20).tolist() == [True]  # f reaches 0.625
