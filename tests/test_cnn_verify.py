"""SmallCNN through the verification chain (runtime/bounds.py): max-pools written as ReLUs,
convolutions and pools as sparse matrices. The chain must be the network exactly, its interval
and CROWN bounds must hold at sampled and attacked inputs, the MILP's answers must agree with
search on tiny networks (a proof never next to a counterexample, a counterexample always real,
an optimum always reached by a real input), and layers the chain cannot write exactly are
refused with an error that says what is supported. Tiny networks only: seconds in all."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustspec.compiler import compile_spec
from robustspec.compiler.query import build_query
from robustspec.dsl.errors import InputError
from robustspec.runtime import bounds, verifiers
from robustspec.runtime import verify as verify_mod
from robustspec.runtime.bounds import (ReluNet, crown_preactivations, interval_bounds,
                                       linear_bounds, query_row_bounds)
from robustspec.runtime.models import Clamp, SmallCNN

SPECS = Path(__file__).resolve().parents[1] / "specs"


def prop(name: str):
    spec = {"sr": "standard_robustness", "cr_margin": "classification_robustness"}[name]
    return compile_spec(SPECS / f"{spec}.spec")[name]


@pytest.fixture(params=["dense", "sparse"])
def layout(request, monkeypatch):
    """Tiny networks keep every matrix dense (below SPARSE_MIN entries); "sparse" forces the
    sparse CSR path that 28x28 images take, so both are checked."""
    if request.param == "sparse":
        monkeypatch.setattr(bounds, "SPARSE_MIN", 0)
    return request.param


def randomised(model: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))
    return model.eval().double()


def tiny_cnn(seed: int, channels: int = 1, size=8, width: int = 2, hidden: int = 4,
             classes: int = 3) -> SmallCNN:
    return randomised(SmallCNN(channels, size, classes=classes, width=width, hidden=hidden), seed)


def chain_preactivations(net: ReluNet, x: torch.Tensor) -> list:
    """Every layer's pre-activation at the inputs x [N, n]."""
    out, h = [], x
    for i, b in enumerate(net.biases):
        z = net.apply(i, h) + b
        out.append(z)
        h = torch.relu(z)
    return out


def pgd_extremes(model: nn.Module, lo: torch.Tensor, hi: torch.Tensor, shape: tuple,
                 steps: int = 40) -> torch.Tensor:
    """Inputs [B, 2m, n] pushing each of the m outputs up and down by signed-gradient steps
    inside the box [lo, hi] ([B, n]): where the bounds are most likely to be wrong."""
    B, n = lo.shape
    with torch.no_grad():
        m = model(((lo + hi) / 2).reshape(B, *shape)).shape[1]
    sign = torch.cat([torch.eye(m), -torch.eye(m)]).double()  # [2m, m]
    g = torch.Generator().manual_seed(0)
    x = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(B, 2 * m, n, generator=g,
                                                              dtype=torch.float64)
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            y = model(x.reshape(-1, *shape)).reshape(B, 2 * m, m)
            (y * sign).sum().backward()
        x = torch.minimum(torch.maximum(x + 0.1 * (hi - lo).unsqueeze(1) * x.grad.sign(),
                                        lo.unsqueeze(1)), hi.unsqueeze(1))
    return x.detach()


def search_points(model: nn.Module, lo: torch.Tensor, hi: torch.Tensor, shape: tuple,
                  seed: int = 0) -> torch.Tensor:
    """Inputs [N, n] of one box ([1, n], n <= 16): every vertex, random points and PGD's: on
    the 4x4 networks below the vertices reach the MILP's exact optima, where PGD alone (zero
    gradients of dead ReLUs) found a third of the largest output change."""
    n = lo.shape[1]
    bits = ((torch.arange(2 ** n).unsqueeze(1) >> torch.arange(n)) & 1).to(lo.dtype)
    g = torch.Generator().manual_seed(seed)
    return torch.cat([lo + (hi - lo) * bits,
                      lo + (hi - lo) * torch.rand(2000, n, generator=g, dtype=lo.dtype),
                      pgd_extremes(model, lo, hi, shape)[0]])


# ------------------------------------------------------------------------------------------
# the chain is the network

@pytest.mark.parametrize("channels,size,width,hidden", [(1, 8, 2, 4), (3, (9, 11), 3, 5),
                                                         (2, 5, 4, 3)])
def test_the_chain_computes_small_cnns_exactly(layout, channels, size, width, hidden):
    shape = (channels,) + ((size, size) if isinstance(size, int) else size)
    for seed in range(3):
        cnn = tiny_cnn(seed, channels, size, width, hidden)
        net = ReluNet.from_module(cnn, shape)
        sparse = [w.layout != torch.strided for w in net.weights]
        small = [w.shape[0] * w.shape[1] <= bounds.SPARSE_MIN for w in net.weights]
        assert any(sparse) if layout == "sparse" else not any(s and m for s, m in zip(sparse, small))
        # 2 conv + 2 x 2 pool rounds + hidden + 2 clamp ReLU layers, and the output
        assert len(net.weights) == 9 + 1
        g = torch.Generator().manual_seed(seed)
        x = torch.cat([torch.rand(40, *shape, generator=g, dtype=torch.float64),
                       3 * torch.randn(40, *shape, generator=g, dtype=torch.float64)])
        with torch.no_grad():
            assert torch.allclose(net(x), cnn(x), atol=1e-10, rtol=0)
        net32 = ReluNet.from_module(cnn.float(), shape)
        with torch.no_grad():
            assert torch.allclose(net32(x.float()), cnn(x.float()), atol=1e-5)


@pytest.mark.parametrize("name,layers,shape", [
    ("stride, dilation, groups, 3x3 pool", lambda: [
        nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2, groups=2), nn.ReLU(), nn.MaxPool2d(3),
        nn.Flatten(), nn.Linear(16, 3)], (2, 13, 13)),
    ("'same' circular padding, 2x3 pool, ceil_mode on whole windows", lambda: [
        nn.Conv2d(2, 3, 3, padding="same", padding_mode="circular"), nn.ReLU(),
        nn.MaxPool2d((2, 3), ceil_mode=True), nn.Flatten(), nn.Linear(3 * 3 * 2, 2)], (2, 6, 6)),
    ("pool after pool, dropout, a non-negative conv between ReLU and pool", lambda: [
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(2, 2, 1),
        nn.MaxPool2d(2), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 2), Clamp(-1, 1)], (1, 8, 8)),
    ("a ReLU right after a pool, a pool of a 1x1 window", lambda: [
        nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2), nn.ReLU(), nn.MaxPool2d(1),
        nn.Flatten(), nn.Linear(2 * 3 * 3, 2)], (1, 7, 7)),
])
def test_other_conv_and_pool_layers_are_rebuilt_exactly(layout, name, layers, shape):
    model = randomised(nn.Sequential(*layers()), 7)
    if name.startswith("pool after pool"):
        with torch.no_grad():  # the 1x1 conv between ReLU and pool must keep inputs >= 0
            model[3].weight.abs_()
            model[3].bias.abs_()
    net = ReluNet.from_module(model, shape)
    x = torch.randn(30, *shape, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(net(x), model(x).reshape(30, -1), atol=1e-10, rtol=0), name
    # and its bounds (the pools' max bounds among them) hold at points of a box
    n = x[0].numel()
    lo = torch.rand(2, n, dtype=torch.float64)
    hi = lo + 0.3
    xs = (lo.unsqueeze(1) + 0.3 * torch.rand(2, 500, n, dtype=torch.float64)).reshape(1000, n)
    zs = [z.reshape(2, 500, -1) for z in chain_preactivations(net, xs)]
    for pre in (interval_bounds(net, lo, hi), crown_preactivations(net, lo, hi)):
        for k, ((l, u), z) in enumerate(zip(pre, zs)):
            assert bool((z >= l.unsqueeze(1) - 1e-9).all() and (z <= u.unsqueeze(1) + 1e-9).all()), (name, k)


def test_sparse_and_dense_chains_give_the_same_bounds(monkeypatch):
    cnn = tiny_cnn(3, 1, 8, 3, 6)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 64, generator=g, dtype=torch.float64)
    lo, hi = (x0 - 0.05).clamp(0, 1), (x0 + 0.05).clamp(0, 1)
    C = torch.randn(1, 5, 3, generator=g, dtype=torch.float64)
    got = {}
    for smin in (bounds.SPARSE_MIN, 0):
        monkeypatch.setattr(bounds, "SPARSE_MIN", smin)
        net = ReluNet.from_module(cnn, (1, 8, 8))
        pre = crown_preactivations(net, lo, hi)
        got[smin] = [t for lu in interval_bounds(net, lo, hi) + pre for t in lu] + \
            list(linear_bounds(net, lo, hi, C, pre=pre))
    for a, b in zip(*got.values()):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-10)


# ------------------------------------------------------------------------------------------
# the bounds are sound, CROWN no looser than intervals, the pools' max bounds in use

@pytest.mark.parametrize("crown_all", ["every neuron", "unstable neurons"])
@pytest.mark.parametrize("eps", [0.01, 0.05, 0.3])
def test_bounds_hold_at_sampled_and_attacked_inputs(layout, eps, crown_all, monkeypatch):
    """Every layer's interval and CROWN bounds contain the chain's values at random points,
    the box's corners and PGD's extremes of each output; CROWN is never looser than intervals
    (layer by layer, and on average at the outputs). CROWN bounds every neuron of a layer up to
    CROWN_ALL wide, and only the unstable ones of wider layers: both checked."""
    if crown_all == "unstable neurons":
        monkeypatch.setattr(bounds, "CROWN_ALL", 0)
    shape = (1, 8, 8)
    for seed in range(2):
        cnn = tiny_cnn(10 + seed, 1, 8, 3, 5)
        net = ReluNet.from_module(cnn, shape)
        g = torch.Generator().manual_seed(seed)
        B = 3
        x0 = torch.rand(B, 64, generator=g, dtype=torch.float64)
        lo, hi = (x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1)
        xs = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(B, 300, 64, generator=g,
                                                                   dtype=torch.float64)
        xs[:, 0], xs[:, 1] = lo, hi
        xs = torch.cat([xs, pgd_extremes(cnn, lo, hi, shape)], 1)  # [B, S, n]
        S = xs.shape[1]
        with torch.no_grad():
            y = cnn(xs.reshape(-1, *shape)).reshape(B, S, -1)
            zs = [z.reshape(B, S, -1) for z in chain_preactivations(net, xs.reshape(B * S, -1))]
        assert torch.allclose(zs[-1], y, atol=1e-10)
        ibp = interval_bounds(net, lo, hi)
        crown = crown_preactivations(net, lo, hi)
        for k, ((l, u), (il, iu), z) in enumerate(zip(crown, ibp, zs)):
            for a, b_ in ((l, u), (il, iu)):  # every layer, both methods
                assert bool((z >= a.unsqueeze(1) - 1e-9).all() and (z <= b_.unsqueeze(1) + 1e-9).all()), k
            assert bool((l >= il - 1e-12).all() and (u <= iu + 1e-12).all()), k  # never looser
        C = torch.cat([torch.eye(3), torch.randn(4, 3, generator=g)]).double().unsqueeze(0)
        value = torch.einsum("brm,bsm->bsr", C.expand(B, -1, -1), y)
        widths = {}
        for method in ("interval", "crown"):
            lb, ub = linear_bounds(net, lo, hi, C, method=method)
            assert bool((value >= lb.unsqueeze(1) - 1e-9).all()), method
            assert bool((value <= ub.unsqueeze(1) + 1e-9).all()), method
            widths[method] = float((ub - lb).mean())
        assert widths["crown"] <= widths["interval"] + 1e-9


def test_max_pool_interval_bounds_are_tighter_than_the_relu_sums_alone():
    """The chain writes max(a, b) as relu(b) + relu(a - b), whose interval bound adds the
    widths of a and b; the pools' hints bound the max by [max l, max u]: sound (above) and
    strictly tighter after each pool, which matters (a trained SmallCNN's conv2 bounds: 3.4x
    narrower)."""
    cnn = tiny_cnn(5, 1, 8, 3, 5)
    net = ReluNet.from_module(cnn, (1, 8, 8))
    assert sorted(net.hints) == [2, 3, 5, 6]  # the pools' second rounds and the layers after
    bare = ReluNet(net.weights, net.biases, net.input_shape)
    x0 = torch.rand(4, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    lo, hi = (x0 - 0.1).clamp(0, 1), (x0 + 0.1).clamp(0, 1)
    with_hints, without = interval_bounds(net, lo, hi), interval_bounds(bare, lo, hi)
    for k, ((l, u), (l0, u0)) in enumerate(zip(with_hints, without)):
        assert bool((l >= l0 - 1e-12).all() and (u <= u0 + 1e-12).all()), k
    for k in (3, 6):  # conv2 (after pool 1) and the hidden layer (after pool 2)
        assert float((with_hints[k][1] - with_hints[k][0]).mean()) < \
            0.9 * float((without[k][1] - without[k][0]).mean()), k


def test_crown_of_the_unstable_neurons_only_where_a_layer_is_wide(monkeypatch):
    """Layers wider than CROWN_ALL get CROWN bounds for the neurons their interval bounds leave
    unstable, the others keep the interval bounds: on the first such layer the unstable
    neurons' bounds are exactly those of CROWN over every neuron (soundness everywhere is
    checked above with CROWN_ALL = 0)."""
    cnn = tiny_cnn(8, 1, 8, 3, 5)
    net = ReluNet.from_module(cnn, (1, 8, 8))
    x0 = torch.rand(5, 64, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    lo, hi = (x0 - 0.05).clamp(0, 1), (x0 + 0.05).clamp(0, 1)
    got = {}
    for crown_all in (10 ** 9, 0):
        monkeypatch.setattr(bounds, "CROWN_ALL", crown_all)
        got[crown_all] = crown_preactivations(net, lo, hi)
    full, part = got[10 ** 9], got[0]
    ibp = interval_bounds(net, lo, hi)
    assert torch.equal(full[0][0], part[0][0]) and torch.equal(full[0][1], part[0][1])
    (l, u), (l2, u2), (il, iu) = full[1], part[1], ibp[1]
    unstable = (il < 0) & (iu > 0)
    assert bool(unstable.any()) and bool((~unstable).any())
    assert torch.allclose(l2[unstable], l[unstable], atol=1e-12, rtol=0)
    assert torch.allclose(u2[unstable], u[unstable], atol=1e-12, rtol=0)
    # the stable ones: interval bounds (or CROWN's, where a row pads a batch's spec)
    assert bool((l2 >= il).all() and (u2 <= iu).all())
    assert float((u - l)[unstable].mean()) < float((iu - il)[unstable].mean())  # CROWN helps


# ------------------------------------------------------------------------------------------
# the MILP on the CNN's chain: exact optima, verdicts that agree with search

def _sr_query(cnn, x0, eps, delta=1.0):
    y0 = cnn(x0).argmax(1)
    q = verify_mod._double(build_query(prop("sr"), cnn, x0=x0, y=y0,
                                       params={"eps": eps, "delta": delta}))
    return q, y0


@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_milp_optimum_of_each_output_is_reached_and_never_beaten(layout, eps):
    """Minimising and maximising each output over the MILP (no gap): no input that search
    finds (every vertex of the box among them) beats the optimum (sound), and the MILP's own
    optimiser, run through the real network, reaches it (exact, not a relaxation). The pools'
    ReLUs are unstable here, so their binaries are needed."""
    import highspy
    shape = (1, 4, 4)
    cnn = tiny_cnn(21, 1, 4, 2, 4)
    x0 = torch.rand(1, *shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    q, _ = _sr_query(cnn, x0, eps)
    net = ReluNet.from_module(cnn, shape).to(torch.float64)
    pre = crown_preactivations(net, q.lo, q.hi)
    assert sum(int(((l < 0) & (u > 0)).sum()) for l, u in pre[1:3]) > 0  # pool ReLUs unstable
    col_lo, col_hi, integer, rows, prev = verifiers._encode_network(highspy.kHighsInf, net, q, pre)
    with torch.no_grad():
        ys = cnn(search_points(cnn, q.lo, q.hi, shape).reshape(-1, *shape))
    WL, bL = verifiers._dense_np(net, -1), net.biases[-1].numpy()
    for j in range(3):
        for sign in (1.0, -1.0):
            h = verifiers._highs(highspy, 20, col_lo, col_hi, integer, rows)
            h.setOptionValue("mip_rel_gap", 0.0)  # (a relative gap would be of y + 100: the clamp)
            cost = np.zeros(len(col_lo))
            cost[prev] = sign * WL[j]
            h.changeColsCost(len(cost), np.arange(len(cost), dtype=np.int32), cost)
            h.run()
            assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
            best = h.getInfo().objective_function_value + sign * float(bL[j])
            assert float((sign * ys[:, j]).min()) >= best - 1e-7, (j, sign)  # nothing beats it
            x = torch.tensor(h.getSolution().col_value[:16], dtype=torch.float64).reshape(1, *shape)
            with torch.no_grad():
                assert float(sign * cnn(x)[0, j]) == pytest.approx(best, abs=1e-7), (j, sign)


@pytest.mark.parametrize("solver", ["milp", "marabou"])
def test_complete_solvers_on_a_tiny_cnn_agree_with_search(layout, solver):
    """SR's delta around the largest output change search finds (d*, every vertex of the box
    tried): below it a counterexample exists, so a complete solver must return one and it must
    replay; above it the MILP must prove the property, and no search may contradict a proof."""
    shape = (1, 4, 4)
    cnn = tiny_cnn(22, 1, 4, 2, 4)
    x0 = torch.rand(1, *shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    eps = 0.2
    y0 = cnn(x0).argmax(1)
    lo, hi = (x0.reshape(1, -1) - eps).clamp(0, 1), (x0.reshape(1, -1) + eps).clamp(0, 1)
    with torch.no_grad():
        found = float((cnn(search_points(cnn, lo, hi, shape).reshape(-1, *shape)) - cnn(x0)).abs().max())
    net = ReluNet.from_module(cnn, shape).to(torch.float64)
    p = prop("sr")
    verdicts = {}
    for delta in (0.8 * found, 1.25 * found):
        q, _ = _sr_query(cnn, x0, eps, delta)
        pre = crown_preactivations(net, q.lo, q.hi)
        lb, ub = query_row_bounds(net, q, "crown", pre)
        open_d = [d for d in range(len(q.disjuncts)) if bool(q.active[0, d])]
        params = {"eps": eps, "delta": delta}
        verdict, point, _s, _d = verify_mod.solve_and_replay(
            verifiers.SOLVERS.get(solver), net, q, pre, lb, open_d, 20, cnn, p,
            {"x0": x0, "y": y0}, params, "x", shape, torch.float64)
        verdicts[delta] = verdict
        if verdict == "falsified":
            assert bool(p.check(cnn, x0=x0, y=y0, params=params, at=point).violated[0])
        if verdict == "verified":
            assert found <= delta
    assert verdicts[0.8 * found] == "falsified"
    if solver == "milp":
        assert verdicts[1.25 * found] == "verified"
    else:  # Marabou decides it too, or runs out of time: never a wrong answer
        assert verdicts[1.25 * found] in ("verified", "unknown")


@pytest.mark.parametrize("name,params,seed,radii,milp_decides", [
    ("sr", {"delta": 0.05}, 23, (0.05, 0.15), {"verified"}),
    ("sr", {"delta": 0.1}, 23, (0.05, 0.15), {"falsified"}),
    ("cr_margin", {}, 24, (0.05, 0.15, 0.3), {"verified", "falsified"}),
])
def test_the_pipeline_verifies_a_tiny_cnn(name, params, seed, radii, milp_decides):
    """verify() end to end (attack, bounds, MILP) on a batch: its own invariants (bounds never
    rule out an attacked point, a second attack on the verified) hold, every counterexample
    replays, every proof survives search over every vertex of the box, random and PGD points,
    and the MILP decides points the attack and the bounds leave open."""
    shape = (1, 4, 4)
    cnn = tiny_cnn(seed, 1, 4, 2, 4)
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(6, *shape, generator=g, dtype=torch.float64)
    y0 = cnn(x0).argmax(1)
    p = prop(name)
    decided = set()
    for eps in radii:
        r = verify_mod.verify(cnn, p, x0, y0, eps=eps, verifier="milp", timeout=10,
                              progress=False, params=params)
        decided |= set(zip(r.decided_by, r.verdicts))
        assert "unknown" not in r.verdicts, (eps, r.verdicts, r.notes)  # tiny: all decided
        full = {"eps": eps, **params}
        for i, v in enumerate(r.verdicts):
            xi, yi = x0[i:i + 1], y0[i:i + 1]
            if v == "falsified":
                at = r.counterexamples[i].unsqueeze(0)
                assert bool(p.check(cnn, x0=xi, y=yi, params=full, at=at).violated[0])
            if v == "verified":
                lo = (xi.reshape(1, -1) - eps).clamp(0, 1)
                hi = (xi.reshape(1, -1) + eps).clamp(0, 1)
                pts = search_points(cnn, lo, hi, shape, i).reshape(-1, *shape)
                k = len(pts)
                bad = p.check(cnn, x0=xi.expand(k, *shape), y=yi.expand(k), params=full, at=pts)
                assert not bool(bad.violated.any()), (eps, i)
    assert {v for d, v in decided if d == "milp"} >= milp_decides, decided


# ------------------------------------------------------------------------------------------
# what the chain cannot write exactly is refused, saying what is supported

@pytest.mark.parametrize("layers,match", [
    (lambda: [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, stride=1)], "stride"),
    (lambda: [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, padding=1)], "padding"),
    (lambda: [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, dilation=2)], "dilation"),
    (lambda: [nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)], "ceil_mode"),
    (lambda: [nn.MaxPool2d(2)], "non-negative"),
    (lambda: [nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)], "non-negative"),
    (lambda: [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 1), nn.MaxPool2d(2)], "non-negative"),
    (lambda: [nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.MaxPool2d(2)], r"not \(C, H, W\)"),
    (lambda: [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2)], "AvgPool2d.*MaxPool2d after a ReLU"),
    (lambda: [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(50, 2)], "Linear with 50 inputs"),
])
def test_layers_the_chain_cannot_write_are_refused_clearly(layers, match):
    model = randomised(nn.Sequential(*layers()), 0)
    with pytest.raises(InputError, match=match) as err:
        ReluNet.from_module(model, (1, 8, 8))
    if "MaxPool2d(" in repr(model) and "non-negative" not in match:
        assert "stride == kernel_size, no padding, dilation 1" in str(err.value)


def test_a_small_cnn_with_a_pool_before_its_relu_is_refused():
    cnn = SmallCNN(1, 8, classes=3, width=2, hidden=4)
    layers = list(cnn)
    layers[1], layers[2] = layers[2], layers[1]  # Conv, MaxPool, ReLU: max of signed values
    with pytest.raises(InputError, match="MaxPool2d only over non-negative inputs"):
        ReluNet.from_module(nn.Sequential(*layers), (1, 8, 8))


def test_the_cnn_chain_encodes_only_nonzeros_in_the_milp(monkeypatch):
    """The MILP's rows come from the nonzeros of the sparse matrices: no more nonzeros than the
    chain has (plus the ReLUs' own entries), whatever the layout."""
    import highspy
    monkeypatch.setattr(bounds, "SPARSE_MIN", 0)
    cnn = tiny_cnn(30, 1, 8, 2, 4)
    x0 = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    q, _ = _sr_query(cnn, x0, 0.05)
    net = ReluNet.from_module(cnn, (1, 8, 8)).to(torch.float64)
    pre = crown_preactivations(net, q.lo, q.hi)
    rows = verifiers._encode_network(highspy.kHighsInf, net, q, pre)[3]
    nnz = sum(int(w.values().ne(0).sum()) if w.layout != torch.strided else int(w.ne(0).sum())
              for w in net.weights[:-1])
    # each ReLU: at most 2 rows with its layer's row (z and z - l(1-d)) plus 5 own entries
    assert rows.nnz <= 2 * nnz + 5 * sum(w.shape[0] for w in net.weights[:-1])
    idx = np.concatenate(rows.idx)
    assert len(idx) == rows.nnz and (np.concatenate(rows.val) != 0).all()


def test_export_refuses_a_cnn_too_large_for_dense_layers(tmp_path):
    """export (the API and `robustspec export`) writes dense Gemm layers: a 28x28 SmallCNN's
    sparse conv/pool layers are refused up front with a clear error, before any file is
    written; a small one (dense chain) is still exportable."""
    from robustspec.compiler import compile_spec
    from robustspec.runtime.export import dense_chain, export
    with pytest.raises(InputError, match="too large for that"):
        dense_chain(ReluNet.from_module(SmallCNN(1, 28).eval(), (1, 28, 28)))
    dense_chain(ReluNet.from_module(SmallCNN(1, 8, classes=3, width=2, hidden=4).eval(), (1, 8, 8)))
    sr = compile_spec("specs/standard_robustness.spec")["sr"]
    with pytest.raises(InputError, match="too large for that"):
        export(SmallCNN(1, 28).eval(), sr, torch.rand(1, 1, 28, 28), torch.zeros(1, dtype=torch.long),
               tmp_path / "out", eps=0.02)
    assert not (tmp_path / "out").exists()
