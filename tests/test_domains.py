"""The public realisation of a property's domains (compiler/domains.py)."""
import torch

from robustspec.compiler import compile_spec
from robustspec.compiler.domains import domains_of, realise

SPEC = """
network f : Tensor -> Tensor
param eps : Real = 0.1
property p(x0 : Tensor) = forall x . norm_inf(x - x0) <= eps and 0 <= x <= 1 =>
  exists z . norm_inf(z - x) <= 0.25 and f(z)[0] >= -0.1
"""


def test_realise_box_per_example():
    prop = compile_spec(SPEC)["p"]
    x0 = torch.tensor([[0.5, 0.05], [0.95, 0.3]])
    d = realise(prop, torch.nn.Linear(2, 1), x0=x0)
    assert set(d) == {"x"}  # z's domain needs x
    assert torch.allclose(d["x"].lo, torch.tensor([[0.4, 0.0], [0.85, 0.2]]))
    assert torch.allclose(d["x"].hi, torch.tensor([[0.6, 0.15], [1.0, 0.4]]))
    d2 = domains_of(prop, torch.nn.Linear(2, 1), x0=x0, params={"eps": 0.0})
    assert torch.equal(d2["x"].lo, torch.maximum(x0, torch.zeros(())))


def test_realise_inner_domain_given_outer_point():
    prop = compile_spec(SPEC)["p"]
    x0 = torch.tensor([[0.5, 0.5]])
    x = torch.tensor([[0.375, 0.625]])
    d = realise(prop, torch.nn.Linear(2, 1), x0=x0, at={"x": x})
    assert torch.allclose(d["z"].lo, x - 0.25) and torch.allclose(d["z"].hi, x + 0.25)
