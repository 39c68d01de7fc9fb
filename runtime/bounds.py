"""Sound bounds of a network's outputs over an input box: interval (IBP) and CROWN.

A network is first flattened to a chain of affine maps with ReLUs between them
(`ReluNet.from_module`): nn.Linear, nn.Conv2d (as its dense matrix), nn.Flatten, nn.ReLU and the
project's Clamp, written exactly as ``hi - relu(hi - lo - relu(z - lo))``; a clamp that the
bounds show inactive on the domain has stable ReLUs and costs nothing (the bounds, the MILP and
Marabou treat a stable ReLU as linear). MaxPool and anything else are refused with a clear error.

CROWN (Zhang et al. 2018) bounds linear functions C y of the outputs directly, by a backward
pass of linear relaxations; intermediate pre-activation bounds are CROWN bounds of each layer
(interval bounds for layers wider than `CROWN_WIDTH`, where identity specs would be too big).
Everything is batched over examples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from robustspec.dsl.errors import InputError

CROWN_WIDTH = 2048


@dataclass
class ReluNet:
    """y = A_L(relu(A_{L-1}(... relu(A_1(x))))), x flattened; weights[i] is [out, in]."""

    weights: list
    biases: list
    input_shape: tuple

    @property
    def inputs(self) -> int:
        return self.weights[0].shape[1]

    @property
    def outputs(self) -> int:
        return self.weights[-1].shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                h = torch.relu(h)
        return h

    @classmethod
    def from_module(cls, model: nn.Module, input_shape) -> "ReluNet":
        """The affine/ReLU chain of an nn.Sequential model (nested Sequentials flattened)."""
        from .models import Clamp

        input_shape = tuple(int(s) for s in input_shape)
        dtype = next(model.parameters()).dtype if any(True for _ in model.parameters()) else torch.float32
        n = math.prod(input_shape)
        W = torch.eye(n, dtype=dtype)
        b = torch.zeros(n, dtype=dtype)
        ws, bs = [], []
        shape = input_shape

        def layers(m):
            if isinstance(m, nn.Sequential):
                for c in m:
                    yield from layers(c)
            else:
                yield m
        if not isinstance(model, nn.Sequential):
            raise InputError(f"bound propagation needs an nn.Sequential model; got "
                             f"{type(model).__name__}")
        with torch.no_grad():
            for layer in layers(model):
                if isinstance(layer, nn.Flatten):
                    shape = (math.prod(shape),)
                elif isinstance(layer, nn.Linear):
                    W = layer.weight.to(dtype) @ W
                    b = layer.weight.to(dtype) @ b + (layer.bias.to(dtype) if layer.bias is not None else 0)
                    shape = (layer.out_features,)
                elif isinstance(layer, nn.Conv2d):
                    if len(shape) == 1:
                        shape = getattr(model, "input_shape", None) or shape
                    if len(shape) != 3:
                        raise InputError(f"a Conv2d after an input of shape {shape}: cannot tell "
                                         "its image shape")
                    k = math.prod(shape)
                    basis = torch.eye(k, dtype=dtype).reshape((k,) + tuple(shape))
                    zero = torch.zeros((1,) + tuple(shape), dtype=dtype)
                    out0 = layer(zero)
                    cols = (layer(basis) - out0).reshape(k, -1)  # column i: image of e_i
                    shape = tuple(out0.shape[1:])
                    Wc = cols.T
                    W = Wc @ W
                    b = Wc @ b + out0.reshape(-1)
                elif isinstance(layer, nn.ReLU):
                    ws.append(W)
                    bs.append(b)
                    W = torch.eye(W.shape[0], dtype=dtype)
                    b = torch.zeros(W.shape[0], dtype=dtype)
                elif isinstance(layer, Clamp):
                    k = W.shape[0]
                    eye = torch.eye(k, dtype=dtype)
                    ws.append(W)
                    bs.append(b - layer.low)  # relu(z - lo)
                    ws.append(-eye)
                    bs.append(torch.full((k,), layer.high - layer.low, dtype=dtype))
                    W, b = -eye, torch.full((k,), layer.high, dtype=dtype)
                elif isinstance(layer, (nn.Identity, nn.Dropout)):
                    continue
                else:
                    raise InputError(f"bound propagation does not support {type(layer).__name__} "
                                     "layers (supported: Linear, Conv2d, ReLU, Flatten, Clamp); "
                                     "verify a network without them (e.g. --model mlp)")
        ws.append(W)
        bs.append(b)
        return cls([w.detach().clone() for w in ws], [v.detach().clone() for v in bs], input_shape)

    def to(self, dtype) -> "ReluNet":
        return ReluNet([w.to(dtype) for w in self.weights], [b.to(dtype) for b in self.biases],
                       self.input_shape)


def _affine_interval(w, b, lo, hi):
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    c = mid @ w.T + b
    r = rad @ w.abs().T
    return c - r, c + r


def interval_bounds(net: ReluNet, lo: torch.Tensor, hi: torch.Tensor):
    """Pre-activation bounds [(l, u)] of every affine layer (the last is the output), [B, k] each."""
    out = []
    l, u = lo, hi
    for i, (w, b) in enumerate(zip(net.weights, net.biases)):
        l, u = _affine_interval(w, b, l, u)
        out.append((l, u))
        l, u = l.clamp_min(0), u.clamp_min(0)
    return out


def _relax(l, u):
    """ReLU relaxation per neuron: lower slope alpha, upper slope s and upper intercept."""
    active, inactive = l >= 0, u <= 0
    unstable = ~(active | inactive)
    s = torch.where(unstable, u / (u - l).clamp_min(1e-30), active.to(l.dtype))
    icpt = torch.where(unstable, -s * l, torch.zeros_like(l))
    alpha = torch.where(unstable, (u > -l).to(l.dtype), active.to(l.dtype))
    return alpha, s, icpt


def _backward(net: ReluNet, layer: int, C: torch.Tensor, pre: list, lo, hi, cx=None):
    """Lower bound of C @ z_layer (+ cx @ x) over the box, with z_layer the pre-activation of
    affine layer `layer`. C is [B, R, k]."""
    w, b = net.weights[layer], net.biases[layer]
    lam = C @ w  # [B, R, in]
    bias = C @ b
    for j in range(layer - 1, -1, -1):
        l, u = pre[j]
        alpha, s, icpt = _relax(l, u)
        pos, neg = lam.clamp_min(0), lam.clamp_max(0)
        lam_z = pos * alpha.unsqueeze(1) + neg * s.unsqueeze(1)
        bias = bias + (neg * icpt.unsqueeze(1)).sum(-1)
        w, b = net.weights[j], net.biases[j]
        bias = bias + lam_z @ b
        lam = lam_z @ w
    if cx is not None:
        lam = lam + cx
    return bias + (lam.clamp_min(0) * lo.unsqueeze(1)).sum(-1) + (lam.clamp_max(0) * hi.unsqueeze(1)).sum(-1)


def crown_preactivations(net: ReluNet, lo: torch.Tensor, hi: torch.Tensor):
    """Pre-activation bounds of every layer by CROWN (the first layer's interval bounds are
    exact); each layer also keeps the interval bound where that is tighter."""
    ibp = interval_bounds(net, lo, hi)
    pre = [ibp[0]]
    B = lo.shape[0]
    for k in range(1, len(net.weights)):
        il, iu = _affine_interval(net.weights[k], net.biases[k], pre[-1][0].clamp_min(0),
                                  pre[-1][1].clamp_min(0))
        width = net.weights[k].shape[0]
        stable = bool(((il >= 0) | (iu <= 0)).all())
        if width > CROWN_WIDTH or stable or k == len(net.weights) - 1:
            pre.append((il, iu))  # too wide for identity specs, stable (the relaxation of a
            continue              # stable ReLU is exact), or the output (no ReLU follows)
        eye = torch.eye(width, dtype=lo.dtype).unsqueeze(0).expand(B, -1, -1)
        both = _backward(net, k, torch.cat([eye, -eye], 1), pre, lo, hi)
        lb, ub = both[:, :width], -both[:, width:]
        pre.append((torch.maximum(lb, il), torch.minimum(ub, iu)))
    return pre


def linear_bounds(net: ReluNet, lo, hi, C, cx=None, method: str = "crown", pre=None,
                  which: str = "both"):
    """(lower, upper) [B, R] of C @ y + cx @ x over the box [lo, hi] ([B, n] each). With
    which="upper" (or "lower") CROWN computes only that side (the other is -inf / +inf): a
    refutation needs only upper bounds, half the work."""
    B = lo.shape[0]
    C = C.expand(B, -1, -1).to(lo.dtype)
    cxe = None if cx is None else cx.expand(B, -1, -1).to(lo.dtype)
    if method == "interval":
        yl, yu = interval_bounds(net, lo, hi)[-1]
        mid, rad = (yl + yu) / 2, (yu - yl) / 2
        c = torch.einsum("brm,bm->br", C, mid)
        r = torch.einsum("brm,bm->br", C.abs(), rad)
        lb, ub = c - r, c + r
        if cxe is not None:
            xm, xr = (lo + hi) / 2, (hi - lo) / 2
            lb = lb + torch.einsum("brn,bn->br", cxe, xm) - torch.einsum("brn,bn->br", cxe.abs(), xr)
            ub = ub + torch.einsum("brn,bn->br", cxe, xm) + torch.einsum("brn,bn->br", cxe.abs(), xr)
        return lb, ub
    if method != "crown":
        raise InputError(f"bound method must be 'interval' or 'crown', not {method!r}")
    pre = crown_preactivations(net, lo, hi) if pre is None else pre
    last = len(net.weights) - 1
    R = C.shape[1]
    inf = torch.full((B, R), float("inf"), dtype=lo.dtype)
    if which == "upper":
        return -inf, -_backward(net, last, -C, pre, lo, hi, None if cxe is None else -cxe)
    if which == "lower":
        return _backward(net, last, C, pre, lo, hi, cxe), inf
    both = _backward(net, last, torch.cat([C, -C], 1), pre, lo, hi,
                     None if cxe is None else torch.cat([cxe, -cxe], 1))
    return both[:, :R], -both[:, R:]


def query_row_bounds(net: ReluNet, query, method: str = "crown", pre=None, which: str = "both"):
    """(lower, upper) [B, R] of every row of a verification query over its input box (and the
    auxiliary variables over their boxes); `which` as in linear_bounds."""
    lo, hi = query.lo.to(net.weights[0].dtype), query.hi.to(net.weights[0].dtype)
    if query.c.shape[1] == 0:
        z = query.c.new_zeros(query.batch, 0)
        return z, z
    lb, ub = linear_bounds(net, lo, hi, query.cy, query.cx, method, pre, which)
    lb, ub = lb + query.c, ub + query.c
    if query.ct is not None:
        ct = query.ct.expand(query.batch, -1, -1)
        al, ah = query.aux_lo.unsqueeze(1), query.aux_hi.unsqueeze(1)
        lb = lb + (ct.clamp_min(0) * al + ct.clamp_max(0) * ah).sum(-1)
        ub = ub + (ct.clamp_min(0) * ah + ct.clamp_max(0) * al).sum(-1)
    return lb, ub


def disjunct_refuted(query, lb: torch.Tensor, ub: torch.Tensor) -> torch.Tensor:
    """Bool [B, D]: the bounds show that disjunct d has no solution for example b (some row of
    it, or of the common rows, cannot be satisfied; or a softmax atom is impossible)."""
    impossible = torch.where(query.strict.unsqueeze(0), ub <= 0, ub < 0)  # [B, R]
    B = query.batch
    common = impossible[:, list(query.common)].any(1) if query.common else torch.zeros(B, dtype=torch.bool)
    soft = [softmax_impossible(a, lb, ub) for a in query.softmax]
    out = []
    for rows, sm in query.disjuncts:
        r = impossible[:, list(rows)].any(1) if rows else torch.zeros(B, dtype=torch.bool)
        for s in sm:
            r = r | soft[s]
        out.append(r | common)
    refuted = torch.stack(out, 1) if out else torch.zeros(B, 0, dtype=torch.bool)
    return refuted | ~query.active


def softmax_impossible(atom, lb, ub) -> torch.Tensor:
    """Bool [B]: the margin bounds rule the softmax atom out. softmax_i >= r iff
    sum_{j != i} exp(F_j - F_i) <= (1 - r) / r; margins F_i - F_j lie in [lb_j, ub_j]."""
    rows = list(atom.margins)
    mlb, mub = lb[:, rows], ub[:, rows]
    m = len(rows)
    not_i = torch.arange(m).unsqueeze(0) != atom.label.unsqueeze(1)
    r = atom.threshold
    limit = (1 - r) / r
    if atom.below:  # a counterexample needs softmax_i < r: impossible if sum_ub <= limit
        s = torch.where(not_i, torch.exp(-mlb), torch.zeros_like(mlb)).sum(1)
        return (s < limit) | ((s <= limit) & torch.tensor(atom.strict)) | (r <= 0)
    s = torch.where(not_i, torch.exp(-mub), torch.zeros_like(mub)).sum(1)
    return (s > limit) | ((s >= limit) & torch.tensor(atom.strict)) | (r >= 1)


__all__ = ["ReluNet", "interval_bounds", "crown_preactivations", "linear_bounds",
           "query_row_bounds", "disjunct_refuted", "softmax_impossible"]
