"""The affine/ReLU chain of a float32 network is built in float64 for proofs (ReluNet.from_module's
dtype): float32 -> float64 is exact, so the chain is the real network, where a chain built in
float32 rounds the Clamp's bias shift b + 100 (ulp 7.6e-6 at 100) and the products of composed
maps, and the bounds and MILP reason about a slightly different network. Each test shows the
float32-built chain's error too, so it checks that the difference is real."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustspec.compiler import compile_spec
from robustspec.runtime import bounds
from robustspec.runtime import verify as verify_mod
from robustspec.runtime.bounds import ReluNet
from robustspec.runtime.models import Clamp, PaperMLP, SmallCNN

SPECS = Path(__file__).resolve().parents[1] / "specs"


def randomised32(model: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    """float32 random weights; biases whose b + 100 float32 cannot hold (checked)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))
    model = model.float().eval()
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    b = last.bias.detach().double()
    assert bool(((b + 100).float().double() != b + 100).all())  # the premise: b + 100 rounds
    return model


def errors(model: nn.Module, shape: tuple, x: torch.Tensor) -> tuple[float, float]:
    """max |chain(x) - model in float64 (x)| of the float64-built and the float32-built chain."""
    ref = copy.deepcopy(model).double()
    with torch.no_grad():
        want = ref(x.reshape(-1, *shape))
        net64 = ReluNet.from_module(model, shape, dtype=torch.float64)
        net32 = ReluNet.from_module(model, shape)  # dtype=None: the model's, float32
        assert all(t.dtype == torch.float64 for t in net64.weights + net64.biases)
        assert all(t.dtype == torch.float32 for t in net32.weights + net32.biases)
        e64 = float((net64(x) - want).abs().max())
        e32 = float((net32.to(torch.float64)(x) - want).abs().max())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the model left as it was
    return e64, e32


def test_paper_mlp_chain_is_the_float32_network_exactly():
    torch.manual_seed(0)
    model = randomised32(PaperMLP(20, 16, 10), 1)
    x = torch.rand(50, 20, dtype=torch.float64)
    e64, e32 = errors(model, (20,), x)
    assert e64 < 1e-12
    assert e32 > 1e-7  # the float32-built chain's b + 100 rounding: the defect


@pytest.mark.parametrize("sparse", [False, True])
def test_small_cnn_chain_is_the_float32_network_exactly(sparse, monkeypatch):
    if sparse:  # the CSR path that 28x28 images take
        monkeypatch.setattr(bounds, "SPARSE_MIN", 0)
    model = randomised32(SmallCNN(1, 8, classes=4, width=3, hidden=6), 2)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(30, 64, generator=g, dtype=torch.float64)
    net = ReluNet.from_module(model, (1, 8, 8), dtype=torch.float64)
    assert any(w.layout != torch.strided for w in net.weights) == sparse
    assert net.hints and all(h.S.dtype == torch.float64 and (h.Wu is None or h.Wu.dtype == torch.float64)
                             for h in net.hints.values())
    e64, e32 = errors(model, (1, 8, 8), x)
    assert e64 < 1e-12
    assert e32 > 1e-7


def test_composed_linear_maps_are_multiplied_in_float64():
    """Linear after Linear (no ReLU between) is one map W2 @ W1: its float64 product is the
    real network's, a float32 product is rounded at every step."""
    g = torch.Generator().manual_seed(4)
    model = nn.Sequential(nn.Linear(30, 30), nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 5),
                          nn.Linear(5, 3), Clamp(-100, 100))
    model = randomised32(model, 5)
    x = torch.rand(40, 30, generator=g, dtype=torch.float64)
    e64, e32 = errors(model, (30,), x)
    assert e64 < 1e-12 and e32 > 1e-7


def test_verify_bounds_use_the_float64_built_chain(monkeypatch):
    """verify() hands bound propagation a chain that is the float32 model exactly (the old code
    built it in float32 and converted: off by ~3e-6), and its bounds contain the model's float64
    outputs at points of the box."""
    model = randomised32(PaperMLP(12, 8, 3), 6)
    g = torch.Generator().manual_seed(7)
    x = torch.rand(4, 12, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    seen = []
    crown = verify_mod.crown_preactivations

    def spy(net, lo, hi):
        pre = crown(net, lo, hi)
        seen.append((net, lo, hi, pre))
        return pre
    monkeypatch.setattr(verify_mod, "crown_preactivations", spy)
    p = compile_spec(SPECS / "standard_robustness.spec")["sr"]
    eps = 0.05
    r = verify_mod.verify(model, p, x, y, eps=eps, verifier="bounds", progress=False)
    assert len(r.verdicts) == 4 and len(seen) == 1
    net, lo, hi, pre = seen[0]
    assert all(t.dtype == torch.float64 for t in net.weights + net.biases)
    pts = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(4, 200, 12, generator=g,
                                                                dtype=torch.float64)
    pts[:, 0], pts[:, 1] = lo, hi
    ref = copy.deepcopy(model).double()
    with torch.no_grad():
        want = ref(pts.reshape(-1, 12)).reshape(4, 200, 3)
        got = net(pts.reshape(-1, 12)).reshape(4, 200, 3)
    assert float((got - want).abs().max()) < 1e-12
    out_lo, out_hi = pre[-1]
    assert bool((out_lo.unsqueeze(1) <= want + 1e-9).all() and (want <= out_hi.unsqueeze(1) + 1e-9).all())


def test_export_rounds_the_float64_chain_once(tmp_path):
    """The ONNX file keeps float32 weights, each the float32 rounding of the exact (float64)
    chain's, not the float32 chain's accumulated roundings."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from robustspec.runtime.export import export
    model = nn.Sequential(nn.Linear(30, 30), nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 3),
                          Clamp(-100, 100))
    model = randomised32(model, 8)
    g = torch.Generator().manual_seed(9)
    x = torch.rand(2, 30, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    p = compile_spec(SPECS / "standard_robustness.spec")["sr"]
    out = export(model, p, x, y, tmp_path, eps=0.05)
    inits = [numpy_helper.to_array(t) for t in onnx.load(str(out["onnx"])).graph.initializer]
    assert inits and all(a.dtype == np.float32 for a in inits)
    exact = ReluNet.from_module(model, (30,), dtype=torch.float64)
    rounded32 = ReluNet.from_module(model, (30,))
    want = [t.float().numpy() for w, b in zip(exact.weights, exact.biases) for t in (w, b)]
    old = [t.numpy() for w, b in zip(rounded32.weights, rounded32.biases) for t in (w, b)]
    got = {a.tobytes() for a in inits}
    assert all(a.tobytes() in got for a in want)
    assert any(a.tobytes() not in got for a in old)  # the float32-built chain differs
