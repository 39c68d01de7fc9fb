"""The native kernels (compiler/native.py, C++) give torch's own values and gradient bits.

norm_inf with a gradient runs through the native kernel on CPU, or lower._NormInf (a fused form
of torch's abs().amax()) where the kernel is unavailable: each gives the same values and the
same gradient bits as torch's own, ties, zero rows, NaN and infinities included, and so the same
search points for LR. DL2's product over a finite quantifier's axis runs through the native
prod_last: torch's prod and its backward (both of its formulas), bit for bit."""
from __future__ import annotations

import math

import pytest
import torch

from robustspec.compiler import PGD, compile_spec
from robustspec.compiler import lower, native
from robustspec.compiler.ops import TorchOps
from robustspec.compiler.lower import _NormInf, _norm_inf
from robustspec.runtime.models import PaperMLP

_apply = _NormInf.apply
BITS = {torch.float32: torch.int32, torch.float64: torch.int64}


def same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        ((a.view(BITS[a.dtype]) == b.view(BITS[b.dtype])) | (a.isnan() & b.isnan())).all())


@pytest.fixture(params=["native", "fused"])
def impl(request, monkeypatch):
    """Each test runs once with the native kernel and once with _NormInf (the kernel off)."""
    monkeypatch.setattr(lower, "_NORM_INF_FUSED_FROM", 1)  # small tensors here
    if request.param == "native":
        if native.norm_inf() is None:
            pytest.skip(f"the native kernel is unavailable here: {native.status()}")
    else:
        for accessor in ("norm_inf", "norm_inf_of_difference", "norm_inf_split"):
            monkeypatch.setattr(native, accessor, lambda: None)
    return request.param


@pytest.fixture
def built():
    if native.norm_inf() is None:
        pytest.skip(f"the native kernel is unavailable here: {native.status()}")


def plain(v, dims):
    return v.abs().amax(dims)


def grads(fn, v, dims, g):
    leaf = v.clone().requires_grad_(True)
    out = fn(leaf * 1, dims)  # a non-leaf, as in a lowering
    return out.detach(), torch.autograd.grad(out, leaf, g)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_norm_inf_is_torch_bit_for_bit(dtype, impl):
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad_of", ["a", "b", "both"])
def test_the_difference_kernel_is_torchs_sub_abs_amax_bit_for_bit(dtype, grad_of, built):
    """norm_inf(a - b) in one kernel: the values and both operands' gradients are torch's."""
    gen = torch.Generator().manual_seed(4)
    a = (torch.rand(6, 3, 5, generator=gen, dtype=dtype) - 0.5).round(decimals=1)
    b = (torch.rand(6, 3, 5, generator=gen, dtype=dtype) - 0.5).round(decimals=1)  # ties
    b[1] = a[1]  # a zero row
    a[2, 0, 0] = float("nan")
    a[3, 1, 1], b[3, 1, 1] = float("inf"), 1.0
    a[4, 2, 2], b[4, 2, 2] = float("inf"), float("inf")  # inf - inf = NaN
    g = torch.randn(6, 3, generator=gen, dtype=dtype)

    def run(fn):
        la, lb = a.clone().requires_grad_(grad_of != "b"), b.clone().requires_grad_(grad_of != "a")
        out = fn(la * 1, lb * 1)
        wrt = [t for t in (la, lb) if t.requires_grad]
        return [out.detach()] + list(torch.autograd.grad(out, wrt, g))
    kernel = native.norm_inf_of_difference()
    got = run(lambda x, y: kernel(x, y, 1))
    want = run(lambda x, y: (x - y).abs().amax(2))
    assert len(got) == len(want) and all(same_bits(p, q) for p, q in zip(got, want))
    with pytest.raises(RuntimeError, match="differ in shape"):
        kernel(a, b[:, :1], 1)


def test_the_difference_form_is_taken_only_where_it_applies(built):
    a = torch.rand(4, 7, requires_grad=True)
    name = lower._norm_inf_of_difference(a * 1, torch.rand(4, 7), 0).grad_fn.name()
    assert "NativeNormInfOfDifference" in name
    assert lower._norm_inf_of_difference(a * 1, torch.rand(1, 7), 0) is None  # broadcasts
    assert lower._norm_inf_of_difference(a * 1, torch.rand(4, 7).double(), 0) is None
    b = torch.rand(4, 7)
    want = (a.detach() - b).abs().amax(1)
    # without a gradient too (a search's last point, a loss at the point found): no graph
    out = lower._norm_inf_of_difference(a.detach(), b, 0)
    assert out.grad_fn is None and same_bits(out, want)
    with torch.no_grad():
        out = lower._norm_inf_of_difference(a, b, 0)
    assert out.grad_fn is None and same_bits(out, want)
    assert lower._norm_inf_of_difference(a * 1, torch.rand(4, 7), 1) is None  # no value axes


def test_the_fused_form_is_used_only_where_a_gradient_is_taken(impl, monkeypatch):
    name = "NativeNormInf" if impl == "native" else "_NormInfBackward"
    v = torch.rand(3, 5, requires_grad=True)
    big = torch.rand(2, 1 << 15, requires_grad=True)
    assert name in _norm_inf(big * 1, (1,)).grad_fn.name()
    assert name in _norm_inf(v * 1, (1,)).grad_fn.name()
    with torch.no_grad():
        assert _norm_inf(v * 1, (1,)).grad_fn is None
    assert _norm_inf(v.detach(), (1,)).grad_fn is None
    assert _norm_inf(v.double() * 1, (1,)).grad_fn is not None
    monkeypatch.setattr(lower, "_NORM_INF_FUSED_FROM", 1 << 15)
    small = _norm_inf(v * 1, (1,)).grad_fn.name()
    # small tensors: the native kernel (faster at every size) or else torch's ops
    assert small == ("torch::autograd::CppNode<(anonymous namespace)::NativeNormInf>"
                     if impl == "native" else "AmaxBackward0")
    assert name in _norm_inf(big * 1, (1,)).grad_fn.name()
    assert _norm_inf(v.half() * 1, (1,)).grad_fn.name() == "AmaxBackward0"  # no kernel: torch


def test_lr_search_and_loss_are_the_same_as_with_torchs_norm(impl, monkeypatch):
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
    if impl == "native":  # LR's norm_inf(x - x0) and norm_inf(f(x) - f(x0)): the difference form,
        # and in the search's steps norm_inf(x - x0) split from autograd (lower.SplitNormInf)
        kernel, split = native.norm_inf_of_difference(), native.norm_inf_split()
        monkeypatch.setattr(native, "norm_inf_of_difference",
                            lambda: lambda *a: calls.append(1) or kernel(*a))
        monkeypatch.setattr(native, "norm_inf_split",
                            lambda: lambda *a: calls.append("split") or split(*a))
        fused = native.keep_fold_step()  # the fold, the step and the next norm in one pass
        monkeypatch.setattr(native, "keep_fold_step",
                            lambda: lambda *a: calls.append("fused") or fused(*a))
    else:
        monkeypatch.setattr(_NormInf, "apply", lambda *a: calls.append(1) or _apply(*a))
    new = run()
    assert calls  # the fused form ran
    assert ("split" in calls) == (impl == "native")
    # steps 2-6 of the search and of the loss's search take the split's answer from the step
    assert calls.count("fused") == (12 if impl == "native" else 0)
    assert calls.count("split") == (2 if impl == "native" else 0)
    # the reference: torch's own ops only (no kernel, no fused form)
    for accessor in ("norm_inf", "norm_inf_of_difference", "norm_inf_split", "prod_last",
                     "relu_sub", "abs_sub", "keep_fold_step"):
        monkeypatch.setattr(native, accessor, lambda: None)
    monkeypatch.setattr(lower, "_norm_inf", plain)
    monkeypatch.setattr(_NormInf, "apply", lambda *a: calls.append("fused") or _apply(*a))
    calls.clear()
    old = run()
    assert calls == []  # nothing but torch's ops ran
    assert same_bits(new[0], old[0]) and same_bits(new[1], old[1])
    assert bool((new[1] > 0).any())
    assert all(same_bits(a, b) for a, b in zip(new[2], old[2]))


def _rows_with_ties(dtype, n, seed=5):
    """[9, n] rows of a and b where |a - b| has: one maximum, several, a zero row, a NaN, an
    infinity, and the maximum in the first and the last element (lanes and tails)."""
    gen = torch.Generator().manual_seed(seed)
    a = (torch.rand(9, n, generator=gen, dtype=dtype) - 0.5).round(decimals=1)
    b = (torch.rand(9, n, generator=gen, dtype=dtype) - 0.5).round(decimals=1)
    a[0], b[0] = torch.rand(n, generator=gen, dtype=dtype), 0  # most likely one maximum
    b[1] = a[1]  # a zero row: every element ties
    a[2, n // 2] = float("nan")
    a[3, n - 1], b[3, n - 1] = float("inf"), 1.0
    a[4, 0], b[4, 0] = 5.0, 0.0  # the maximum first
    a[5, n - 1], b[5, n - 1] = -5.0, 0.0  # ... and last, negative
    a[6, -1], b[6, -1] = float("inf"), float("inf")  # inf - inf = NaN
    return a, b


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 3, 8, 16, 17, 40, 784])
def test_the_split_norm_is_torchs_with_its_ties_and_first_tie(dtype, n, built):
    a, b = _rows_with_ties(dtype, n)
    norm, ties, first = native.norm_inf_split()(a, b, 1)
    v = (a - b).abs()
    want = v.amax(1)
    mask = v == want[:, None]
    assert same_bits(norm, want)
    assert torch.equal(ties, mask.sum(1).to(dtype))
    has = mask.any(1)
    assert torch.equal(first[has], mask.int().argmax(1)[has])  # the first tie
    a3, b3 = a.reshape(9, 1, n), b.reshape(9, 1, n)  # over two trailing axes: the same
    assert same_bits(native.norm_inf_split()(a3, b3, 2)[0], want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [3, 17, 784])
@pytest.mark.parametrize("scale", ["random", "zero", "inf", "nan"])
def test_the_fold_adds_autograds_gradient_of_the_norm(dtype, n, scale, built):
    """g + the norm's gradient, as autograd sums the two: the same values (a zero's sign
    aside, where a row has one tie and a finite scale)."""
    a, b = _rows_with_ties(dtype, n)
    gen = torch.Generator().manual_seed(6)
    g = torch.randn(9, n, generator=gen, dtype=dtype)
    g[0, :3] = 0.0  # zeros in the network's gradient
    gn = {"random": torch.randn(9, generator=gen, dtype=dtype), "zero": torch.zeros(9, dtype=dtype),
          "inf": torch.full((9,), float("inf"), dtype=dtype),
          "nan": torch.full((9,), float("nan"), dtype=dtype)}[scale]
    leaf = a.clone().requires_grad_(True)
    want = g + torch.autograd.grad((leaf - b).abs().amax(1), leaf, gn)[0]
    norm, ties, first = native.norm_inf_split()(a, b, 1)
    got = g.clone()
    native.norm_inf_fold()(got, gn, a, b, norm, ties, first, 1)
    assert bool(((got == want) | (got.isnan() & want.isnan())).all())
    nonzero = want != 0
    assert same_bits(got[nonzero], want[nonzero])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [3, 17, 784])
@pytest.mark.parametrize("scale", ["random", "zero", "inf", "nan", "none"])
def test_the_fused_step_is_the_fold_then_the_step_then_the_split(dtype, n, scale, built):
    """keep_fold_step_ = norm_inf_fold_ into g, keep_step_, then norm_inf_split of the
    stepped point: the same kept rows, stepped points and next norms, bit for bit."""
    x0, x = _rows_with_ties(dtype, n)
    gen = torch.Generator().manual_seed(7)
    g = torch.randn(9, n, generator=gen, dtype=dtype)
    g[0, :3] = 0.0
    g[1, :2] = -0.0
    gn = {"random": torch.randn(9, generator=gen, dtype=dtype), "zero": torch.zeros(9, dtype=dtype),
          "inf": torch.full((9,), float("inf"), dtype=dtype),
          "nan": torch.full((9,), float("nan"), dtype=dtype), "none": None}[scale]
    lo, hi = (x0 - 0.3).clamp_min(-0.5), (x0 + 0.3).clamp_max(0.5)
    x = torch.minimum(torch.maximum(x, lo), hi)  # inside the box (NaN stays)
    better = torch.rand(9, generator=gen) < 0.5
    norm, ties, first = native.norm_inf_split()(x, x0, 1)
    want_x, want_best, got_x, got_best = x.clone(), torch.zeros_like(x), x.clone(), torch.zeros_like(x)
    g_ref = g.clone()
    if gn is not None:
        native.norm_inf_fold()(g_ref, gn, want_x, x0, norm, ties, first, 1)
    native.keep_step()(want_x, want_best, better, g_ref, lo, hi, 0.1)
    want = native.norm_inf_split()(want_x, x0, 1)
    g_before = g.clone()
    got = native.keep_fold_step()(got_x, got_best, better, g, lo, hi, 0.1, x0, gn, norm, ties,
                                  first)
    assert same_bits(g, g_before)  # the gradient is read, not written
    assert same_bits(got_x, want_x) and same_bits(got_best, want_best)
    assert same_bits(got[0], want[0]) and torch.equal(got[1], want[1])
    assert torch.equal(got[2], want[2])
    with pytest.raises(RuntimeError, match="int64"):
        native.keep_fold_step()(got_x, got_best, better, g, lo, hi, 0.1, x0, gn, norm, ties,
                                first.int())


def test_the_split_copies_a_gradient_that_another_shares(built):
    """Where autograd hands one tensor to two points (a sum passes it on), the fold adds into
    a copy: the other point's gradient is left as it was."""
    x, z, x0 = torch.rand(4, 6), torch.rand(4, 6), torch.rand(4, 6)
    with lower.SplitNormInf({"x": x, "z": z}) as split:
        norm = split.take(x, x0, 0)
    assert norm is not None and split.leaves() == (norm,)
    shared = torch.randn(4, 6)
    before = shared.clone()
    ones = torch.ones(4)
    grads = split.fold({"x": shared, "z": shared}, (torch.ones(4),), ones)
    assert torch.equal(shared, before) and grads["z"] is shared and grads["x"] is not shared
    leaf = x.clone().requires_grad_(True)
    want = before + torch.autograd.grad((leaf - x0).abs().amax(1), leaf, torch.ones(4))[0]
    assert torch.equal(grads["x"], want)
    own = torch.randn(4, 6)
    assert split.fold({"x": own, "z": None}, (torch.ones(4),), ones)["x"] is own  # in place


def test_the_split_is_taken_only_for_a_searched_point_itself(built):
    x, x0 = torch.rand(4, 6), torch.rand(4, 6)
    with lower.SplitNormInf({"x": x}) as split:
        assert split.take(x * 1, x0, 0) is None  # not the point itself
        assert split.take(x, x0.requires_grad_(True), 0) is None  # x0 with a gradient
        assert split.take(x, torch.rand(1, 6), 0) is None  # broadcast
        assert split.take(x.double(), x0.double(), 0) is None  # not the point (a copy)
        assert split.take(x, x0.detach(), 1) is None  # no value axes at depth 1
    assert lower._SPLIT.get() is None  # the block is closed


def test_a_second_derivative_is_torchs(impl):
    """create_graph=True (e.g. a gradient penalty): the gradient of the gradient agrees."""
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)

    def second(fn):
        leaf = v.clone().requires_grad_(True)
        out = fn(leaf * 1, (1,))
        (g,) = torch.autograd.grad((out * w).sum(), leaf, create_graph=True)
        return torch.autograd.grad(g.square().sum(), w)[0]
    assert same_bits(second(_norm_inf), second(plain))


def test_without_the_kernel_torchs_ops_serve_and_say_why_once(monkeypatch):
    monkeypatch.delenv("ROBUSTSPEC_NATIVE", raising=False)  # whatever the caller's shell says
    monkeypatch.setattr(native, "_state", {})

    def broken():
        raise RuntimeError("Error building extension\ng++: not found")
    monkeypatch.setattr(native, "_build", broken)
    v = torch.rand(4, 3, 8, requires_grad=True)
    with pytest.warns(RuntimeWarning, match=r"could not be built \(g\+\+: not found\).*ROBUSTSPEC_NATIVE=0"):
        got = grads(_norm_inf, v.detach(), (1, 2), torch.ones(4))
    assert same_bits(got[1], grads(plain, v.detach(), (1, 2), torch.ones(4))[1])
    assert native.norm_inf() is None and native.status() == "unavailable: g++: not found"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not at every call
        assert native.norm_inf() is None
    monkeypatch.setenv("ROBUSTSPEC_NATIVE", "0")
    monkeypatch.setattr(native, "_state", {})
    assert native.norm_inf() is None and native.status().startswith("off")


# ------------------------------------------------------------------ prod over the last axis
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", list(range(1, 16)))
def test_native_prod_is_torchs_bit_for_bit(dtype, n, built):
    """Both of torch's backward formulas: g * (prod / v) when no factor in the tensor is 0, the
    zero-safe cumulative products (accumulated in double, as torch's cumprod) when one is."""
    gen = torch.Generator().manual_seed(n)
    kernel = native.prod_last()
    for case in ("plain", "a zero", "nan and inf"):
        v = torch.rand(33, n, generator=gen, dtype=dtype) * 2 - 0.5
        if case == "a zero":
            v[5, n // 2] = 0.0
        if case == "nan and inf":
            v[1, 0], v[2, n - 1] = float("nan"), float("inf")
        g = torch.randn(33, generator=gen, dtype=dtype)
        got, want = (v.clone().requires_grad_(True) for _ in range(2))
        p_got, p_want = kernel(got), want.prod(-1)
        (g_got,), (g_want,) = torch.autograd.grad(p_got, got, g), torch.autograd.grad(p_want, want, g)
        assert same_bits(p_got.detach(), p_want.detach()) and same_bits(g_got, g_want), case


def test_native_prod_is_used_only_where_it_is_torchs(built):
    v = torch.rand(4, 10, requires_grad=True)
    assert "NativeProdLast" in TorchOps.prod(v * 1, -1).grad_fn.name()
    assert "NativeProdLast" in TorchOps.prod(v.double() * 1, 1).grad_fn.name()
    assert TorchOps.prod(v.t() * 1, 0).grad_fn.name().startswith("ProdBackward")  # not the last axis
    long = torch.rand(4, 16, requires_grad=True)  # torch's vectorised order from 16 (doubles)
    assert TorchOps.prod(long * 1, -1).grad_fn.name().startswith("ProdBackward")
    assert TorchOps.prod(v.detach(), -1).grad_fn is None
    with torch.no_grad():
        assert TorchOps.prod(v, -1).grad_fn is None
    with pytest.raises(RuntimeError, match="1 to 15 long"):
        native.prod_last()(long)


def test_native_prod_second_derivative_is_torchs(built):
    gen = torch.Generator().manual_seed(5)
    for zero in (False, True):
        v = torch.rand(6, 10, generator=gen, dtype=torch.float64)
        if zero:
            v[2, 3] = 0.0
        w = torch.randn(6, generator=gen, dtype=torch.float64, requires_grad=True)

        def second(fn):
            leaf = v.clone().requires_grad_(True)
            (g,) = torch.autograd.grad((fn(leaf * 1) * w).sum(), leaf, create_graph=True)
            return torch.autograd.grad(g.square().sum(), w)[0]
        assert same_bits(second(native.prod_last()), second(lambda t: t.prod(-1))), zero


def test_per_class_sr_search_and_loss_are_the_same_without_the_kernels(built, monkeypatch):
    """`forall j in classes` searched: DL2's product over the classes through the kernel, or
    torch's ops: the same points, losses and weight gradients, bit for bit."""
    spec = compile_spec("""
network f : Tensor -> Tensor
param eps : Real = 0.1
param delta : Real = 0.05
property sr(x0 : Tensor) =
  forall x . norm_inf(x - x0) <= eps and 0 <= x <= 1 =>
    forall j in classes . abs(f(x)[j] - f(x0)[j]) <= delta
""")
    torch.manual_seed(3)
    m = PaperMLP(20, hidden=16, classes=5)
    x = torch.rand(9, 20)
    search = PGD(steps=6, step_size=0.03, early_stop=False)

    def run():
        m.zero_grad(set_to_none=True)
        found = spec["sr"].search(m, x0=x, search=search, generator=torch.Generator().manual_seed(2))
        loss = spec["sr"].loss(m, x0=x, search=search, generator=torch.Generator().manual_seed(2),
                               reduction="none")
        loss.mean().backward()
        return found["x"], loss.detach(), [p.grad.clone() for p in m.parameters()]
    calls = []
    kernel = native.prod_last()
    monkeypatch.setattr(native, "prod_last", lambda: lambda *a: calls.append(1) or kernel(*a))
    atoms = []
    for name in ("relu_sub", "abs_sub"):
        k = native._kernel(name)
        monkeypatch.setattr(native, name, (lambda k: lambda: lambda *a: atoms.append(1) or k(*a))(k))
    new = run()
    assert calls and atoms
    for name in ("prod_last", "norm_inf", "norm_inf_of_difference", "norm_inf_split",
                 "relu_sub", "abs_sub"):
        monkeypatch.setattr(native, name, lambda: None)
    old = run()
    assert bool((new[1] > 0).any())
    assert same_bits(new[0], old[0]) and same_bits(new[1], old[1])
    assert all(same_bits(a, b) for a, b in zip(new[2], old[2]))


def _atom_operands(dtype, shapes):
    """Operands with the atoms' edge cases: ties (a == b), signed zeros, NaN, infinities."""
    g = torch.Generator().manual_seed(11)
    special = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1.5, -2.0])
    out = []
    for shape in shapes:
        v = torch.randn(shape, generator=g, dtype=torch.float64).round(decimals=1).to(dtype)
        if v.ndim:
            flat = v.reshape(-1)
            flat[: min(flat.numel(), 7)] = special[: min(flat.numel(), 7)].to(dtype)
        out.append(v)
    a, b = out
    if a.shape == b.shape and a.ndim:  # ties at random places, beside the special ones
        tie = torch.rand(a.shape, generator=g) < 0.3
        b = torch.where(tie, a, b)
    return a, b


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shapes", [((128,), (128,)), ((16, 10), (16, 10)), ((40,), ()),
                                    ((), (33,)), ((), ())])
@pytest.mark.parametrize("atom", ["relu", "relu_eq", "abs"])
@pytest.mark.parametrize("grad_of", ["a", "b", "both"])
def test_the_atom_kernels_are_torchs_bit_for_bit(dtype, shapes, atom, grad_of, built):
    """relu_sub and abs_sub (DL2's atoms, a per-class |f(x)[j] - f(x0)[j]|): torch's values
    and the gradients torch's sub, relu, eq, mul, add and abs give, bit for bit (signed zeros,
    NaN and infinities included), to either operand or both, a 0-dim one summed."""
    a, b = _atom_operands(dtype, shapes)
    xi = 0.375

    def torchs(a, b):
        if atom == "abs":
            return torch.abs(a - b)
        r = torch.relu(a - b)
        return r + xi * TorchOps.eq(a, b) if atom == "relu_eq" else r

    def natives(a, b):
        return native.abs_sub()(a, b) if atom == "abs" else \
            native.relu_sub()(a, b, xi if atom == "relu_eq" else 0.0)

    def run(fn):
        la, lb = a.clone().requires_grad_(grad_of != "b"), b.clone().requires_grad_(grad_of != "a")
        out = fn(la * 1, lb * 1)  # non-leaves, as in a lowering
        g = torch.linspace(-2, 2, out.numel(), dtype=dtype).reshape(out.shape)
        leaves = [t for t in (la, lb) if t.requires_grad]
        return out.detach(), torch.autograd.grad(out, leaves, g)
    want, got = run(torchs), run(natives)
    assert same_bits(got[0], want[0])
    assert len(got[1]) == len(want[1])
    for x, y in zip(got[1], want[1]):
        assert same_bits(x, y)


def test_the_atoms_are_used_only_where_they_fit_and_second_derivatives_are_torchs(built):
    """TorchOps takes the kernels for CPU floats of one dtype, of one shape or either 0-dim;
    broadcast shapes, mixed dtypes and integers keep torch's ops (the same values)."""
    a = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    assert "NativeAtom" in TorchOps.relu_sub(a, b, 0.5).grad_fn.name()
    assert "NativeAtom" in TorchOps.abs_sub(a, b[0, 0]).grad_fn.name()
    for x, y in ((a, b[:, :1]), (a, b.float()), (a, 2.0)):
        r = TorchOps.relu_sub(x, y, 0.5)
        assert "NativeAtom" not in r.grad_fn.name()
        assert torch.equal(r, torch.relu(x - y) + 0.5 * TorchOps.eq(x, torch.as_tensor(y)))
    ints = torch.arange(5)
    assert torch.equal(TorchOps.abs_sub(ints, ints.flip(0)), (ints - ints.flip(0)).abs())
    w = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    for fn, ref in ((lambda x, y: native.relu_sub()(x, y, 0.5),
                     lambda x, y: torch.relu(x - y) + 0.5 * TorchOps.eq(x, y)),
                    (native.abs_sub(), lambda x, y: torch.abs(x - y))):
        def second(f):
            (g,) = torch.autograd.grad((f(a * w, b) * w).sum(), a, create_graph=True)
            return torch.autograd.grad(g.square().sum(), w)[0]
        assert torch.allclose(second(fn), second(ref), rtol=0, atol=1e-12)
    with pytest.raises(RuntimeError, match="one dtype"):
        native.relu_sub()(a, b.float(), 0.0)


def test_a_built_library_is_imported_without_torchs_loader(tmp_path, monkeypatch):
    """A process killed mid-build leaves torch's `lock` file, on which torch's loader waits
    forever: a built library is imported directly, and a build removes the leftover lock
    under a lock of its own (freed by the OS when its process dies)."""
    import torch.utils.cpp_extension as ext
    monkeypatch.setenv("ROBUSTSPEC_NATIVE_CACHE", str(tmp_path))
    build, name, library = native._paths()
    build.mkdir(parents=True)
    (build / "lock").write_text("")  # left by a killed build
    seen = {}

    def load(**kwargs):  # stands in for torch's loader: was the stale lock still there?
        seen["lock"] = (build / "lock").exists()
        return "built"
    monkeypatch.setattr(ext, "load", load)
    assert native._build() == "built" and seen == {"lock": False}
    library.write_bytes(b"")  # built: imported directly, torch's loader not called
    monkeypatch.setattr(native, "_import", lambda n, p: ("imported", n, p))
    seen.clear()
    assert native._build() == ("imported", name, library) and seen == {}


def test_a_missing_compiler_is_said_plainly(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTSPEC_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-robustspec")
    with pytest.raises(RuntimeError, match=r"no C\+\+ compiler \(no-such-compiler-robustspec\)"):
        native._build()
    ninja_log = RuntimeError("Error building extension 'x': [1/2] c++ -c k.cpp\nFAILED: k.o\n"
                             "k.cpp:3:1: error: expected ';'\nninja: build stopped: subcommand failed.")
    assert native._reason(ninja_log) == "k.cpp:3:1: error: expected ';'"


def test_nan_values_are_torchs_nan_and_bad_axes_are_refused(built):
    kernel = native.norm_inf()
    v = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    v.view(torch.int32)[0, 0] = 0x7FC00001  # a NaN with a payload
    v.view(torch.int32)[1, 1] = 0x7F800001  # a signalling NaN
    assert torch.equal(kernel(v, 1).view(torch.int32), v.abs().amax(1).view(torch.int32))
    for ndims in (0, 3):
        with pytest.raises(RuntimeError, match="ndims must be 1 to 2"):
            kernel(v, ndims)
    with pytest.raises(RuntimeError, match="empty reduction"):
        kernel(torch.zeros(3, 0), 1)


def test_torch_func_transforms_get_torchs_ops(built):
    """C++ autograd Functions do not run under torch.func: the kernels step aside there."""
    x0 = torch.rand(4, 6)
    x = torch.rand(4, 6)
    got = torch.func.grad(lambda x: _norm_inf(x - x0, (1,)).sum())(x)
    assert same_bits(got, torch.func.grad(lambda x: (x - x0).abs().amax(1).sum())(x))
    v = torch.rand(3, 5)
    got = torch.func.grad(lambda v: TorchOps.prod(v, -1).sum())(v)
    assert same_bits(got, torch.func.grad(lambda v: v.prod(-1).sum())(v))
    assert native.usable() and native.norm_inf() is not None


# ------------------------------------------------------------------ the search's bookkeeping
def _obj_sequence(gen, n, dtype, steps=6):
    """Objectives and ties a search might see: repeats (ties), NaN, infinities, signed zeros."""
    pool = torch.tensor([0.0, -0.0, 1.0, 2.0, float("nan"), float("inf"), -1.0, 0.5], dtype=dtype)
    for _ in range(steps):
        obj = pool[torch.randint(0, len(pool), (n,), generator=gen)]
        tie = pool[torch.randint(0, len(pool), (n,), generator=gen)]
        yield obj, tie


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_tie", [True, False])
def test_native_best_point_bookkeeping_is_the_python_one(dtype, with_tie, built, monkeypatch):
    """search._Best through native.better_ and keep_step_ (keep only), and through torch's ops:
    the same best objectives, ties and points, bit for bit, NaN bests and equal objectives
    included."""
    from robustspec.compiler.search import _Best

    def run():
        gen = torch.Generator().manual_seed(4)
        best = _Best()
        for obj, tie in _obj_sequence(gen, 64, dtype):
            x = torch.rand(64, 3, 5, generator=gen, dtype=dtype)
            best.update({"x": x}, obj, tie if with_tie else None)
        return best
    calls = []
    better, keep = native.better(), native.keep_step()
    monkeypatch.setattr(native, "better", lambda: lambda *a: calls.append("b") or better(*a))
    monkeypatch.setattr(native, "keep_step", lambda: lambda *a: calls.append("k") or keep(*a))
    new = run()
    assert "b" in calls and "k" in calls
    monkeypatch.setattr(native, "better", lambda: None)
    monkeypatch.setattr(native, "keep_step", lambda: None)
    old = run()
    assert same_bits(new.obj, old.obj) and same_bits(new.points["x"], old.points["x"])
    assert (new.tie is None) == (old.tie is None) and (new.tie is None or same_bits(new.tie, old.tie))
    assert bool(new.obj.isnan().any()) is False or bool(old.obj.isnan().any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [7, 32, 100])
def test_native_pgd_step_is_torchs_sign_sub_clamp(dtype, n, built):
    """x = clamp(x - size * sign(g), lo, hi) in one pass: the values torch's sign_, sub_ and
    clamp_ give (a zero's sign aside), with zero, signed-zero and NaN gradients, NaN points and
    bounds, and empty boxes (lo > hi); the improved rows copied before the step."""
    from robustspec.compiler.search import RealDomain
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(16, n, generator=gen, dtype=dtype)
    g = torch.randn(16, n, generator=gen, dtype=dtype)
    g[g.abs() < 0.3] = 0.0
    g[:, ::5] = -0.0
    g[2, 1] = float("nan")
    x[3, 2] = float("nan")
    lo = (x - 0.05).clamp(0, 1)
    hi = (x + 0.05).clamp(0, 1)
    lo[4] = hi[4] + 0.01  # an empty box: the clamp gives hi
    lo[5, 0] = float("nan")
    hi[6, 0] = float("nan")
    better = torch.rand(16, generator=gen) < 0.5
    dom = RealDomain(lo, hi, None, None)
    want_x = dom.step_(x.clone(), g.clone(), 0.01)
    best = torch.zeros_like(x)
    got_x = x.clone()
    native.keep_step()(got_x, best, better, g, lo, hi, 0.01)
    assert torch.equal(got_x.isnan(), want_x.isnan())
    assert torch.equal(got_x.nan_to_num(), want_x.nan_to_num())  # -0 == +0 here
    assert same_bits(best[better], x[better]) and bool((best[~better] == 0).all())


def _search_both_ways(spec_text, name, monkeypatch, make_args, search):
    spec = compile_spec(spec_text)
    torch.manual_seed(3)
    m = PaperMLP(20, hidden=16, classes=5)

    def run():
        found = spec[name].search(m, search=search, generator=torch.Generator().manual_seed(2),
                                  **make_args())
        loss = spec[name].loss(m, search=search, generator=torch.Generator().manual_seed(2),
                               reduction="none", **make_args())
        return found, loss.detach()
    calls = []
    better, keep = native._kernel("better_"), native._kernel("keep_step_")
    monkeypatch.setattr(native, "better", lambda: better)
    monkeypatch.setattr(native, "keep_step", lambda: lambda *a: calls.append(a[3] is not None)
                        or keep(*a))
    new = run()
    monkeypatch.setattr(native, "better", lambda: None)
    monkeypatch.setattr(native, "keep_step", lambda: None)
    old = run()
    assert set(new[0].points) == set(old[0].points)
    for k in new[0].points:
        assert same_bits(new[0].points[k], old[0].points[k]), k
    assert same_bits(new[1], old[1])
    return calls


def test_pgd_searches_are_the_same_with_and_without_the_step_kernels(built, monkeypatch):
    """SR searched in its box: points and losses bit for bit with the kernels (which step
    there) and without; the default step size (a tensor per element) keeps torch's step."""
    text = """
network f : Tensor -> Tensor
param eps : Real = 0.1
param delta : Real = 0.05
property sr(x0 : Tensor) =
  forall x . norm_inf(x - x0) <= eps and 0 <= x <= 1 => norm_inf(f(x) - f(x0)) <= delta
"""
    torch.manual_seed(0)
    x0 = torch.rand(9, 20)
    calls = _search_both_ways(text, "sr", monkeypatch, lambda: {"x0": x0},
                              PGD(steps=6, step_size=0.03, early_stop=False))
    # search and loss: steps 1-6 fused (the first copies every row into the best points),
    # then the last point kept
    assert calls == ([True] * 6 + [False]) * 2
    calls = _search_both_ways(text, "sr", monkeypatch, lambda: {"x0": x0},
                              PGD(steps=6, early_stop=False))
    assert calls == [False] * 12  # kept natively, stepped by torch (a tensor step size)


def test_pgd_in_an_l2_ball_and_two_variables_are_the_same_without_the_kernels(built, monkeypatch):
    """Where the step is not a box's (an L2 ball) and where one search covers two variables,
    the kernels only keep the rows: the same points and losses as torch's ops."""
    ball = """
network f : Tensor -> Tensor
param eps : Real = 0.3
property near(x0 : Tensor) =
  forall x . norm_2(x - x0) <= eps => norm_inf(f(x) - f(x0)) <= 0.05
"""
    torch.manual_seed(1)
    x0 = torch.rand(9, 20)
    calls = _search_both_ways(ball, "near", monkeypatch, lambda: {"x0": x0},
                              PGD(steps=5, step_size=0.05, early_stop=False))
    assert calls == [False] * 10
    two = """
network f : Tensor -> Tensor
param eps : Real = 0.1
property pair(x0 : Tensor) =
  forall x . forall z . norm_inf(x - x0) <= eps and norm_inf(z - x0) <= eps and 0 <= x <= 1
    and 0 <= z <= 1 => norm_inf(f(x) - f(z)) <= 0.05
"""
    calls = _search_both_ways(two, "pair", monkeypatch, lambda: {"x0": x0},
                              PGD(steps=5, step_size=0.03, early_stop=False))
    assert calls == ([True] * 10 + [False] * 2) * 2  # per step (the first too), x and z


def test_bookkeeping_the_kernel_cannot_take_falls_back_and_bad_calls_raise(built):
    """Ties whose dtype or shape changed between updates go to torch's ops (which promote and
    broadcast), not to a kernel error; a step without both bounds, or tensors on two devices,
    are refused with an error, never read out of bounds."""
    from robustspec.compiler.search import _Best
    x = torch.rand(4, 3)
    b = _Best()
    b.update({"x": x}, torch.rand(4), torch.rand(4, dtype=torch.float64))
    b.update({"x": x}, torch.rand(4), torch.rand(4))
    b = _Best()
    b.update({"x": x}, torch.rand(4), torch.rand(1))
    b.update({"x": x}, torch.rand(4), torch.rand(4))
    keep = native.keep_step()
    with pytest.raises(RuntimeError, match="needs both bounds"):
        keep(x.clone(), torch.zeros(4, 3), torch.ones(4, dtype=torch.bool), torch.randn(4, 3),
             None, None, 0.1)
    with pytest.raises(RuntimeError, match="better must be"):
        keep(x.clone(), torch.zeros(4, 3), torch.ones(3, dtype=torch.bool), None, None, None, 0.0)


# ------------------------------------------------------------------ uniform numbers

# SplitMix64's first five outputs from seed 1234567: the published reference values (Rosetta
# Code, "Pseudo-random numbers/Splitmix64", from Vigna's splitmix64.c)
SPLITMIX64_1234567 = [6457827717110365317, 3203168211198807973, 9817491932198370423,
                      4593380528125082431, 16408922859458223821]


@pytest.mark.parametrize("dtype,bits", [(torch.float32, 24), (torch.float64, 53),
                                        (torch.float16, 11), (torch.bfloat16, 8)])
def test_uniform_numbers_are_splitmix64s_published_outputs(dtype, bits):
    from robustspec.compiler.search import uniform_reference

    u = uniform_reference((5,), dtype, "cpu", 1234567)
    assert u.dtype == dtype
    assert [int(v * 2 ** bits) for v in u.double().tolist()] == \
        [w >> (64 - bits) for w in SPLITMIX64_1234567]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 7, 784, 100_003])
def test_the_uniform_kernel_gives_the_reference_bits(dtype, n, built):
    from robustspec.compiler.search import uniform_reference

    kernel = native.uniform()
    for seed in (0, 1234567, (1 << 62) - 1):
        out = torch.empty(n, dtype=dtype)
        kernel(out, seed)
        assert same_bits(out, uniform_reference((n,), dtype, "cpu", seed))
    # the numbers do not depend on the threads (parallel_for splits by index)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = torch.empty(3, 50_000, dtype=dtype)
            kernel(out, 99)
            outs.append(out)
    finally:
        torch.set_num_threads(before)
    assert same_bits(*outs)
    with pytest.raises(RuntimeError, match="contiguous CPU float32 or float64"):
        kernel(torch.empty(4, 4, dtype=dtype).t(), 1)
    with pytest.raises(RuntimeError, match="contiguous CPU float32 or float64"):
        kernel(torch.empty(4, dtype=torch.int64), 1)


def test_uniform_numbers_look_uniform_and_independent():
    """A million numbers: the 100 bins' chi-square, the mean and variance, and the correlation
    of neighbours (one element apart, and one 784-pixel row apart) within their 99.99% ranges."""
    from robustspec.compiler.search import uniform

    u = uniform((1276, 784), torch.float64, "cpu", torch.Generator().manual_seed(3)).flatten()
    n = u.numel()
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    counts = torch.bincount((u * 100).long(), minlength=100).double()
    chi2 = float(((counts - n / 100) ** 2 / (n / 100)).sum())
    assert 50 < chi2 < 160  # 99 degrees of freedom: 99.99% of draws fall within
    assert abs(float(u.mean()) - 0.5) < 4 * (1 / 12 / n) ** 0.5
    assert abs(float(u.var()) - 1 / 12) < 1e-3
    c = u - 0.5
    for lag in (1, 784):
        r = float((c[:-lag] * c[lag:]).mean() / c.var())
        assert abs(r) < 4 / n ** 0.5
    assert (u * 2 ** 53 % 2 ** 29 != 0).any()  # float64 draws have their low bits


def test_uniform_is_seeded_by_the_generator_and_the_same_without_the_kernel(monkeypatch):
    from robustspec.compiler.search import RealDomain, uniform

    a = uniform((3, 5), torch.float32, "cpu", torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    b = uniform((3, 5), torch.float32, "cpu", g)
    assert torch.equal(a, b)
    assert not torch.equal(b, uniform((3, 5), torch.float32, "cpu", g))  # the generator moved on
    assert not torch.equal(a, uniform((3, 5), torch.float32, "cpu", torch.Generator().manual_seed(8)))
    torch.manual_seed(11)
    c = uniform((3, 5), torch.float64, "cpu", None)  # the default generator
    torch.manual_seed(11)
    assert torch.equal(c, uniform((3, 5), torch.float64, "cpu", None))
    monkeypatch.setattr(native, "uniform", lambda: None)  # torch's integer ops
    assert torch.equal(a, uniform((3, 5), torch.float32, "cpu", torch.Generator().manual_seed(7)))
    # a box domain's uniform start: inside the box, from these numbers
    lo, hi = torch.zeros(3, 5), torch.full((3, 5), 0.5)
    d = RealDomain(lo, hi, None, None)
    x = d.sample(torch.Generator().manual_seed(7))
    assert torch.equal(x, torch.addcmul(lo, hi - lo, a)) and bool(((x >= lo) & (x <= hi)).all())


def _box_by_torch(c, r, lower, upper):
    """compiler/domains.py's torch ops for `norm_inf(x - c) <= r and lower <= x <= upper`."""
    lo = torch.maximum(torch.tensor(lower), c - torch.tensor(r, dtype=torch.float64))
    hi = torch.minimum(torch.tensor(upper), c + torch.tensor(r, dtype=torch.float64))
    w = hi - lo
    return lo, hi, w, w.flatten(1).nan_to_num(nan=0.0).amin(1) < 0, bool(w.amax() <= 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("r", [0.1, 0.0, 1e-8, 3.0])
def test_the_box_kernel_is_torchs_maximum_minimum_and_sub(dtype, r, built):
    gen = torch.Generator().manual_seed(8)
    c = torch.rand(6, 1, 5, 7, generator=gen, dtype=dtype)  # 35 a row: lanes and a tail
    c[0, 0, 0, 0] = 1.05  # beyond the upper bound: an empty row while r < 0.05
    c[1] = 2.0  # the whole row outside
    c[2, 0, 1, 1] = float("nan")
    c[3, 0, 2, 2] = -0.0
    c[4, 0, 0, :3] = torch.tensor([0.1, 0.9, 1.0], dtype=dtype)  # bounds met exactly
    c[5, 0, 4, 6] = float("inf")
    lo, hi, w, empty, point = native.box()(c, r, 0.0, 1.0)
    want = _box_by_torch(c, r, 0.0, 1.0)
    for got, ref in zip((lo, hi, w), want[:3]):  # zeros' signs too; a NaN is any NaN
        number = ~ref.isnan()
        assert same_bits(got, ref) and torch.equal(got.signbit()[number], ref.signbit()[number])
    assert torch.equal(empty, want[3]) and bool(point) == want[4]
    unbounded = native.box()(c, r, -math.inf, math.inf)  # no constant bounds: c -+ r
    assert same_bits(unbounded[0], c - torch.tensor(r, dtype=torch.float64))
    assert same_bits(unbounded[1], c + torch.tensor(r, dtype=torch.float64))


def test_a_box_of_one_point_and_bad_calls(built):
    c = torch.rand(3, 4)
    assert bool(native.box()(c, 0.0, 0.0, 1.0)[4]) and not bool(native.box()(c, 0.1, 0.0, 1.0)[4])
    with pytest.raises(RuntimeError, match="empty center"):
        native.box()(torch.rand(0, 4), 0.1, 0.0, 1.0)
    with pytest.raises(RuntimeError, match="NaN bounds"):
        native.box()(c, 0.1, math.nan, 1.0)


def test_the_box_path_gives_the_domain_torchs_ops_give(built, monkeypatch):
    """realise() of SR's domain with the box kernel and without it: the same bounds, width,
    empty rows and point-ness; a per-example radius, a gradient or an L2 ball keep torch's ops."""
    from robustspec.compiler.domains import realise
    sr = compile_spec("specs/standard_robustness.spec")["sr"]
    x0 = torch.rand(5, 1, 4, 4)
    x0[0, 0, 0, 0], x0[1] = 1.05, 2.0
    args = {"x0": x0, "y": torch.zeros(5, dtype=torch.long)}
    for eps in (0.1, 0.0):
        fast = realise(sr, torch.nn.Flatten(), params={"eps": eps}, **args)["x"]
        with monkeypatch.context() as m:
            m.setattr(native, "box", lambda: None)
            slow = realise(sr, torch.nn.Flatten(), params={"eps": eps}, **args)["x"]
        assert fast._point is not None and slow._point is None
        for a, b in ((fast.lo, slow.lo), (fast.hi, slow.hi), (fast.width, slow.width)):
            assert same_bits(a, b)
        assert torch.equal(fast.empty(), slow.empty()) and fast.is_point == slow.is_point
        assert torch.equal(fast.empty(), torch.tensor([eps == 0.0, True, False, False, False]))
    per_example = realise(sr, torch.nn.Flatten(), params={"eps": torch.full((5,), 0.1)}, **args)
    assert per_example["x"]._point is None  # a radius per example: torch's ops
    with torch.enable_grad():
        moving = realise(sr, torch.nn.Flatten(), x0=x0.clone().requires_grad_(True),
                         y=args["y"])["x"]
    assert moving._point is None and moving.lo.requires_grad  # the bounds keep their gradient


# ------------------------------------------------------------------ argmax's margin: score_rest
def _score_rest_by_torch(v, c):
    """v[c] and max_except(v, c) as compiler/lower.py's terms compute them without the kernel."""
    score = torch.gather(v, 1, c.unsqueeze(1)).squeeze(1)
    mask = torch.zeros(v.shape, dtype=torch.bool).scatter_(-1, c.unsqueeze(-1), True)
    return score, v.masked_fill(mask, float("-inf")).amax(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad_of", ["score", "rest", "both"])
def test_score_rest_is_torchs_gather_masked_fill_amax_bit_for_bit(dtype, grad_of, built):
    """Values and gradients against torch's ops on small integer-valued rows, so ties are
    common, with NaN (of either sign: torch's amax returns the canonical one), +-inf and -0
    in the rows and in the incoming gradients (an infinite or -0 gradient is what a DL2 atom
    hands back), one class (nothing else: -inf) up to the longest row the lowering hands the
    kernel, bit for bit (a zero's sign included: autograd's sum of the two paths turns -0
    into +0)."""
    gen = torch.Generator().manual_seed(11)
    kernel = native.score_rest()
    longest = lower._IN_ORDER[dtype] - 1  # the lowering's limit: torch's amax in order
    for trial in range(150):
        rows = int(torch.randint(1, 7, (), generator=gen))
        n = int(torch.randint(1, 7, (), generator=gen)) if trial % 2 else \
            int(torch.randint(7, longest + 1, (), generator=gen))
        v = torch.randint(-2, 3, (rows, n), generator=gen).to(dtype)
        u = torch.rand(rows, n, generator=gen)
        v[u < 0.05] = math.nan
        v[(u >= 0.05) & (u < 0.1)] = -math.nan  # the sign bit set
        v[(u >= 0.1) & (u < 0.2)] = math.inf
        v[(u >= 0.2) & (u < 0.3)] = -math.inf
        v[(u >= 0.3) & (u < 0.35)] = -0.0
        c = torch.randint(0, n, (rows,), generator=gen)
        gs = torch.randint(-1, 2, (rows,), generator=gen).to(dtype)
        gr = torch.randint(-1, 2, (rows,), generator=gen).to(dtype)
        w = torch.rand(rows, generator=gen)
        gs[w < 0.2] = -0.0
        gr[w > 0.8] = -0.0
        gr[(w > 0.5) & (w < 0.6)] = math.inf
        picked = {"score": [0], "rest": [1], "both": [0, 1]}[grad_of]
        results = []
        for fn in (_score_rest_by_torch, kernel):
            leaf = v.clone().requires_grad_(True)
            outs = fn(leaf, c)
            (g,) = torch.autograd.grad([outs[i] for i in picked], leaf, [(gs, gr)[i] for i in picked])
            results.append((outs[0].detach(), outs[1].detach(), g))
        for i, (want, got) in enumerate(zip(*results)):
            assert same_bits(got, want), (trial, v, c, gs, gr, want, got)
            if i < 2:  # the values' NaNs too: gather's copy of v's, amax's canonical one
                assert torch.equal(got.view(BITS[dtype]), want.view(BITS[dtype])), (trial, v, c)


def test_score_rest_second_derivatives_and_bad_calls(built):
    kernel = native.score_rest()
    c = torch.tensor([0, 4, 2, 1])
    v = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: 2 * kernel(v, c)[0] + kernel(v, c)[1] ** 2, (v,))
    assert torch.autograd.gradgradcheck(lambda v: kernel(v, c)[1] ** 2 + kernel(v, c)[0] ** 3, (v,))
    with pytest.raises(RuntimeError, match="out of range"):
        kernel(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(RuntimeError, match="out of range"):
        kernel(torch.randn(2, 3), torch.tensor([-1, 0]))
    # a non-contiguous v: read as torch reads it
    wide = torch.randn(4, 10, dtype=torch.float64)
    v, c = wide[:, ::2], torch.tensor([0, 4, 2, 1])
    for got, want in zip(kernel(v, c), _score_rest_by_torch(v, c)):
        assert same_bits(got, want)
    with pytest.raises(RuntimeError, match="int64"):
        kernel(torch.randn(2, 3), torch.tensor([0, 1], dtype=torch.int32))


CR = """
network f : Tensor -> Tensor
param eps : Real = 0.1
property cr(x0 : Tensor, y : Label) =
  forall x . norm_inf(x - x0) <= eps and 0 <= x <= 1 => argmax(f(x)) == y
property not_cr(x0 : Tensor, y : Label) =
  exists x . norm_inf(x - x0) <= eps and 0 <= x <= 1 and argmax(f(x)) != y
"""


@pytest.mark.parametrize("name", ["cr", "not_cr"])
@pytest.mark.parametrize("logic", ["dl2", "goedel", "product"])
def test_argmax_searches_are_the_same_with_and_without_score_rest(name, logic, built, monkeypatch):
    """CR's attack (argmax(f(x)) == y searched through its margin) and its negation: the
    points and objectives (whose sign is the verdict) are the same bits with the kernel as
    with torch's ops, under three logics, and the kernel ran at every evaluation."""
    spec = compile_spec(CR)
    torch.manual_seed(3)
    m = PaperMLP(20, hidden=16, classes=5)
    x0, y = torch.rand(12, 20), torch.randint(0, 5, (12,))
    kernel, calls = native.score_rest(), []

    def run():
        return spec[name].search(m, x0=x0, y=y, logic=logic, generator=torch.Generator().manual_seed(2),
                                 search=PGD(steps=5, step_size=0.03, early_stop=False))
    monkeypatch.setattr(native, "score_rest", lambda: lambda v, c: calls.append(1) or kernel(v, c))
    new = run()
    assert len(calls) == 6  # 5 steps' evaluations and the last point's
    monkeypatch.setattr(native, "score_rest", lambda: None)
    old = run()
    for k in old.points:
        assert same_bits(new.points[k], old.points[k])
        assert same_bits(new.objective[k], old.objective[k])


@pytest.mark.parametrize("label", [5, -1])
def test_a_label_out_of_range_keeps_the_specs_error_with_score_rest(label, built):
    from robustspec.dsl.diagnostics import SpecError

    spec = compile_spec(CR)
    m = PaperMLP(20, hidden=16, classes=5)
    with pytest.raises(SpecError, match="index out of range"):
        spec["cr"].search(m, x0=torch.rand(3, 20), y=torch.tensor([0, label, 1]),
                          search=PGD(steps=2, step_size=0.03))


def test_score_rest_is_left_to_torch_where_amax_is_not_in_order(built, monkeypatch):
    """32 float classes: torch's amax is vectorised there (a -0/+0 tie can take the other
    sign), so the lowering keeps torch's ops; 31 classes take the kernel."""
    spec = compile_spec(CR)
    kernel, calls = native.score_rest(), []
    monkeypatch.setattr(native, "score_rest", lambda: lambda v, c: calls.append(v.shape[1])
                        or kernel(v, c))
    for classes in (31, 32):
        m = PaperMLP(20, hidden=16, classes=classes)
        spec["cr"].search(m, x0=torch.rand(3, 20), y=torch.tensor([0, 30, 1]),
                          search=PGD(steps=1, step_size=0.03))
    assert calls == [31, 31]
