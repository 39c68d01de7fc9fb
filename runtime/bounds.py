"""Sound bounds of a network's outputs over an input box: interval (IBP) and CROWN.

A network is first flattened to a chain of affine maps with ReLUs between them
(`ReluNet.from_module`): nn.Linear, nn.Conv2d (as its matrix), nn.Flatten, nn.ReLU, nn.MaxPool2d
and the project's Clamp, written exactly as ``hi - relu(hi - lo - relu(z - lo))``; a clamp that
the bounds show inactive on the domain has stable ReLUs and costs nothing (the bounds, the MILP
and Marabou treat a stable ReLU as linear). A max-pool over non-negative inputs (after a ReLU) is
written exactly with ReLUs too, max(a, b) = relu(b) + relu(a - b), one layer per halving of its
window (`_pool_layers`). Anything else is refused with a clear error.

Convolutions and pools make large, very sparse matrices (conv1 of a 28x28 image: 12544 x 784;
its pool 12544 x 12544): those are kept as sparse CSR tensors (larger than `SPARSE_MIN` entries),
every other layer stays dense, so an MLP's chain and numbers are what they always were.

CROWN (Zhang et al. 2018) bounds linear functions C y of the outputs directly, by a backward
pass of linear relaxations; intermediate pre-activation bounds are CROWN bounds of each layer
(of its unstable neurons only where it is wider than `CROWN_ALL`; interval bounds for layers
wider than `CROWN_WIDTH`, where identity specs would be too big).
Everything is batched over examples (a backward pass in batch chunks where the batch's linear
maps would pass `LAM_BUDGET` numbers).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from robustspec.dsl.errors import InputError

CROWN_WIDTH = 2048
# layers up to this wide get CROWN bounds for every neuron; wider ones (up to CROWN_WIDTH: a
# CNN's conv and pool layers) only for the neurons their interval bounds leave unstable, a
# fifth of them at a trained SmallCNN's eps 0.02: a stable ReLU's relaxation is exact whatever
# its bounds, so only the interval bounds downstream see the stable ones' looser bounds (a
# width-4 SmallCNN, eps 0.04: 185 of 240 SR disjuncts refuted instead of 188, in 1/2-1/3 the time)
CROWN_ALL = 256
# a conv, pool or identity matrix with more entries than this is kept sparse (its dense form would
# cost memory and time for nothing: a pool's has 1.5 nonzeros per row); smaller ones are dense
SPARSE_MIN = 1 << 16
# numbers in one backward pass's linear map [B, R, width]: a larger batch is done in chunks (a
# CNN's identity specs for a 128-wide layer over 12544-wide ones would take gigabytes at once)
LAM_BUDGET = 1 << 24

SUPPORTED = "Linear, Conv2d, ReLU, MaxPool2d after a ReLU, Flatten, Dropout, Identity, Clamp"


@contextlib.contextmanager
def _sparse_ok():
    """torch warns once that sparse CSR tensors are beta: expected here, not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        yield


def _sparse(w: torch.Tensor) -> bool:
    return w.layout != torch.strided


def _coo(rows, cols, vals, size) -> torch.Tensor:
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, size,
                                   check_invariants=False).coalesce()


def _csr(w: torch.Tensor) -> torch.Tensor:
    with _sparse_ok():
        return w.to_sparse_csr()


def _spmm(s: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """h @ s.T for a sparse [p, q] s and a dense [..., q] h: [..., p]."""
    flat = h.reshape(-1, h.shape[-1])
    return torch.sparse.mm(s, flat.T).T.reshape(*h.shape[:-1], s.shape[0])


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for dense or sparse COO operands (composing the chain's maps)."""
    return torch.sparse.mm(a, b) if _sparse(a) else a @ b


def _matvec(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.sparse.mm(a, v.unsqueeze(1)).squeeze(1) if _sparse(a) else a @ v


def _eye(k: int, dtype) -> torch.Tensor:
    if k * k <= SPARSE_MIN:
        return torch.eye(k, dtype=dtype)
    i = torch.arange(k)
    return _coo(i, i, torch.ones(k, dtype=dtype), (k, k))


def _final(w: torch.Tensor) -> torch.Tensor:
    """A layer's matrix as the chain keeps it: sparse CSR where large, else dense."""
    if not _sparse(w):
        return w
    if w.shape[0] * w.shape[1] <= SPARSE_MIN:
        return w.to_dense()
    return _csr(w.coalesce())


def _values(w: torch.Tensor) -> torch.Tensor:
    """The entries of a map under construction (dense or sparse COO) that may be nonzero."""
    return w.coalesce().values() if _sparse(w) else w


def _conv_matrix(layer: nn.Conv2d, shape: tuple, dtype):
    """(M, c, output shape): the convolution as the sparse matrix M ([out, in], COO) and bias c,
    read from the weights (no arithmetic, so exactly the layer's coefficients)."""
    if len(shape) != 3 or shape[0] != layer.in_channels:
        raise InputError(f"a Conv2d with {layer.in_channels} input channels after an input of "
                         f"shape {shape}: expected ({layer.in_channels}, H, W)")
    C, H, W = shape
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    pad = layer.padding
    if pad == "valid":
        pad = (0, 0)
    elif pad == "same":
        if (dh * (kh - 1)) % 2 or (dw * (kw - 1)) % 2:
            return _conv_by_basis(layer, shape, dtype)  # an asymmetric "same" padding
        pad = (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
    if layer.padding_mode != "zeros":
        return _conv_by_basis(layer, shape, dtype)
    ph, pw = pad
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if Ho < 1 or Wo < 1:
        raise InputError(f"a Conv2d with kernel {(kh, kw)} on a {H}x{W} image has no output")
    # each output position's input pixels: unfold an image of pixel numbers (0: padding)
    idx = torch.arange(1, C * H * W + 1, dtype=torch.float64).reshape(1, C, H, W)
    U = F.unfold(idx, (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))[0]
    U = U.round().long() - 1  # [C*kh*kw, L]: input index, -1 where padding
    L = U.shape[1]
    G, Cout = layer.groups, layer.out_channels
    per = (C // G) * kh * kw  # one output channel's inputs
    o = torch.arange(Cout).unsqueeze(1)
    cols = U[(o // (Cout // G)) * per + torch.arange(per).unsqueeze(0)]  # [Cout, per, L]
    vals = layer.weight.detach().to(dtype).reshape(Cout, per, 1).expand(-1, -1, L)
    rows = (o.unsqueeze(2) * L + torch.arange(L)).expand(-1, per, -1)
    keep = cols >= 0
    M = _coo(rows[keep], cols[keep], vals[keep], (Cout * L, C * H * W))
    bias = layer.bias.detach().to(dtype) if layer.bias is not None else \
        torch.zeros(Cout, dtype=dtype)
    return M, bias.unsqueeze(1).expand(-1, L).reshape(-1).clone(), (Cout, Ho, Wo)


def _conv_by_basis(layer: nn.Conv2d, shape: tuple, dtype, chunk: int = 256):
    """(M, c, output shape) of a convolution unfold cannot write (other padding modes, an
    asymmetric "same" padding): the images of the basis vectors under the bias-free
    convolution in float64 (one product each: exact), in chunks, kept sparse."""
    k = math.prod(shape)
    w = layer.weight.detach().double()
    rows, cols, vals = [], [], []
    for s in range(0, k, chunk):
        e = torch.arange(s, min(k, s + chunk))
        basis = torch.zeros(len(e), k, dtype=torch.float64)
        basis[torch.arange(len(e)), e] = 1
        img = layer._conv_forward(basis.reshape((len(e),) + tuple(shape)), w, None)
        out_shape = tuple(img.shape[1:])
        img = img.reshape(len(e), -1)
        nz = img.nonzero()
        rows.append(nz[:, 1])
        cols.append(e[nz[:, 0]])
        vals.append(img[nz[:, 0], nz[:, 1]].to(dtype))
    M = _coo(torch.cat(rows), torch.cat(cols), torch.cat(vals), (math.prod(out_shape), k))
    bias = layer.bias.detach().to(dtype) if layer.bias is not None else \
        torch.zeros(out_shape[0], dtype=dtype)
    return M, bias.repeat_interleave(out_shape[1] * out_shape[2]), out_shape


def _pool_kernel(layer: nn.MaxPool2d, shape: tuple):
    """The window (kh, kw) and output shape of a max-pool the chain can write exactly, else a
    clear InputError saying what is supported."""
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    k = pair(layer.kernel_size)
    s = pair(layer.stride) if layer.stride is not None else k
    p, d = pair(layer.padding), pair(layer.dilation)
    why = []
    if k != s:
        why.append(f"stride {s} differs from kernel_size {k}")
    if p != (0, 0):
        why.append(f"padding {p}")
    if d != (1, 1):
        why.append(f"dilation {d}")
    if layer.return_indices:
        why.append("return_indices=True")
    if len(shape) != 3:
        why.append(f"its input has shape {shape}, not (C, H, W)")
    elif layer.ceil_mode and (shape[1] % k[0] or shape[2] % k[1]):
        why.append(f"ceil_mode=True on a {shape[1]}x{shape[2]} image (partial windows)")
    elif shape[1] < k[0] or shape[2] < k[1]:
        why.append(f"its {shape[1]}x{shape[2]} input is smaller than the window")
    if why:
        raise InputError(f"bound propagation supports MaxPool2d only with non-overlapping windows "
                         f"(stride == kernel_size, no padding, dilation 1) over a ReLU's "
                         f"non-negative outputs; this one has {', '.join(why)}")
    return k, (shape[0], shape[1] // k[0], shape[2] // k[1])


def _pool_layers(shape: tuple, kernel: tuple, dtype):
    """A max-pool over non-negative inputs as ReLU layers: a list of rounds (D, V, members) and
    the final (S, members). Each round pairs a window's values, max(a, b) = relu(b) + relu(a - b)
    (relu(b) = b as b >= 0: a ReLU the bounds show stable), an odd one passing as relu(c): its
    layer is D @ V, V giving the round's values from the layer before (round 1: the pool's input;
    later: sums of the last round's ReLUs), so a window of E values takes ceil(log2 E) layers, and
    S sums the last ReLUs into the maxima (folded into the next affine map). members [values, G]:
    the pool inputs each value is the maximum of (repeated to width G), for `_PoolHint`. All
    sparse COO."""
    C, H, W = shape
    kh, kw = kernel
    Ho, Wo = H // kh, W // kw
    nw, E = C * Ho * Wo, kh * kw
    ar = torch.arange
    ch, y, x = ar(C).view(-1, 1, 1, 1, 1), ar(Ho).view(1, -1, 1, 1, 1), ar(Wo).view(1, 1, -1, 1, 1)
    i, j = ar(kh).view(1, 1, 1, -1, 1), ar(kw).view(1, 1, 1, 1, -1)
    el = (ch * H + y * kh + i) * W + x * kw + j  # [C, Ho, Wo, kh, kw]: the windows' input pixels
    members = el.reshape(-1, 1)
    V = _coo(ar(nw * E), members[:, 0], torch.ones(nw * E, dtype=dtype), (nw * E, C * H * W))
    rounds = []
    while E > 1:
        half, odd = E // 2, E % 2
        E2 = half + odd
        w = ar(nw).unsqueeze(1) * E  # each window's first value / neuron
        p = 2 * ar(half).unsqueeze(0)
        one = torch.ones(nw * half, dtype=dtype)
        # neurons of window w, pair p: 2p = relu(b), 2p + 1 = relu(a - b) (a = value 2p, b = 2p + 1)
        r = [(w + p).reshape(-1), (w + p + 1).reshape(-1), (w + p + 1).reshape(-1)]
        c = [(w + p + 1).reshape(-1), (w + p).reshape(-1), (w + p + 1).reshape(-1)]
        v = [one, one, -one]
        s_r = [(ar(nw).unsqueeze(1) * E2 + ar(half).unsqueeze(0)).reshape(-1)] * 2
        s_c = [(w + p).reshape(-1), (w + p + 1).reshape(-1)]
        m = members.reshape(nw, E, -1)
        nxt = [torch.cat([m[:, 0:2 * half:2], m[:, 1:2 * half:2]], 2)]  # [nw, half, 2G]
        if odd:
            last = ar(nw) * E + E - 1
            r.append(last)
            c.append(last)
            v.append(torch.ones(nw, dtype=dtype))
            s_r.append(ar(nw) * E2 + half)
            s_c.append(last)
            nxt.append(torch.cat([m[:, E - 1:], m[:, E - 1:]], 2))
        D = _coo(torch.cat(r), torch.cat(c), torch.cat(v), (nw * E, nw * E))
        rounds.append((D, V, members))
        V = _coo(torch.cat(s_r), torch.cat(s_c), torch.ones(sum(len(t) for t in s_r), dtype=dtype),
                 (nw * E2, nw * E))
        members, E = torch.cat(nxt, 1).reshape(nw * E2, -1), E2
    return rounds, (V, members)


@dataclass
class _PoolHint:
    """Layer k's input values v = S a_{k-1} are window maxima of layer j's ReLUs (v_i = max of
    relu(z_j)[members[i]]) and the layer is Wu v + b (weights[k] = Wu @ S): interval bounds of
    the max, [max l, max u], beat those of the ReLU sums that write it (which add the widths of
    a window's values: 3.4x wider at a trained SmallCNN's conv2), so `_affine_interval` uses
    both. Only bounds use it; the chain itself is exact without."""

    j: int
    members: torch.Tensor  # [len(v), G] long
    S: torch.Tensor  # [len(v), width of layer k - 1], non-negative
    Wu: torch.Tensor | None  # [out of layer k, len(v)]; None: the identity
    Wu_abs: torch.Tensor | None = None

    def to(self, dtype) -> "_PoolHint":
        f = lambda t: None if t is None else t.to(dtype)  # noqa: E731
        return _PoolHint(self.j, self.members, f(self.S), f(self.Wu))


@dataclass
class ReluNet:
    """y = A_L(relu(A_{L-1}(... relu(A_1(x))))), x flattened; weights[i] is [out, in], a dense
    tensor or (large conv/pool layers) a sparse CSR one: use `apply`/`apply_t`, not `@`."""

    weights: list
    biases: list
    input_shape: tuple
    hints: dict = field(default_factory=dict)  # layer -> _PoolHint (max-pools' interval bounds)
    _t: list = field(default=None, init=False, repr=False, compare=False)
    _abs: list = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        """The transposes and absolute values of the sparse layers, made once: every backward
        pass and interval bound uses them."""
        with _sparse_ok():
            self._t = [_csr(w.t()) if _sparse(w) else None for w in self.weights]
            self._abs = [w.abs() if _sparse(w) else None for w in self.weights]
            for h in self.hints.values():
                h.Wu_abs = None if h.Wu is None else h.Wu.abs()

    @property
    def inputs(self) -> int:
        return self.weights[0].shape[1]

    @property
    def outputs(self) -> int:
        return self.weights[-1].shape[0]

    def apply(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """h @ weights[i].T, h [..., in]."""
        w = self.weights[i]
        return _spmm(w, h) if _sparse(w) else h @ w.T

    def apply_t(self, i: int, lam: torch.Tensor) -> torch.Tensor:
        """lam @ weights[i], lam [..., out] (the backward pass)."""
        w = self.weights[i]
        return _spmm(self._t[i], lam) if _sparse(w) else lam @ w

    def dense(self, i: int) -> torch.Tensor:
        w = self.weights[i]
        return w.to_dense() if _sparse(w) else w

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)
        for i, b in enumerate(self.biases):
            h = self.apply(i, h) + b
            if i < len(self.weights) - 1:
                h = torch.relu(h)
        return h

    @classmethod
    def from_module(cls, model: nn.Module, input_shape, dtype=None) -> "ReluNet":
        """The affine/ReLU chain of an nn.Sequential model (nested Sequentials flattened), built
        in `dtype` (None: the model's). Proofs want float64: the parameters are converted before
        any arithmetic, so the compositions and the Clamp's bias shifts (b + 100 rounds in
        float32) are those of the real network, not of a float32-rounded copy."""
        from .models import Clamp

        input_shape = tuple(int(s) for s in input_shape)
        if dtype is None:
            dtype = next(model.parameters()).dtype if any(True for _ in model.parameters()) \
                else torch.float32
        ws, bs, hints = [], [], {}
        W = b = None  # the affine map from the last ReLUs (or the input) to the current value;
        width = math.prod(input_shape)  # None: the identity. width: the current value's length
        shape = input_shape
        hint = Wu = None  # after a pool: (j, members, S) of the maxima, the maps applied since

        def then(M, c):
            """The current value becomes M v + c."""
            nonlocal W, b, width, Wu
            if W is None:
                W, b = M, c
            else:
                W, b = _matmul(M, W), _matvec(M, b) + c
            if hint is not None:
                Wu = M if Wu is None else _matmul(M, Wu)
            width = M.shape[0]

        def push(M, c):
            """M, c become the next layer of the chain (a ReLU follows)."""
            nonlocal hint, Wu
            if hint is not None:
                own = lambda t: _final(t).detach().clone()  # noqa: E731 (not the model's)
                hints[len(ws)] = _PoolHint(hint[0], hint[1], own(hint[2]),
                                           None if Wu is None else own(Wu))
            hint = Wu = None
            ws.append(_final(M))
            bs.append(c)

        def relu():
            nonlocal W, b
            if W is None:  # a ReLU of the input or of ReLUs
                W, b = _eye(width, dtype), torch.zeros(width, dtype=dtype)
            push(W, b)
            W = b = None

        def image(shape):
            """A flat value's image shape: the model's input_shape where the sizes agree (a
            SmallCNN takes flattened images)."""
            given = getattr(model, "input_shape", None)
            if len(shape) == 1 and given and math.prod(given) == width:
                return tuple(given)
            return shape

        def layers(m):
            if isinstance(m, nn.Sequential):
                for c in m:
                    yield from layers(c)
            else:
                yield m
        if not isinstance(model, nn.Sequential):
            raise InputError(f"bound propagation needs an nn.Sequential model; got "
                             f"{type(model).__name__}")
        with torch.no_grad(), _sparse_ok():
            for layer in layers(model):
                if isinstance(layer, nn.Flatten):
                    shape = (math.prod(shape),)
                elif isinstance(layer, nn.Linear):
                    if layer.in_features != width:
                        raise InputError(f"a Linear with {layer.in_features} inputs after a value "
                                         f"of shape {shape} ({width} numbers)")
                    then(layer.weight.to(dtype), layer.bias.to(dtype) if layer.bias is not None
                         else torch.zeros(layer.out_features, dtype=dtype))
                    shape = (layer.out_features,)
                elif isinstance(layer, nn.Conv2d):
                    shape = image(shape)
                    if len(shape) != 3:
                        raise InputError(f"a Conv2d after an input of shape {shape}: cannot tell "
                                         "its image shape")
                    M, c, shape = _conv_matrix(layer, tuple(shape), dtype)
                    then(M, c)
                elif isinstance(layer, nn.MaxPool2d):
                    shape = image(shape)
                    kernel, out_shape = _pool_kernel(layer, tuple(shape))
                    if not ws or (W is not None and not (bool((_values(W) >= 0).all())
                                                         and bool((b >= 0).all()))):
                        raise InputError("bound propagation supports MaxPool2d only over "
                                         "non-negative inputs (right after a ReLU, where "
                                         "max(a, b) = relu(b) + relu(a - b) is exact); put the "
                                         "pool after the ReLU")
                    j = len(ws) - 1 if W is None else None  # its input: layer j's ReLUs
                    rounds, (S, members) = _pool_layers(tuple(shape), kernel, dtype)
                    for r, (D, V, m) in enumerate(rounds):
                        then(V, torch.zeros(V.shape[0], dtype=dtype))
                        if r and j is not None:  # values: maxima of pairs, quads, ...
                            hint = (j, m, V)
                        then(D, torch.zeros(D.shape[0], dtype=dtype))
                        relu()
                    then(S, torch.zeros(S.shape[0], dtype=dtype))
                    if rounds and j is not None:
                        hint = (j, members, S)
                    shape = out_shape
                elif isinstance(layer, nn.ReLU):
                    relu()
                elif isinstance(layer, Clamp):
                    if W is None:
                        W, b = _eye(width, dtype), torch.zeros(width, dtype=dtype)
                    k = width
                    push(W, b - layer.low)  # relu(z - lo)
                    push(-_eye(k, dtype), torch.full((k,), layer.high - layer.low, dtype=dtype))
                    W, b = -_eye(k, dtype), torch.full((k,), layer.high, dtype=dtype)
                elif isinstance(layer, (nn.Identity, nn.Dropout)):
                    continue
                else:
                    raise InputError(f"bound propagation does not support {type(layer).__name__} "
                                     f"layers (supported: {SUPPORTED}); verify a network "
                                     "without them (e.g. --model mlp or cnn)")
            if W is None:
                W, b = _eye(width, dtype), torch.zeros(width, dtype=dtype)
            push(W, b)
        return cls([w.detach().clone() for w in ws], [v.detach().clone() for v in bs], input_shape,
                   hints)

    def to(self, dtype) -> "ReluNet":
        with _sparse_ok():
            return ReluNet([w.to(dtype) for w in self.weights], [b.to(dtype) for b in self.biases],
                           self.input_shape, {k: h.to(dtype) for k, h in self.hints.items()})


def _affine_interval(net: ReluNet, i: int, lo, hi, pre: list | None = None):
    """Bounds of layer i's pre-activation from those [lo, hi] of its inputs (the previous
    layer's ReLUs), and where layer i reads max-pool outputs, from the bounds `pre` of the
    pool's input layer too (`_PoolHint`)."""
    w, b = net.weights[i], net.biases[i]
    h = net.hints.get(i) if pre is not None else None
    if h is not None:
        lj, uj = pre[h.j]
        m = h.members.reshape(-1)
        vl = lj.clamp_min(0)[:, m].reshape(lo.shape[0], *h.members.shape).amax(-1)
        vu = uj.clamp_min(0)[:, m].reshape(lo.shape[0], *h.members.shape).amax(-1)
        S = h.S
        sl, su = (_spmm(S, lo), _spmm(S, hi)) if _sparse(S) else (lo @ S.T, hi @ S.T)
        lo, hi = torch.maximum(vl, sl), torch.minimum(vu, su)
        if h.Wu is None:
            return lo + b, hi + b
        w, wabs = h.Wu, h.Wu_abs
    else:
        wabs = net._abs[i]
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    if _sparse(w):
        c = _spmm(w, mid) + b
        r = _spmm(wabs, rad)
    else:
        c = mid @ w.T + b
        r = rad @ w.abs().T
    return c - r, c + r


def interval_bounds(net: ReluNet, lo: torch.Tensor, hi: torch.Tensor):
    """Pre-activation bounds [(l, u)] of every affine layer (the last is the output), [B, k] each."""
    out = []
    l, u = lo, hi
    for i in range(len(net.weights)):
        l, u = _affine_interval(net, i, l, u, out)
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
    affine layer `layer`. C is [B, R, k]; done in batch chunks of at most LAM_BUDGET numbers
    per linear map."""
    B, R = C.shape[0], C.shape[1]
    widest = max(net.weights[j].shape[1] for j in range(layer + 1))
    step = max(1, LAM_BUDGET // max(1, R * widest))
    if B > step:
        cut = lambda t, s: None if t is None else t[s:s + step]  # noqa: E731
        return torch.cat([_backward(net, layer, C[s:s + step],
                                    [(l_[s:s + step], u_[s:s + step]) for l_, u_ in pre[:layer]],
                                    lo[s:s + step], hi[s:s + step], cut(cx, s))
                          for s in range(0, B, step)])
    b = net.biases[layer]
    lam = net.apply_t(layer, C)  # [B, R, in]
    bias = C @ b
    for j in range(layer - 1, -1, -1):
        l, u = pre[j]
        alpha, s, icpt = _relax(l, u)
        pos, neg = lam.clamp_min(0), lam.clamp_max(0)
        lam_z = pos * alpha.unsqueeze(1) + neg * s.unsqueeze(1)
        bias = bias + (neg * icpt.unsqueeze(1)).sum(-1)
        bias = bias + lam_z @ net.biases[j]
        lam = net.apply_t(j, lam_z)
    if cx is not None:
        lam = lam + cx
    return bias + (lam.clamp_min(0) * lo.unsqueeze(1)).sum(-1) + (lam.clamp_max(0) * hi.unsqueeze(1)).sum(-1)


def crown_preactivations(net: ReluNet, lo: torch.Tensor, hi: torch.Tensor):
    """Pre-activation bounds of every layer by CROWN (the first layer's interval bounds are
    exact); each layer also keeps the interval bound where that is tighter."""
    ibp = _affine_interval(net, 0, lo, hi)
    pre = [ibp]
    B = lo.shape[0]
    for k in range(1, len(net.weights)):
        il, iu = _affine_interval(net, k, pre[-1][0].clamp_min(0), pre[-1][1].clamp_min(0), pre)
        width = net.weights[k].shape[0]
        stable = bool(((il >= 0) | (iu <= 0)).all())
        if width > CROWN_WIDTH or stable or k == len(net.weights) - 1:
            pre.append((il, iu))  # too wide for identity specs, stable (the relaxation of a
            continue              # stable ReLU is exact), or the output (no ReLU follows)
        if width <= CROWN_ALL:
            eye = torch.eye(width, dtype=lo.dtype).unsqueeze(0).expand(B, -1, -1)
            both = _backward(net, k, torch.cat([eye, -eye], 1), pre, lo, hi)
            lb, ub = both[:, :width], -both[:, width:]
            pre.append((torch.maximum(lb, il), torch.minimum(ub, iu)))
            continue
        unstable = (il < 0) & (iu > 0)  # each example's unstable neurons first: [B, R]
        R = int(unstable.sum(1).max())
        idx = torch.sort(unstable.to(torch.int8), dim=1, descending=True,
                         stable=True).indices[:, :R]
        C = torch.zeros(B, R, width, dtype=lo.dtype).scatter_(2, idx.unsqueeze(2), 1.0)
        both = _backward(net, k, torch.cat([C, -C], 1), pre, lo, hi)
        lb = il.scatter(1, idx, torch.maximum(both[:, :R], il.gather(1, idx)))
        ub = iu.scatter(1, idx, torch.minimum(-both[:, R:], iu.gather(1, idx)))
        pre.append((lb, ub))
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
