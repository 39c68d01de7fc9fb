"""Issue 7, defect 1: the IR keeps a formula as written; a Boolean law is applied only under a
logic that has it. Expected values are computed by hand from each logic's documented table."""
import math

import pytest
import torch

from robustspec.compiler import compile_spec
from robustspec.compiler.testing import check_absorbing, check_idempotence, check_identity

NET = "network f : Tensor -> Tensor[3]\n"
NET_UNSIZED = "network f : Tensor -> Tensor\n"


class Const(torch.nn.Module):
    """f(x) = (o, 0, 0) whatever x is."""

    def __init__(self, o):
        super().__init__()
        self.o = o

    def forward(self, x):
        out = torch.zeros(x.shape[0], 3, dtype=x.dtype)
        out[:, 0] = self.o
        return out


def value(body, logic, o=0.5, net=NET, **kw):
    spec = compile_spec(net + f"property p(x0 : Tensor) = {body}\n")
    x0 = torch.zeros(1, 2, dtype=torch.float64)
    return float(spec["p"].value(Const(o), logic=logic, x0=x0, **kw)[0])


A = "f(x0)[0] <= -1"  # at f(x0)[0] = 0.5: DL2 violation 1.5; fuzzy truth 1 / (1 + 1.5) = 0.4


def test_dl2_and_of_a_formula_with_itself_is_the_sum():
    assert value(f"{A} and {A}", "dl2") == pytest.approx(3.0)  # 1.5 + 1.5


def test_dl2_or_of_a_formula_with_itself_is_the_product():
    assert value(f"{A} or {A}", "dl2") == pytest.approx(2.25)  # 1.5 * 1.5


def test_dl2_and_false_adds_one():
    assert value(f"{A} and false", "dl2") == pytest.approx(2.5)  # 1.5 + 1


def test_dl2_or_false_is_identity_and_or_true_absorbs():
    assert value(f"{A} or false", "dl2") == pytest.approx(1.5)
    assert value(f"{A} or true", "dl2") == 0.0


def test_loss_does_not_depend_on_a_declared_output_shape():
    body = f"{A} and not (f(x0)[0] > -1)"  # the same atom twice, once written as a negation
    assert value(body, "dl2", net=NET) == pytest.approx(3.0)
    assert value(body, "dl2", net=NET_UNSIZED) == pytest.approx(3.0)


def test_unused_finite_quantifier_agrees_with_and():
    two = value(f"forall j in range(2) . {A}", "dl2")
    assert two == pytest.approx(3.0) and value(f"{A} and {A}", "dl2") == pytest.approx(two)


# truth 0.8: atom `f(x0)[0] <= -1` with f(x0)[0] = -0.75 has violation 0.25, truth 1/1.25 = 0.8
@pytest.mark.parametrize("logic, expected", [
    ("lukasiewicz", 0.6),                         # max(0, 0.8 + 0.8 - 1)
    ("product", 0.64),                            # 0.8 * 0.8
    ("yager", 1 - math.sqrt(0.2 ** 2 * 2)),       # 1 - min(1, ||(0.2, 0.2)||_2) = 0.71716
    ("goedel", 0.8),                              # min: idempotent
])
def test_fuzzy_and_of_a_formula_with_itself(logic, expected):
    assert value(f"{A} and {A}", logic, o=-0.75) == pytest.approx(expected, abs=1e-6)


def test_stl_or_false_is_not_the_identity():
    # robustness of A at f(x0)[0] = 0.5 is -1.5; or(A, -inf) = nu * log((exp(-1.5) + 0) / 2)
    assert value(f"{A} or false", "stl") == pytest.approx(-1.5 - math.log(2))
    assert value(f"{A} and true", "stl") == pytest.approx(-1.5)  # softmin with +inf: identity


def test_checker_still_decides_exactly():
    spec = compile_spec(NET + f"property p(x0 : Tensor) = ({A} and {A}) or false\n")
    x0 = torch.zeros(2, 2)
    assert spec["p"].holds(Const(-2.0), x0=x0).tolist() == [True, True]
    assert spec["p"].holds(Const(0.5), x0=x0).tolist() == [False, False]


@pytest.mark.parametrize("check, logic, claimed", [
    (check_idempotence, "dl2", False), (check_idempotence, "goedel", True),
    (check_identity, "dl2", True), (check_identity, "stl", False),
    (check_absorbing, "dl2", False), (check_absorbing, "product", True),
    (check_idempotence, "boolean", True), (check_absorbing, "boolean", True),
])
def test_kit_sees_which_laws_hold(check, logic, claimed):
    r = check(logic, max_examples=25, shrink=False)
    assert r.claimed == claimed
    assert r.holds == claimed  # every logic claims exactly the laws it has
