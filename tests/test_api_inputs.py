"""Issue 8 item 11 (API side): bad arguments to a property's methods are an InputError (a
RobustspecError) whose message says what to pass, never a raw torch error or a vacuous verdict."""
import math

import pytest
import torch

from robustspec.compiler import compile_spec
from robustspec.dsl.errors import InputError, RobustspecError

SPEC = """
network f : Tensor -> Tensor
param eps : Real = 0.1
property sr(x0 : Tensor, y : Label) =
  forall x . norm_inf(x - x0) <= eps and 0 <= x <= 1 => f(x)[y] >= -100
"""


@pytest.fixture(scope="module")
def sr():
    return compile_spec(SPEC)["sr"]


@pytest.fixture
def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))


X0, Y = torch.rand(2, 4), torch.tensor([0, 1])


def test_inputs_of_the_wrong_size_name_both_sizes(sr, net):
    with pytest.raises(InputError, match=r"shape \[5\] per example \(5 values\), but its first "
                                         r"linear layer takes 4 values"):
        sr.holds(net, x0=torch.rand(2, 5), y=Y)


def test_an_empty_batch(sr, net):
    with pytest.raises(InputError, match="empty batch.*pass at least one example"):
        sr.loss(net, x0=torch.rand(0, 4), y=torch.tensor([], dtype=torch.long))


def test_labels_of_shape_b_1(sr, net):
    with pytest.raises(InputError, match=r"pass shape \[batch\] = \[2\], got \[2, 1\].*squeeze"):
        sr.loss(net, x0=X0, y=Y.unsqueeze(1))


@pytest.mark.parametrize("output", [lambda x: (x, x), lambda x: None])
def test_a_model_returning_a_tuple_or_none(sr, output):
    with pytest.raises(InputError, match="returned (tuple|NoneType), not a tensor"):
        sr.holds(output, x0=X0, y=Y, steps=2)


def test_random_search_with_no_samples(sr, net):
    with pytest.raises(InputError, match="samples >= 1"):
        sr.holds(net, x0=X0, y=Y, search="random", samples=0)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_inputs(sr, net, bad):
    x0 = X0.clone()
    x0[1, 2] = bad
    with pytest.raises(InputError, match=r"'x0' has NaN or infinite values \(example 1 of 2\)"):
        sr.holds(net, x0=x0, y=Y)


@pytest.mark.parametrize("eps", [-0.1, math.nan, math.inf, torch.tensor([0.1, -0.1])])
def test_bad_parameter_values_at_call_time(sr, net, eps):
    with pytest.raises(InputError, match="parameter 'eps'"):
        sr.holds(net, x0=X0, y=Y, params={"eps": eps})


def test_every_error_is_a_robustspec_error(sr, net):
    for call in (lambda: sr.holds(net, x0=X0, y=Y, steps=-1),
                 lambda: sr.holds(net, x0=X0, yy=Y),
                 lambda: sr.holds(net, x0="pixels", y=Y),
                 lambda: sr.holds(None, x0=X0, y=Y),
                 lambda: sr.holds(net, x0=X0, y=Y, params={"epss": 1})):
        with pytest.raises(RobustspecError):
            call()


def test_good_calls_still_work(sr, net):
    assert sr.holds(net, x0=X0, y=Y, params={"eps": 0.0}).tolist() == [True, True]
    assert sr.holds(net, x0=X0, y=Y, params={"eps": torch.tensor([0.1, 0.2])}).shape == (2,)
