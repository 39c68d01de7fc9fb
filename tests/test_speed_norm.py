"""norm_inf with a gradient runs through lower._NormInf, a fused form of torch's
abs().amax(): the same values and the same gradient bits as torch's own, ties, zero rows,
NaN and infinities included, and so the same search points for LR."""
from __future__ import annotations

import pytest
import torch

from robustspec.compiler import PGD, compile_spec
from robustspec.compiler import lower
from robustspec.compiler.lower import _NormInf, _norm_inf
from robustspec.runtime.models import PaperMLP

_apply = _NormInf.apply
BITS = {torch.float32: torch.int32, torch.float64: torch.int64}


def same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        ((a.view(BITS[a.dtype]) == b.view(BITS[b.dtype])) | (a.isnan() & b.isnan())).all())


def plain(v, dims):
    return v.abs().amax(dims)


def grads(fn, v, dims, g):
    leaf = v.clone().requires_grad_(True)
    out = fn(leaf * 1, dims)  # a non-leaf, as in a lowering
    return out.detach(), torch.autograd.grad(out, leaf, g)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_norm_inf_is_torch_bit_for_bit(dtype, monkeypatch):
    monkeypatch.setattr(lower, "_NORM_INF_FUSED_FROM", 1)  # small tensors here
    gen = torch.Generator().manual_seed(0)
    v = (torch.rand(7, 2, 3, 4, generator=gen, dtype=dtype) - 0.5).round(decimals=1)  # ties
    v[1] = 0.0  # all tie at 0: gradient 0
    v[2, 0, 0, 0] = float("nan")
    v[3, 1, 2, 3] = float("inf")
    v[4, 0, 1, 1] = float("-inf")
    v[4, 1, 1, 1] = float("inf")
    v[5, 0, 0, :2] = -0.0
    g = torch.randn(7, generator=gen, dtype=dtype)
    g[6] = -0.0
    for dims in ((1, 2, 3), (2, 3), (3,)):
        gg = g.reshape((7,) + (1,) * (3 - len(dims))).expand(v.shape[:4 - len(dims)]).contiguous()
        want_v, want_g = grads(plain, v, dims, gg)
        got_v, got_g = grads(_norm_inf, v, dims, gg)
        assert same_bits(got_v, want_v) and same_bits(got_g, want_g), dims


def test_the_fused_form_is_used_only_where_a_gradient_is_taken(monkeypatch):
    monkeypatch.setattr(lower, "_NORM_INF_FUSED_FROM", 1)
    v = torch.rand(3, 5, requires_grad=True)
    big = torch.rand(2, 1 << 15, requires_grad=True)
    assert _norm_inf(big * 1, (1,)).grad_fn.name().endswith("_NormInfBackward")
    assert _norm_inf(v * 1, (1,)).grad_fn.name().endswith("_NormInfBackward")
    with torch.no_grad():
        assert _norm_inf(v * 1, (1,)).grad_fn is None
    assert _norm_inf(v.detach(), (1,)).grad_fn is None
    monkeypatch.undo()
    assert _norm_inf(v * 1, (1,)).grad_fn.name() == "AmaxBackward0"  # small: torch's ops
    assert _norm_inf(big * 1, (1,)).grad_fn.name().endswith("_NormInfBackward")


def test_lr_search_and_loss_are_the_same_as_with_torchs_norm(monkeypatch):
    monkeypatch.setattr(lower, "_NORM_INF_FUSED_FROM", 1)
    torch.manual_seed(1)
    m = PaperMLP(20, hidden=16, classes=5)
    x, y = torch.rand(9, 20), torch.randint(0, 5, (9,))
    search = PGD(steps=6, step_size=0.03, early_stop=False)

    def run():  # compiled afresh: the lowering takes _norm_inf when it compiles
        prop = compile_spec("specs/lipschitz_robustness.spec")["lr"]
        m.zero_grad(set_to_none=True)
        found = prop.search(m, x0=x, y=y, search=search, generator=torch.Generator().manual_seed(2))
        loss = prop.loss(m, x0=x, y=y, search=search, generator=torch.Generator().manual_seed(2),
                         params={"L": 0.5}, reduction="none")
        loss.mean().backward()
        return found["x"], loss.detach(), [p.grad.clone() for p in m.parameters()]
    calls = []
    monkeypatch.setattr(_NormInf, "apply", lambda *a: calls.append(1) or _apply(*a))
    new = run()
    assert calls  # the fused form ran
    monkeypatch.setattr(lower, "_norm_inf", plain)
    old = run()
    assert same_bits(new[0], old[0]) and same_bits(new[1], old[1])
    assert bool((new[1] > 0).any())
    assert all(same_bits(a, b) for a, b in zip(new[2], old[2]))


def test_a_second_derivative_is_torchs(monkeypatch):
    """create_graph=True (e.g. a gradient penalty): the gradient of the gradient agrees."""
    monkeypatch.setattr(lower, "_NORM_INF_FUSED_FROM", 1)
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)

    def second(fn):
        leaf = v.clone().requires_grad_(True)
        out = fn(leaf * 1, (1,))
        (g,) = torch.autograd.grad((out * w).sum(), leaf, create_graph=True)
        return torch.autograd.grad(g.square().sum(), w)[0]
    assert same_bits(second(_norm_inf), second(plain))
