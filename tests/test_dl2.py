"""DL2 losses, exactly, on small hand-computed cases (batch of 7).

The reference values are written out with numpy, following DL2's table:
    a <= b -> relu(a - b)            a < b  -> relu(a - b) + xi [a = b]
    a >= b -> relu(b - a)            a > b  -> relu(b - a) + xi [a = b]
    a == b -> |a - b|                a != b -> xi [a = b]
    and -> sum, or -> product, not pushed to the atoms, A => B == not A or B,
    a tensor comparison holds elementwise (sum over elements; negated: product),
    forall j in S -> sum over j, exists -> product, true -> 0, false -> 1.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robustspec.compiler import DL2, SpecError, compile_spec

# seven examples of two Tensor[3] values, with ties (a_i == b_i) and exact zeros and ones
A = np.array([[0.0, 1.0, 2.0],
              [1.0, 1.0, 1.0],
              [0.5, -0.5, 0.0],
              [-1.0, 2.0, 0.25],
              [0.0, 0.0, 0.0],
              [3.0, -2.0, 1.0],
              [0.5, 0.5, 1.5]])
B = np.array([[0.0, 2.0, 1.0],
              [1.0, 1.0, 1.0],
              [1.0, -1.0, 0.0],
              [2.0, 2.0, -0.75],
              [0.5, 0.25, 1.0],
              [3.0, 1.0, 0.0],
              [0.5, 1.5, 1.5]])
R = A[:, 0]  # two Real columns
S = B[:, 0]

SPEC = """
property le(a : Tensor[3], b : Tensor[3]) = a <= b
property lt(a : Tensor[3], b : Tensor[3]) = a < b
property ge(a : Tensor[3], b : Tensor[3]) = a >= b
property gt(a : Tensor[3], b : Tensor[3]) = a > b
property eq(a : Tensor[3], b : Tensor[3]) = a == b
property ne(a : Tensor[3], b : Tensor[3]) = a != b
property conj(a : Tensor[3], b : Tensor[3]) = a <= b and b <= 1
property disj(a : Tensor[3], b : Tensor[3]) = a <= b or a >= b + 1
property neg(a : Tensor[3], b : Tensor[3]) = not (a <= b)
property neg_lt(a : Tensor[3], b : Tensor[3]) = not (a < b)
property neg_eq(a : Tensor[3], b : Tensor[3]) = not (a == b)
property neg_ne(a : Tensor[3], b : Tensor[3]) = not (a != b)
property neg_and(a : Tensor[3], b : Tensor[3]) = not (a <= b and b >= 0)
property neg_or(a : Tensor[3], b : Tensor[3]) = not (a <= b or b >= 0)
property impl(a : Tensor[3], b : Tensor[3]) = a <= b => a == b
property iff(r : Real, s : Real) = r <= s <=> s <= r
property chain(a : Tensor[3], b : Tensor[3]) = 0 <= a <= b
property neg_chain(a : Tensor[3], b : Tensor[3]) = not (0 <= a <= 1)
property scalar_vs_tensor(a : Tensor[3], r : Real) = a <= r
property real_lt(r : Real, s : Real) = r < s
property real_ne(r : Real, s : Real) = r != s
property idx_forall(a : Tensor[3], b : Tensor[3]) = forall j in range(3) . a[j] <= b[j]
property idx_exists(a : Tensor[3], b : Tensor[3]) = exists j in range(3) . a[j] > b[j]
property idx_nested(a : Tensor[3], b : Tensor[3]) =
  forall j in range(3) . exists k in range(3) . a[j] <= b[k]
property idx_neg(a : Tensor[3], b : Tensor[3]) = not (forall j in range(3) . a[j] <= b[j])
property idx_index_cmp(a : Tensor[3], b : Tensor[3]) =
  forall j in range(3) . j != 1 => a[j] <= b[j]
property idx_tensor_body(a : Tensor[3], b : Tensor[3]) = forall j in range(3) . a <= b[j]
property const_index(a : Tensor[3], b : Tensor[3]) = a[2] - b[0] * 2 >= -a[1] / 2
property f_softmax(a : Tensor[3]) = softmax(a)[0] >= 0.5
property f_log_softmax(b : Tensor[3]) = log_softmax(b)[1] <= -1
property f_norm_2(a : Tensor[3]) = norm_2(a) <= 1
property f_norm_1(b : Tensor[3]) = norm_1(b) <= 1
property f_norm_inf(a : Tensor[3], b : Tensor[3]) = norm_inf(a - b) <= 0.5
property f_norm_p(a : Tensor[3]) = norm(a, 2) <= norm(a, 1) - 1
property f_abs(a : Tensor[3]) = abs(a) <= 1
property f_max_min(a : Tensor[3], b : Tensor[3]) = max(a) <= min(b)
property f_max2(a : Tensor[3], b : Tensor[3]) = max(a, b) >= 1
property f_min2(a : Tensor[3], b : Tensor[3]) = min(a, b) == 0
property f_sum(a : Tensor[3]) = sum(a) == 1
property f_exp(a : Tensor[3]) = exp(a) <= 2
property f_log(a : Tensor[3]) = log(abs(a) + 1) >= 0.5
property t_true(r : Real) = true
property t_false(r : Real) = false
property t_or_false(r : Real, s : Real) = r <= s or false
property t_and_true(r : Real, s : Real) = r <= s and true
"""


@pytest.fixture(scope="module")
def spec():
    return compile_spec(SPEC, filename="dl2_cases.spec")


def relu(v):
    return np.maximum(v, 0.0)


def eq(a, b):
    return (a == b).astype(float)


def lse(v):
    m = v.max(-1, keepdims=True)
    return m + np.log(np.exp(v - m).sum(-1, keepdims=True))


def softmax(v):
    return np.exp(v - lse(v))


def cmp(op, a, b, xi=1.0):
    return {"<=": relu(a - b), ">=": relu(b - a), "<": relu(a - b) + xi * eq(a, b),
            ">": relu(b - a) + xi * eq(a, b), "==": np.abs(a - b), "!=": xi * eq(a, b)}[op]


def all_(op, a, b, xi=1.0):  # an elementwise comparison: sum over elements
    return cmp(op, a, b, xi).sum(-1)


def any_(op, a, b, xi=1.0):  # a negated elementwise comparison: product over elements
    return cmp(op, a, b, xi).prod(-1)


def expected(name, xi=1.0):
    a, b, r, s = A, B, R, S
    return {
        "le": all_("<=", a, b),
        "lt": all_("<", a, b, xi),
        "ge": all_(">=", a, b),
        "gt": all_(">", a, b, xi),
        "eq": all_("==", a, b),
        "ne": all_("!=", a, b, xi),
        "conj": all_("<=", a, b) + all_("<=", b, 1.0),
        "disj": all_("<=", a, b) * all_(">=", a, b + 1),
        "neg": any_(">", a, b, xi),
        "neg_lt": any_(">=", a, b),
        "neg_eq": any_("!=", a, b, xi),
        "neg_ne": any_("==", a, b),
        "neg_and": any_(">", a, b, xi) * any_("<", b, 0.0, xi),
        "neg_or": any_(">", a, b, xi) + any_("<", b, 0.0, xi),
        "impl": any_(">", a, b, xi) * all_("==", a, b),
        "iff": cmp(">", r, s, xi) * cmp("<=", s, r) + cmp(">", s, r, xi) * cmp("<=", r, s),
        "chain": all_("<=", 0.0, a) + all_("<=", a, b),
        "neg_chain": any_(">", 0.0, a, xi) * any_(">", a, 1.0, xi),
        "scalar_vs_tensor": all_("<=", a, r[:, None]),
        "real_lt": cmp("<", r, s, xi),
        "real_ne": cmp("!=", r, s, xi),
        "idx_forall": cmp("<=", a, b).sum(-1),
        "idx_exists": cmp(">", a, b, xi).prod(-1),
        "idx_nested": cmp("<=", a[:, :, None], b[:, None, :]).prod(-1).sum(-1),
        "idx_neg": cmp(">", a, b, xi).prod(-1),
        # j != 1 => ... : (j == 1) or a[j] <= b[j], i.e. |j - 1| * relu(a_j - b_j)
        "idx_index_cmp": (np.abs(np.arange(3) - 1)[None, :] * cmp("<=", a, b)).sum(-1),
        "idx_tensor_body": cmp("<=", a[:, None, :], b[:, :, None]).sum(-1).sum(-1),
        "const_index": cmp(">=", a[:, 2] - b[:, 0] * 2, -a[:, 1] / 2),
        "f_softmax": relu(0.5 - softmax(a)[:, 0]),
        "f_log_softmax": relu((b - lse(b))[:, 1] + 1),
        "f_norm_2": relu(np.sqrt((a ** 2).sum(-1)) - 1),
        "f_norm_1": relu(np.abs(b).sum(-1) - 1),
        "f_norm_inf": relu(np.abs(a - b).max(-1) - 0.5),
        "f_norm_p": relu(np.sqrt((a ** 2).sum(-1)) - (np.abs(a).sum(-1) - 1)),
        "f_abs": relu(np.abs(a) - 1).sum(-1),
        "f_max_min": relu(a.max(-1) - b.min(-1)),
        "f_max2": relu(1 - np.maximum(a, b)).sum(-1),
        "f_min2": np.abs(np.minimum(a, b)).sum(-1),
        "f_sum": np.abs(a.sum(-1) - 1),
        "f_exp": relu(np.exp(a) - 2).sum(-1),
        "f_log": relu(0.5 - np.log(np.abs(a) + 1)).sum(-1),
        "t_true": np.zeros(7),
        "t_false": np.ones(7),
        "t_or_false": cmp("<=", r, s),
        "t_and_true": cmp("<=", r, s),
    }[name]


def args_of(prop):
    vals = {"a": A, "b": B, "r": R, "s": S}
    return {n: torch.tensor(vals[n], dtype=torch.float64) for n, _ in prop.args}


NAMES = [line.split()[1].split("(")[0] for line in SPEC.splitlines()
         if line.startswith("property ")]


def test_cases_cover_every_property(spec):
    assert sorted(NAMES) == sorted(spec)


@pytest.mark.parametrize("name", NAMES)
def test_exact_loss(spec, name):
    prop = spec[name]
    got = prop.loss(None, **args_of(prop), reduction="none")
    want = torch.tensor(expected(name), dtype=torch.float64)
    assert got.shape == (7,)
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-9), (got, want)


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_zero_exactly_when_checker_holds(spec, name):
    prop = spec[name]
    loss = prop.loss(None, **args_of(prop), reduction="none")
    holds = prop.holds(None, **args_of(prop))
    assert torch.equal(loss == 0, holds), (loss, holds)


@pytest.mark.parametrize("name", ["lt", "gt", "ne", "neg", "neg_eq", "neg_and", "impl",
                                  "neg_chain", "real_lt", "real_ne", "idx_exists", "idx_neg"])
def test_xi(spec, name):
    prop = spec[name]
    got = prop.loss(None, **args_of(prop), logic=DL2(xi=0.5), reduction="none")
    want = torch.tensor(expected(name, xi=0.5), dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-9), (got, want)
    # xi matters in these cases: the values differ from xi = 1 on some example
    assert not torch.allclose(got, prop.loss(None, **args_of(prop), reduction="none"))


def test_xi_must_be_positive():
    with pytest.raises(ValueError, match="xi > 0"):
        DL2(xi=0.0)


def test_reductions(spec):
    prop = spec["le"]
    per = prop.loss(None, **args_of(prop), reduction="none")
    mean = prop.loss(None, **args_of(prop))
    total = prop.loss(None, **args_of(prop), reduction="sum")
    assert mean.ndim == 0 and total.ndim == 0
    assert torch.allclose(mean, per.mean()) and torch.allclose(total, per.sum())
    with pytest.raises(ValueError, match="reduction"):
        prop.loss(None, **args_of(prop), reduction="max")


def test_float32_inputs_give_float32_losses(spec):
    prop = spec["le"]
    got = prop.loss(None, a=torch.tensor(A, dtype=torch.float32), b=torch.tensor(B, dtype=torch.float32),
                    reduction="none")
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), torch.tensor(expected("le")), atol=1e-6)


def test_logic_by_name_is_case_insensitive(spec):
    prop = spec["lt"]
    assert torch.equal(prop.loss(None, **args_of(prop), logic="DL2", reduction="none"),
                       prop.loss(None, **args_of(prop), logic="dl2", reduction="none"))


def test_unknown_logic_is_a_spec_error_with_did_you_mean(spec):
    prop = spec["le"]
    with pytest.raises(SpecError) as info:
        prop.loss(None, **args_of(prop), logic="dl3")
    msg = str(info.value)
    assert "unknown logic 'dl3'" in msg
    assert "did you mean 'dl2'?" in msg


def test_batch_independent_index_quantifier_has_one_value_per_example():
    spec = compile_spec("property p(r : Real) = forall j in range(3) . j <= 1\n"
                        "property q(r : Real) = exists j in range(3) . 0.5 <= 1\n")
    r = torch.zeros(7)
    # forall j in {0, 1, 2} . j <= 1: relu(0-1) + relu(1-1) + relu(2-1) = 1 for every example
    assert spec["p"].loss(None, r=r, reduction="none").shape == (7,)
    assert spec["p"].holds(None, r=r).shape == (7,)
    assert spec["q"].holds(None, r=r).shape == (7,)


# ---------------------------------------------------------------- with a network
NET_SPEC = """
network f : Tensor[3] -> Tensor[2]
param eps : Real = 0.1
property margin(x0 : Tensor[3], y : Label) = f(x0)[y] >= 1
property margin_all(x0 : Tensor[3], y : Label) = forall j in classes . j != y => f(x0)[y] > f(x0)[j]
property sr(x0 : Tensor[3], y : Label) =
  forall x . norm_inf(x - x0) <= eps and 0 <= x <= 1 => norm_inf(f(x) - f(x0)) <= 0.01
"""


def linear_model():
    m = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, -1.0]]))
        m.bias.copy_(torch.tensor([0.25, -0.5]))
    return m


def test_network_loss_exact_value():
    spec = compile_spec(NET_SPEC)
    m = linear_model()
    x0 = torch.tensor(np.abs(A) / 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0])
    out = (np.abs(A) / 3) @ np.array([[1.0, -1.0, 0.5], [0.0, 2.0, -1.0]]).T + np.array([0.25, -0.5])
    score = out[np.arange(7), y.numpy()]
    other = out[np.arange(7), 1 - y.numpy()]
    got = spec["margin"].loss(m, x0=x0, y=y, reduction="none")
    assert torch.allclose(got, torch.tensor(relu(1 - score)))
    # forall j in classes . j != y => score > f[j]: the j == y term is |j - y| * ... = 0
    got = spec["margin_all"].loss(m, x0=x0, y=y, reduction="none")
    assert torch.allclose(got, torch.tensor(relu(other - score) + eq(other, score)))


@pytest.mark.parametrize("name", ["margin", "margin_all", "sr"])
def test_loss_is_differentiable_wrt_the_weights(name):
    spec = compile_spec(NET_SPEC)
    m = linear_model()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(7, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 1])
    loss = spec[name].loss(m, x0=x0, y=y, steps=3, generator=g)
    assert loss.ndim == 0 and loss.requires_grad
    assert loss.item() > 0
    assert m.weight.grad is None  # searching leaves no gradient behind
    loss.backward()
    assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0
    assert torch.isfinite(m.weight.grad).all()


# ---------------------------------------------------------------- constants 1 and 1.0


def test_float_and_int_constants_are_not_merged():
    # `1.0` seen first makes the index `a[1]` a Real: a valid property is rejected
    spec = compile_spec("property p(a : Tensor[3]) = 1.0 <= a[1]")
    a = torch.tensor([[0.0, 2.0, 0.0]] * 7)
    assert spec["p"].holds(None, a=a).all()


def test_float_index_is_rejected_even_after_an_int_one():
    with pytest.raises(SpecError, match="an index must be a whole number"):
        compile_spec("property p(a : Tensor[3]) = a[1.0] >= 0")  # rejected on its own ...
    with pytest.raises(SpecError, match="an index must be a whole number"):
        compile_spec("property p(a : Tensor[3]) = a[1] >= 0 and a[1.0] >= 0")  # ... but not here
