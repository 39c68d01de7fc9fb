"""runtime/bounds.py: interval and CROWN bounds are sound (they contain every sampled output),
CROWN is at least as tight as intervals on average, and both agree with the `bound-propagation`
package on Linear/ReLU nets."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from robustspec.dsl.errors import InputError
from robustspec.runtime.bounds import ReluNet, crown_preactivations, interval_bounds, linear_bounds
from robustspec.runtime.models import Clamp, PaperMLP, SmallCNN

SETTINGS = settings(max_examples=25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _random_net(seed: int, depth: int, width: int, n: int, m: int, clamp: float | None):
    g = torch.Generator().manual_seed(seed)
    layers, k = [], n
    for _ in range(depth):
        lin = nn.Linear(k, width)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(width, k, generator=g))
            lin.bias.copy_(torch.randn(width, generator=g) * 0.5)
        layers += [lin, nn.ReLU()]
        k = width
    out = nn.Linear(k, m)
    with torch.no_grad():
        out.weight.copy_(torch.randn(m, k, generator=g))
        out.bias.copy_(torch.randn(m, generator=g))
    layers.append(out)
    if clamp is not None:
        layers.append(Clamp(-clamp, clamp))
    return nn.Sequential(*layers).eval()


@SETTINGS
@given(seed=st.integers(0, 10_000), depth=st.integers(0, 3), width=st.integers(1, 7),
       n=st.integers(1, 5), m=st.integers(1, 4), eps=st.floats(0.0, 1.0),
       clamp=st.one_of(st.none(), st.floats(0.1, 5.0)), rows=st.integers(1, 5))
def test_bounds_contain_every_sampled_output(seed, depth, width, n, m, eps, clamp, rows):
    torch.set_default_dtype(torch.float64)
    try:
        model = _random_net(seed, depth, width, n, m, clamp)
        net = ReluNet.from_module(model, (n,))
        g = torch.Generator().manual_seed(seed + 1)
        B = 3
        center = torch.randn(B, n, generator=g)
        lo, hi = center - eps, center + eps
        C = torch.randn(B, rows, m, generator=g)
        cx = torch.randn(B, rows, n, generator=g)
        x = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(B, 200, n, generator=g)
        x[:, 0], x[:, 1] = lo, hi  # corners too
        with torch.no_grad():
            y = model(x.reshape(-1, n)).reshape(B, 200, m)
            assert torch.allclose(net(x.reshape(-1, n)).reshape(B, 200, m), y, atol=1e-9)
        value = torch.einsum("brm,bsm->bsr", C, y) + torch.einsum("brn,bsn->bsr", cx, x)
        for method in ("interval", "crown"):
            lb, ub = linear_bounds(net, lo, hi, C, cx, method)
            assert bool((value >= lb.unsqueeze(1) - 1e-9).all()), method
            assert bool((value <= ub.unsqueeze(1) + 1e-9).all()), method
        for (l, u), (il, iu) in zip(crown_preactivations(net, lo, hi), interval_bounds(net, lo, hi)):
            assert bool((l >= il - 1e-9).all() and (u <= iu + 1e-9).all())  # never looser
    finally:
        torch.set_default_dtype(torch.float32)


def test_crown_is_tighter_than_intervals_on_average():
    widths = {"interval": 0.0, "crown": 0.0}
    for seed in range(20):
        model = _random_net(seed, 2, 16, 8, 4, 10.0)
        net = ReluNet.from_module(model, (8,))
        lo = torch.rand(5, 8)
        hi = lo + 0.1
        C = torch.eye(4).unsqueeze(0)
        for method in widths:
            lb, ub = linear_bounds(net, lo, hi, C, method=method)
            widths[method] += float((ub - lb).mean())
    assert widths["crown"] < 0.9 * widths["interval"]


def test_agrees_with_the_bound_propagation_package():
    from bound_propagation import BoundModelFactory, HyperRectangle

    for seed in range(5):
        model = _random_net(seed, 2, 10, 6, 3, None)
        bm = BoundModelFactory().build(model)
        lo = torch.rand(4, 6, generator=torch.Generator().manual_seed(100 + seed))
        for eps in (1e-4, 0.2):  # tiny boxes: stable ReLUs, both exact; larger: both relax
            hi = lo + eps
            ours_i = linear_bounds(ReluNet.from_module(model, (6,)), lo, hi, torch.eye(3).unsqueeze(0),
                                   method="interval")
            theirs_i = bm.ibp(HyperRectangle(lo, hi))
            assert torch.allclose(ours_i[0], theirs_i.lower.detach(), atol=1e-5)
            assert torch.allclose(ours_i[1], theirs_i.upper.detach(), atol=1e-5)
            ours = linear_bounds(ReluNet.from_module(model, (6,)), lo, hi, torch.eye(3).unsqueeze(0))
            theirs = bm.crown(HyperRectangle(lo, hi)).concretize()
            tl, tu = theirs.lower.detach(), theirs.upper.detach()
            pre = interval_bounds(ReluNet.from_module(model, (6,)), lo, hi)[:-1]
            stable = all(bool(((l >= 0) | (u <= 0)).all()) for l, u in pre)
            if eps < 1e-3 and stable:  # no relaxation anywhere: both are the exact linear map
                assert torch.allclose(ours[0], tl, atol=1e-4) and torch.allclose(ours[1], tu, atol=1e-4)
            else:  # both sound relaxations of similar quality (their lower slopes differ)
                w_ours, w_theirs = float((ours[1] - ours[0]).mean()), float((tu - tl).mean())
                assert w_ours < 1.25 * w_theirs and w_theirs < 1.25 * w_ours


def test_paper_mlp_and_conv_nets_are_rebuilt_exactly():
    torch.manual_seed(0)
    mlp = PaperMLP(12, 7, 3).eval()
    x = torch.rand(5, 12)
    assert torch.allclose(ReluNet.from_module(mlp, (12,))(x), mlp(x), atol=1e-5)
    conv = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 5 * 5, 4), Clamp(-1, 1)).eval()
    img = torch.rand(6, 1, 5, 5)
    net = ReluNet.from_module(conv, (1, 5, 5))
    assert torch.allclose(net(img), conv(img), atol=1e-5)
    lb, ub = linear_bounds(net, img.reshape(6, -1) - 0.05, img.reshape(6, -1) + 0.05,
                           torch.eye(4).unsqueeze(0))
    assert bool((lb <= conv(img) + 1e-6).all() and (conv(img) <= ub + 1e-6).all())


def test_small_cnn_is_rebuilt_exactly_and_overlapping_pools_are_refused():
    """SmallCNN's max-pools become ReLU layers (max(a, b) = relu(b) + relu(a - b) on a ReLU's
    outputs); a pool that cannot be written so is refused clearly (tests/test_cnn_verify.py
    checks the rest: bounds, MILP, other layers)."""
    torch.manual_seed(0)
    cnn = SmallCNN(1, 8, classes=3, width=2, hidden=4).eval()
    img = torch.rand(6, 1, 8, 8)
    assert torch.allclose(ReluNet.from_module(cnn, (1, 8, 8))(img), cnn(img), atol=1e-5)
    overlapping = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(3, stride=2))
    with pytest.raises(InputError, match="MaxPool2d only with non-overlapping windows"):
        ReluNet.from_module(overlapping, (1, 8, 8))
