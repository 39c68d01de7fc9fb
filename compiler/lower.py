"""Lowering the IR to batched torch closures: the exact checker and the loss under a logic.

The IR is compiled once into a tree of Python closures (no per-call dispatch on node types).
Every runtime value is a tensor laid out as [batch, index axes..., value axes...]: the batch axis
is 1 for values shared by all examples, and each enclosing finite quantifier (`forall j in
classes`) adds one index axis, so `forall j` is a reduction over an axis, never a Python loop.
A 0-dim tensor is a constant and broadcasts anywhere.

Caching: a node is evaluated once per call (so `f(x0)` written twice runs the network once);
during a search, nodes that do not depend on the searched variables are evaluated once for the
whole search, without gradient (so `f(x0)` runs once per search, not once per step).
"""
from __future__ import annotations

import contextvars
import functools
import math
from typing import Any, Callable

import torch

from robustspec.dsl.diagnostics import Diagnostic, SpecError
from robustspec.dsl.errors import InputError

from . import native
from .ir import CONT_QUANT, IDX_QUANT, N
from .logics import Logic
from .logics.boolean import BOOLEAN

Fn = Callable[["Ctx"], Any]


class Ctx:
    """The runtime environment of one evaluation."""

    __slots__ = ("vals", "nets", "cache", "static", "idx", "quant", "class_sizes", "dtype",
                 "device", "batch", "known")

    def __init__(self, vals: dict, nets: dict, quant: Callable | None, dtype, device, batch: int,
                 static: dict | None = None, class_sizes: dict | None = None):
        self.vals = vals
        self.nets = nets
        self.cache: dict = {}
        self.static = {} if static is None else static
        self.idx: dict[str, tuple[torch.Tensor, int]] = {}
        self.quant = quant
        self.class_sizes = {} if class_sizes is None else class_sizes
        self.dtype = dtype
        self.device = device
        self.batch = batch
        # (network, argument) -> that network's output on that argument, handed in by the
        # caller (`outputs=` of Property.loss/value, checked in binding.known_outputs)
        self.known: dict | None = None

    def child(self, vals: dict) -> "Ctx":
        """Same bindings but new variable values (fresh per-call cache, shared static cache)."""
        c = Ctx(vals, self.nets, self.quant, self.dtype, self.device, self.batch, self.static,
                self.class_sizes)
        c.idx = self.idx
        c.known = self.known
        return c


def network_input_error(name: str, net, inp: torch.Tensor, error: Exception) -> InputError:
    """A network that failed on its input, explained with both sizes where they are known."""
    want = None
    if isinstance(net, torch.nn.Module):
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                want = f"its first linear layer takes {m.in_features} values"
                break
            if isinstance(m, torch.nn.modules.conv._ConvNd):
                want = f"its first convolution takes {m.in_channels} channels"
                break
    per = list(inp.shape[1:])
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return InputError(f"the network '{name}' failed on an input of shape {per} per example "
                      f"({inp[0].numel() if inp.shape[0] else 0} values)"
                      + (f", but {want}" if want else "") + f" ({first}): pass inputs of the "
                      "size the network takes")


from .ops import T, TorchOps  # noqa: E402  (re-exported: the backend primitives)

MAX_RANGE = 2 ** 20  # the checker's limit on range(n), enforced again for per-call params


def shape_mismatch(n: N, a: torch.Tensor, b: torch.Tensor, depth: int, error: Exception) -> Exception:
    """Operands whose shapes only meet at run time (tensors of undeclared shape) and do not
    broadcast: a diagnostic at the operator, with both per-example shapes. Any other
    RuntimeError (out of memory, devices, dtypes) is returned as it was, to be re-raised."""
    try:
        torch.broadcast_shapes(a.shape, b.shape)
        return error
    except RuntimeError:
        pass
    def per_example(v: torch.Tensor) -> list[int]:
        return list(v.shape[1 + depth:]) if v.ndim else []
    return SpecError([Diagnostic(
        "error", f"the operands have shapes {per_example(a)} and {per_example(b)} per example, "
        "which do not broadcast", n.span,
        hint="check which tensors this compares or combines (e.g. an input and a network "
             "output); declare shapes in the network's type (Tensor[784] -> Tensor[10]) so the "
             "checker finds such mistakes before running")])


def align(v: torch.Tensor, from_depth: int, to_depth: int) -> torch.Tensor:
    """Insert index axes (size 1) so a value made at `from_depth` lines up at `to_depth`."""
    if v.ndim == 0 or from_depth == to_depth:
        return v
    s = v.shape
    return v.reshape(s[:1 + from_depth] + (1,) * (to_depth - from_depth) + s[1 + from_depth:])


def _vrank(v: torch.Tensor, depth: int) -> int:
    return 0 if v.ndim == 0 else v.ndim - 1 - depth


def _same_rank(a: torch.Tensor, b: torch.Tensor, depth: int):
    ra, rb = _vrank(a, depth), _vrank(b, depth)
    if ra < rb and a.ndim:
        a = a.reshape(a.shape + (1,) * (rb - ra))
    elif rb < ra and b.ndim:
        b = b.reshape(b.shape + (1,) * (ra - rb))
    return a, b, max(ra, rb)


def _broadcast(a: tuple, b: tuple) -> tuple:
    """torch.broadcast_shapes of two shapes of one length, without its ~20 us of Python."""
    if len(a) != len(b) or any(x != y and x != 1 and y != 1 for x, y in zip(a, b)):
        return torch.broadcast_shapes(a, b)  # the general case, and torch's error
    return tuple(y if x == 1 else x for x, y in zip(a, b))


class _NormInf(torch.autograd.Function):
    """max |v| over the trailing `dims`, with torch's own gradient bit for bit (amax's: the
    gradient shared equally among the ties, g / count at each; abs's: times sgn(v)), in fewer
    and cheaper passes: torch's backward compares into a bool mask, which its CPU kernels
    handle several times slower than floats (eq 67 us, mask * grad 71 us on a batch of 128
    images); here the comparison writes 0.0/1.0 straight into a float tensor (13 us) and the
    products run in place on it. The same operations in the same order as torch's
    ((g / count) * mask) * sgn(v), so the same bits, NaN and infinities included."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        a = v.abs()
        m = a.amax(dims)
        ctx.dims = dims
        ctx.save_for_backward(v, a, m)
        return m

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        # differentiable in g as written (create_graph=True works, as with torch's own ops)
        v, a, m = ctx.saved_tensors
        dims = ctx.dims
        shape = m.shape + (1,) * len(dims)
        mask = torch.eq(a, m.reshape(shape), out=torch.empty_like(a))  # 1.0 at the ties
        scale = (g / mask.sum(dims)).reshape(shape)
        return mask.mul_(scale).mul_(v.sgn()), None


# below this many elements torch's own ops are faster than _NormInf's Python (measured:
# 120 against 143 us at [128, 128], 158 / 159 at [128, 256], 251 / 211 at [128, 512]); the
# native kernel is faster at every size (forward and backward: 41 against torch's 69 us at
# [128, 10], 118 against 370 at [128, 784]; bench/results/probe_norm_inf_passes_s6.txt)
_NORM_INF_FUSED_FROM = 1 << 15


def _fused_fits(v: torch.Tensor, dims: tuple[int, ...]) -> bool:
    """A reduction the fused forms take: over v's trailing axes, with a count of ties that a
    float holds exactly (at most 2 / eps values per norm)."""
    return dims == tuple(range(v.ndim - len(dims), v.ndim)) \
        and math.prod(v.shape[d] for d in dims) * torch.finfo(v.dtype).eps <= 2


# rows shorter than these are reduced in order by torch's amax (its vectorised reduction starts
# at 16 doubles or 32 floats), so score_rest's max is its bits, a zero's sign included
_IN_ORDER = {torch.float32: 32, torch.float64: 16}


def _is_margin(n: N) -> bool:
    """Is the comparison argmax's margin form, v[c] > max_except(v, c) (or <=), with one v and
    one c on both sides (compiler/normalise.py `_surrogate`)?"""
    a, b = n.args
    return (a.op == "index" and b.op == "max_except" and a.args[0] is b.args[0]
            and a.args[1] is b.args[1])


def _native_fits(v: torch.Tensor, dims: tuple[int, ...]) -> bool:
    """...and one the native kernels take: CPU float32/64, not empty (torch's amax refuses an
    empty reduction, and so does this path). Asked twice an evaluation with the same few
    shapes: the answers are kept (7 us of Python each, 1% of a PGD step)."""
    key = (v.shape, v.dtype, v.device.type, dims)
    fits = _NATIVE_FITS.get(key)
    if fits is None:
        fits = v.device.type == "cpu" and v.dtype in (torch.float32, torch.float64) \
            and bool(dims) and v.numel() > 0 and _fused_fits(v, dims)
        if len(_NATIVE_FITS) > 4096:  # shapes without end (a caller's varying batch): start over
            _NATIVE_FITS.clear()
        _NATIVE_FITS[key] = fits
    return fits


_NATIVE_FITS: dict = {}


def _norm_inf(v: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """norm_inf over the value axes: the native kernel (compiler/native.py) on CPU floats, else,
    where a gradient will be taken, the fused form for large tensors (e.g. LR's norm_inf(x - x0)
    of a batch of images); all give torch's own values and gradient bits."""
    if _native_fits(v, dims):  # with or without a gradient: one pass against abs and amax's two
        kernel = native.norm_inf()
        if kernel is not None:
            return kernel(v, len(dims))
    if v.requires_grad and torch.is_grad_enabled() and v.is_floating_point():
        if v.numel() >= _NORM_INF_FUSED_FROM and _fused_fits(v, dims):
            return _NormInf.apply(v, dims)
    return v.abs().amax(dims)


def _norm_inf_of_difference(a: torch.Tensor, b: torch.Tensor, depth: int):
    """norm_inf(a - b) over the value axes in one native kernel (no a - b written), where a
    and b are CPU floats of one shape, with or without a gradient (a search's last point and
    the loss at the point found take it without: one pass against sub, abs and amax's three);
    None elsewhere (the caller then takes norm_inf of the difference)."""
    dims = _value_dims(a, depth)
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device \
            or not _native_fits(a, dims):
        return None
    kernel = native.norm_inf_of_difference()
    return None if kernel is None else kernel(a, b, len(dims))


class SplitNormInf:
    """Why: in a PGD step on LR, `norm_inf(x - x0)` of the searched point x costs autograd a
    full-size gradient (one nonzero per row, or a row's ties) and a full-size sum with the
    network's gradient of x (docs/benchmarks.md, ninth session: a small saving, ~1% of LR's
    step, as most rows have many ties on the ball's boundary). Inside `with SplitNormInf(points)`,
    that norm of a searched point (the point itself, at depth 0, x0 without a gradient) is taken
    by the native kernel without an autograd node and handed back as a leaf; the search asks
    autograd for the gradients of `leaves()` too, and `fold` adds each norm's share into its
    point's gradient in place (compiler/native_kernels.cpp norm_inf_fold_), or, where the
    search's step kernel takes the point (`deferrable`), the step folds it into its own reading
    of the gradient and takes the stepped point's norm, which the next evaluation finds in
    `known` (keep_fold_step_: one pass a step where the split and the fold took two). The points a search
    steps to are the same as with autograd's sum: only a zero's sign in the gradient can differ.
    Outside such a block, or where the kernels are not built, nothing changes."""

    def __init__(self, points: dict[str, torch.Tensor], known: dict | None = None):
        self.points = points
        # the split's answer for a point as it is, where the search's step computed it
        # (native keep_fold_step_): point name -> (point, its version, b, norm, ties, first, ndims)
        self.known = known or {}
        self.terms: list[tuple] = []  # (point name, norm leaf, a, b, ties, first, ndims)
        self._token = None

    def __enter__(self) -> "SplitNormInf":
        self._token = _SPLIT.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _SPLIT.reset(self._token)

    def take(self, a: torch.Tensor, b: torch.Tensor, depth: int) -> torch.Tensor | None:
        """norm_inf(a - b) as a leaf, where a is one of the searched points itself; else None."""
        name = next((k for k, v in self.points.items() if v is a), None)
        if name is None or b.requires_grad or a.shape != b.shape or a.dtype != b.dtype \
                or a.device != b.device:
            return None
        dims = _value_dims(a, depth)
        if not _native_fits(a, dims):
            return None
        split, fold = native.norm_inf_split(), native.norm_inf_fold()
        if split is None or fold is None:
            return None
        k = self.known.get(name)
        if k is not None and k[0] is a and k[1] == a._version and k[2] is b and k[6] == len(dims):
            norm, ties, first = k[3], k[4], k[5]  # the step's kernel took it already
        else:
            norm, ties, first = split(a, b, len(dims))
        norm.requires_grad_(True)
        self.terms.append((name, norm, a, b, ties, first, len(dims)))
        return norm

    def leaves(self) -> tuple[torch.Tensor, ...]:
        return tuple(t[1] for t in self.terms)

    def deferrable(self, norm_grads) -> dict[str, tuple]:
        """Per point with exactly one norm of its own here: what the step's kernel needs to fold
        that norm's gradient in itself (keep_fold_step_): (gn, b, norm, ties, first, ndims)."""
        names = [t[0] for t in self.terms]
        return {t[0]: (gn, t[3], t[1].detach(), t[4], t[5], t[6])
                for t, gn in zip(self.terms, norm_grads) if names.count(t[0]) == 1}

    def fold(self, grads: dict[str, torch.Tensor | None], norm_grads,
             grad_output: torch.Tensor, skip=()) -> dict:
        """The points' gradients with each norm's share added (but for the points in `skip`,
        whose step folds it in): in place where autograd's gradient shares its memory with no
        other gradient nor the `grad_output` it was asked with (autograd hands one tensor to
        two inputs where a sum passes it on), else a copy."""
        fold = native.norm_inf_fold()
        memory = [t.untyped_storage().data_ptr() for t in
                  [*grads.values(), *norm_grads, grad_output] if t is not None]
        for (name, norm, a, b, ties, first, ndims), gn in zip(self.terms, norm_grads):
            if gn is None or name in skip:
                continue
            g = grads[name]
            if g is None:
                g = torch.zeros_like(a)
            elif not g.is_contiguous() or memory.count(g.untyped_storage().data_ptr()) > 1:
                g = g.contiguous() if not g.is_contiguous() else g.clone()
            fold(g, gn, a, b, norm.detach(), ties, first, ndims)
            grads[name] = g
        return grads


_SPLIT: contextvars.ContextVar = contextvars.ContextVar("robustspec_split_norm_inf", default=None)


def _value_dims(v: torch.Tensor, depth: int) -> tuple[int, ...]:
    return tuple(range(1 + depth, v.ndim))


def _as_float(v: torch.Tensor, dtype) -> torch.Tensor:
    return v if v.is_floating_point() else v.to(dtype)


_BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
           "max2": torch.maximum, "min2": torch.minimum}
_UNARY = {"neg": torch.neg, "abs": torch.abs, "exp": torch.exp, "log": torch.log}
_CMP = {"<=": torch.le, "<": torch.lt, ">=": torch.ge, ">": torch.gt, "==": torch.eq, "!=": torch.ne}


def untranslatable(formula: N, logic: Logic, what: str) -> list[Diagnostic]:
    """Operators in `formula` the logic cannot translate, as diagnostics at the operator."""
    out: list[Diagnostic] = []
    seen: set[int] = set()

    def walk(n: N):
        if id(n) in seen:
            return
        seen.add(id(n))
        if n.op in logic.unsupported:
            if n.op == "argmax":
                out.append(Diagnostic(
                    "error", f"argmax has no gradient, so {what} cannot be compiled to a loss "
                    f"under {logic.name}", n.span,
                    hint="train with the margin form `forall j in classes . j != y => "
                         "f(x)[y] > f(x)[j]`, or with strong classification robustness "
                         "`softmax(f(x))[y] >= eta` (eta > 0.5); this property still compiles "
                         "to a checker and an attack"))
            else:
                out.append(Diagnostic("error", f"the logic {logic.name} cannot translate '{n.op}'",
                                      n.span, hint="choose a logic that has this operator "
                                      "(docs/logics.md lists each logic's table), or rewrite the "
                                      "formula without it"))
        if n.op in CONT_QUANT:
            walk(n.args[0])
            return
        for a in n.args:
            walk(a)
    walk(formula)
    return out


class Lowering:
    """Compiles IR nodes to closures under one logic; the exact checker is the logic
    `BOOLEAN` (logics/boolean.py), and `Lowering(None)` means it too."""

    def __init__(self, logic: Logic | None, invariant_of: frozenset[str] | None = None):
        self.logic = logic if logic is not None else BOOLEAN
        self.invariant_of = invariant_of  # searched variables: other nodes are cached per search
        # one closure per (node, depth): a shared subterm (e.g. both sides of a nested `<=>`)
        # compiles once, so compiling is linear in the formula's DAG size, not its tree size
        self._memo: dict[tuple[int, int, bool], Fn] = {}
        self._reads_index_memo: dict[int, bool] = {}

    def term(self, n: N, depth: int) -> Fn:
        key = (id(n), depth, False)
        fn = self._memo.get(key)
        if fn is None:
            fn = self._memo[key] = self._term(n, depth)
        return fn

    def formula(self, n: N, depth: int = 0) -> Fn:
        key = (id(n), depth, True)
        fn = self._memo.get(key)
        if fn is None:
            fn = self._memo[key] = self._formula(n, depth)
        return fn

    def _reads_index(self, n: N) -> bool:
        """Does the term read an index variable (the `j` of `forall j in classes`)?"""
        r = self._reads_index_memo.get(id(n))
        if r is None:
            r = (n.op == "var" and n.attr[1] == "index") or any(self._reads_index(a) for a in n.args)
            self._reads_index_memo[id(n)] = r
        return r

    # ------------------------------------------------------------ caching wrapper
    def _cached(self, n: N, depth: int, fn: Fn, key: Any = None) -> Fn:
        key = (id(n), depth) if key is None else key
        if self.invariant_of is not None and not (n.qvars & self.invariant_of):
            def static(ctx: Ctx):
                s = ctx.static
                if key in s:
                    return s[key]
                with torch.no_grad():
                    v = fn(ctx)
                s[key] = v
                return v
            return static

        def per_call(ctx: Ctx):
            c = ctx.cache
            if key in c:
                return c[key]
            v = c[key] = fn(ctx)
            return v
        return per_call

    # ------------------------------------------------------------ terms
    def _term(self, n: N, depth: int) -> Fn:
        op = n.op
        if op == "const":
            value = float(n.attr)
            key = ("const", value)

            def const(ctx: Ctx):
                s = ctx.static
                t = s.get(key)
                if t is None:
                    t = s[key] = torch.tensor(value, dtype=ctx.dtype, device=ctx.device)
                return t
            return const
        if op == "int":
            value_i = int(n.attr)
            key_i = ("int", value_i)

            def const_int(ctx: Ctx):
                s = ctx.static
                t = s.get(key_i)
                if t is None:
                    t = s[key_i] = torch.tensor(value_i, device=ctx.device)
                return t
            return const_int
        if op == "var":
            name, role = n.attr
            if role == "index":
                def index_var(ctx: Ctx):
                    v, d = ctx.idx[name]
                    return align(v, d, depth)
                return index_var

            def var(ctx: Ctx):
                return align(ctx.vals[name], 0, depth)
            return var
        if op == "apply":
            if depth and not self._reads_index(n.args[0]):
                # f(x) under `forall j` with x free of j: the network runs at depth 0 (one
                # cache entry, shared with any f(x) outside the quantifier) and its output
                # gains the index axes of size 1, as x would have
                at_top = self.term(n, 0)
                return lambda ctx: align(at_top(ctx), 0, depth)
            x_fn = self.term(n.args[0], depth)
            net_name = n.attr
            # f(x0) of a property argument x0: an output the caller handed in is used as it is
            # (with its graph where gradients are on, detached in a search's no-grad cache),
            # instead of running the network again; under finite quantifiers x0 only gains
            # index axes of size 1, so the output does too
            x_node = n.args[0]
            known_key = (net_name, x_node.attr[0]) if (
                x_node.op == "var" and x_node.attr[1] == "arg") else None

            def apply(ctx: Ctx):
                if known_key is not None and ctx.known:
                    out = ctx.known.get(known_key)
                    if out is not None:
                        if out.ndim >= 2:
                            ctx.class_sizes.setdefault(net_name, out.shape[-1])
                        if depth:
                            out = out.reshape(out.shape[:1] + (1,) * depth + out.shape[1:])
                        return out if torch.is_grad_enabled() else out.detach()
                x = x_fn(ctx)
                lead = x.shape[:1 + depth]
                inp = x.reshape((-1,) + x.shape[1 + depth:]) if depth else x  # depth 0: as is
                try:
                    out = ctx.nets[net_name](inp)
                except RuntimeError as e:  # the input has the wrong size: say both sizes
                    if not any(w in str(e) for w in ("shape", "size", "mat1", "dimension",
                                                     "channels")):
                        raise
                    raise network_input_error(net_name, ctx.nets[net_name], inp, e) from None
                if not isinstance(out, torch.Tensor):
                    raise InputError(
                        f"the network '{net_name}' returned {type(out).__name__}, not a tensor: "
                        "pass a model whose forward returns the output tensor (e.g. wrap it: "
                        "lambda x: model(x)[0] for a model that returns a tuple)")
                if out.ndim >= 2:
                    ctx.class_sizes.setdefault(net_name, out.shape[-1])
                if not depth and out.shape[:1] == lead:
                    return out
                return out.reshape(lead + out.shape[1:])
            return self._cached(n, depth, apply)
        if op == "abs" and n.args[0].op == "sub":
            # |a - b| (a per-class |f(x)[j] - f(x0)[j]|): one native call where it fits
            sub = n.args[0]
            a_fn, b_fn = self.term(sub.args[0], depth), self.term(sub.args[1], depth)

            def abs_sub(ctx: Ctx):
                a, b, _ = _same_rank(a_fn(ctx), b_fn(ctx), depth)
                try:
                    return T.abs_sub(a, b)
                except RuntimeError as e:
                    raise shape_mismatch(sub, a, b, depth, e) from None
            return self._cached(n, depth, abs_sub)
        if op in _UNARY:
            f, a_fn = _UNARY[op], self.term(n.args[0], depth)
            return self._cached(n, depth, lambda ctx: f(a_fn(ctx)))
        if op in _BINARY:
            f2 = _BINARY[op]
            a_fn, b_fn = self.term(n.args[0], depth), self.term(n.args[1], depth)

            def binary(ctx: Ctx):
                a, b, _ = _same_rank(a_fn(ctx), b_fn(ctx), depth)
                try:
                    return f2(a, b)
                except RuntimeError as e:
                    raise shape_mismatch(n, a, b, depth, e) from None
            return self._cached(n, depth, binary)
        if op in ("norm_inf", "norm_1", "norm_2", "sum", "max", "min"):
            a_fn = self.term(n.args[0], depth)
            red = {"norm_inf": _norm_inf, "norm_1": lambda v, d: v.abs().sum(d),
                   "norm_2": lambda v, d: v.square().sum(d).sqrt(), "sum": lambda v, d: v.sum(d),
                   "max": lambda v, d: v.amax(d), "min": lambda v, d: v.amin(d)}[op]
            if op == "norm_2":
                # sqrt has an infinite gradient at 0 (x = x0 at a search's start): use a safe form
                def red(v, d):  # noqa: F811
                    sq = v.square().sum(d)
                    return torch.where(sq > 0, sq.clamp_min(1e-30).sqrt(), torch.zeros_like(sq))
            scalar = {"norm_inf": torch.abs, "norm_1": torch.abs, "norm_2": torch.abs}.get(op, lambda v: v)
            difference = None  # norm_inf(a - b): one native kernel where it applies
            if op == "norm_inf" and n.args[0].op == "sub":
                difference = (self.term(n.args[0].args[0], depth),
                              self.term(n.args[0].args[1], depth))

            def reduce(ctx: Ctx):
                if difference is not None:
                    a, b, _ = _same_rank(difference[0](ctx), difference[1](ctx), depth)
                    split = _SPLIT.get() if torch.is_grad_enabled() else None
                    out = split.take(a, b, depth) if split is not None else None
                    if out is None:
                        out = _norm_inf_of_difference(a, b, depth)
                    if out is not None:
                        return out
                v = a_fn(ctx)
                dims = _value_dims(v, depth)
                return red(v, dims) if dims else scalar(v)
            return self._cached(n, depth, reduce)
        if op in ("softmax", "log_softmax"):
            a_fn = self.term(n.args[0], depth)
            f1 = torch.softmax if op == "softmax" else torch.log_softmax
            return self._cached(n, depth, lambda ctx: f1(a_fn(ctx), -1))
        if op == "argmax":
            a_fn = self.term(n.args[0], depth)
            return self._cached(n, depth, lambda ctx: a_fn(ctx).argmax(-1))
        if op == "max_except":
            a_fn, c_fn = self.term(n.args[0], depth), self.term(n.args[1], depth)

            mask_key = ("max_except mask", id(n), depth)

            def max_except(ctx: Ctx):
                v, c = a_fn(ctx), c_fn(ctx)
                # the mask of c is made once per search: c (a label) is the same tensor at
                # every step
                kept = ctx.static.get(mask_key)
                if kept is not None and kept[0] is c and kept[1] == (c._version, v.shape[-1]):
                    mask = kept[2]
                else:
                    # one_hot's mask without its range check's two host syncs (the label was
                    # checked by v[c], which the margin v[c] > max_except(v, c) evaluates first)
                    mask = torch.zeros(c.shape + (v.shape[-1],), dtype=torch.bool, device=v.device
                                       ).scatter_(-1, c.long().unsqueeze(-1), True) if c.ndim else \
                        (torch.arange(v.shape[-1], device=v.device) == c)
                    ctx.static[mask_key] = (c, (c._version, v.shape[-1]), mask)
                return v.masked_fill(mask, float("-inf")).amax(-1)
            return self._cached(n, depth, max_except)
        if op == "index":
            return self._cached(n, depth, self._index(n, depth))
        raise SpecError([Diagnostic("error", f"cannot evaluate '{op}' here", n.span,
                                    hint="this term cannot be computed by the torch back end; "
                                         "please report it with the spec that produced it")])

    def _index(self, n: N, depth: int) -> Fn:
        fn = self._index_raw(n, depth)

        def checked(ctx: Ctx):
            try:
                return fn(ctx)
            except (IndexError, RuntimeError) as e:
                text = str(e)
                if not ("out of range" in text or "out of bounds" in text):
                    raise
                raise SpecError([Diagnostic(
                    "error", f"index out of range in `{n.span.text() or 'v[i]'}` ({e})", n.span,
                    hint="does the network have as many outputs as the spec assumes? Check the "
                         "labels, class ids and parameters used as indices")]) from None
        return checked

    def _index_raw(self, n: N, depth: int) -> Fn:
        base_fn = self.term(n.args[0], depth)
        idx_node = n.args[1]
        if idx_node.op == "int":
            k = int(idx_node.attr)
            return lambda ctx: base_fn(ctx).select(1 + depth, k)
        idx_fn = self.term(idx_node, depth)
        # v[j] with j bound by an enclosing `forall j in classes` (or range(n)): j is arange(k)
        # along its own axis, so where v does not vary along that axis and has k values, v[j]
        # is v's value axis moved there (a transpose instead of broadcast, expand and gather)
        quant_var = idx_node.attr[0] if idx_node.op == "var" and idx_node.attr[1] == "index" else None
        # ...and where that axis is the innermost index axis (v[j] under the `forall j` that
        # binds j), v made one level up already has its values on that axis: v itself, with
        # no reshape to the index axes and squeeze back (two views and their backward nodes)
        outer_fn = self.term(n.args[0], depth - 1) if (
            quant_var is not None and depth >= 1 and not self._reads_index(n.args[0])) else None

        def gather(ctx: Ctx):
            axis = 1 + depth
            if outer_fn is not None and ctx.idx[quant_var][1] == depth:
                i = idx_fn(ctx)
                w = outer_fn(ctx)
                if i.ndim == axis and w.ndim == axis and w.shape[-1] == i.shape[depth]:
                    return w if w.is_contiguous() else w.contiguous()
            v, i = base_fn(ctx), idx_fn(ctx)
            if i.ndim == 0:
                return v.select(axis, int(i))
            if quant_var is not None and v.ndim == axis + 1:
                d = ctx.idx[quant_var][1]
                if v.shape[d] == 1 and v.shape[axis] == i.shape[d]:
                    # contiguous like gather's result, so later sums add in the same order;
                    # with the axes next to each other, one squeeze moves it (2 ops fewer a step)
                    if d == axis - 1:
                        return v.squeeze(d).contiguous()
                    return v.transpose(d, axis).squeeze(axis).contiguous()
            if v.ndim == axis + 1 and v.shape[:axis] == i.shape:  # the common case: f(x)[y]
                return torch.gather(v, axis, i.long().unsqueeze(axis)).squeeze(axis)
            lead = _broadcast(v.shape[:axis], i.shape[:axis])
            rest = v.shape[axis + 1:]
            v = v.expand(lead + v.shape[axis:])
            index = i.long().expand(lead).reshape(lead + (1,) + (1,) * len(rest)).expand(
                lead + (1,) + rest)
            return torch.gather(v, axis, index).squeeze(axis)
        return gather

    # ------------------------------------------------------------ formulas
    def _formula(self, n: N, depth: int = 0) -> Fn:
        op = n.op
        lg = self.logic
        if op in ("true", "false"):
            val = op == "true"
            return lambda ctx: self._truth(ctx, val)
        if op == "cmp":
            cop, over = n.attr
            a_fn, b_fn = self._score_and_rest(n, depth) if _is_margin(n) else (
                self.term(n.args[0], depth), self.term(n.args[1], depth))
            reduce = lg.forall if over == "all" else lg.exists
            if all(x.ty.kind == "int" for x in n.args):
                return self._cached(n, depth, self._crisp_cmp(cop, a_fn, b_fn, depth))

            exact = lg.kind == "boolean"

            def logic_cmp(ctx: Ctx):
                a, b, vr = _same_rank(a_fn(ctx), b_fn(ctx), depth)
                if not exact:
                    a, b = _as_float(a, ctx.dtype), _as_float(b, ctx.dtype)
                try:
                    r = lg.cmp(T, cop, a, b)
                except RuntimeError as e:
                    raise shape_mismatch(n, a, b, depth, e) from None
                if vr and r.ndim:
                    r = reduce(T, r.flatten(1 + depth), -1)
                return r
            return self._cached(n, depth, logic_cmp)
        if op in ("and", "or"):
            fns = [self.formula(a, depth) for a in n.args]
            join = lg.and_ if op == "and" else lg.or_
            # cached like atoms: each node is evaluated once per call, also when shared
            return self._cached(n, depth, lambda ctx: join(T, [f(ctx) for f in fns]))
        if op in IDX_QUANT:
            return self._index_quantifier(n, depth)
        if op in CONT_QUANT:
            node = n
            return lambda ctx: ctx.quant(node, ctx)
        raise SpecError([Diagnostic("error", f"cannot evaluate formula op '{op}'", n.span,
                                    hint="this formula cannot be computed by the torch back end; "
                                         "please report it with the spec that produced it")])

    def _score_and_rest(self, n: N, depth: int) -> tuple[Fn, Fn]:
        """argmax(v) == c's margin v[c] > max_except(v, c): both sides from one native call
        (compiler/native_kernels.cpp score_rest: 1 op and 1 backward node against 5 and 4, the
        same values and gradients) where v is [rows, classes] and c [rows] on the CPU, with
        fewer classes than torch's amax takes in order (16 doubles, 32 floats); the two terms as
        they are otherwise, and where a label is out of range (their error says so). Where v
        also feeds other terms, autograd sums v's gradients in another grouping: only a zero's
        sign could differ."""
        score_fn, rest_fn = self.term(n.args[0], depth), self.term(n.args[1], depth)
        v_fn, c_fn = self.term(n.args[1].args[0], depth), self.term(n.args[1].args[1], depth)

        def pair(ctx: Ctx):
            v, c = v_fn(ctx), c_fn(ctx)
            if v.ndim == 2 and c.ndim == 1 and c.dtype == torch.int64 and v.device.type == "cpu" \
                    and c.shape[0] == v.shape[0] and c.device.type == "cpu" \
                    and 0 < v.shape[1] < _IN_ORDER.get(v.dtype, 0):
                kernel = native.score_rest()
                if kernel is not None:
                    try:
                        return kernel(v, c)
                    except RuntimeError:
                        pass  # a label out of range: the terms below raise the spec's error
            return score_fn(ctx), rest_fn(ctx)
        both = self._cached(n.args[1], depth, pair, key=("score and rest", id(n), depth))
        return (lambda ctx: both(ctx)[0]), (lambda ctx: both(ctx)[1])

    def _truth(self, ctx: Ctx, value: bool) -> torch.Tensor:
        """`true` or `false`: a bool for the checker, the logic's constant (made once per
        evaluation context) under a logic."""
        key = ("truth", value)
        t = ctx.static.get(key)
        if t is None:
            base = self.logic.true(T) if value else self.logic.false(T)
            t = base.to(device=ctx.device)
            t = ctx.static[key] = t.to(ctx.dtype) if t.is_floating_point() else t
        return t

    def _crisp_cmp(self, cop: str, a_fn: Fn, b_fn: Fn, depth: int) -> Fn:
        """Labels and indices compared under a logic: the logic's true or false, never a degree
        (a distance |j - y| between class numbers means nothing)."""
        f = _CMP[cop]

        def crisp(ctx: Ctx):
            a, b, _ = _same_rank(a_fn(ctx), b_fn(ctx), depth)
            return torch.where(f(a, b), self._truth(ctx, True), self._truth(ctx, False))
        return crisp

    def _index_quantifier(self, n: N, depth: int) -> Fn:
        set_node, body = n.args
        var = n.attr
        body_fn = self.formula(body, depth + 1)
        size_fn = self._set_size(set_node)
        lg = self.logic
        is_forall = n.op == "forall_idx"

        def quantify(ctx: Ctx):
            k = size_fn(ctx)
            if k == 0:  # an empty set: forall is true and exists false, under every logic
                return self._truth(ctx, is_forall)
            key = ("arange", k, depth)  # made once per evaluation context (once per search)
            ar = ctx.static.get(key)
            if ar is None:
                ar = ctx.static[key] = torch.arange(k, device=ctx.device).reshape(
                    (1,) * (depth + 1) + (k,))
            # index bindings are never changed in place (child contexts share the dict), so
            # the outer bindings come back as they were
            outer = ctx.idx
            ctx.idx = {**outer, var: (ar, depth + 1)}
            try:
                v = body_fn(ctx)
            finally:
                ctx.idx = outer
            if v.ndim < depth + 2:
                v = v.reshape(v.shape + (1,) * (depth + 2 - v.ndim))
            if v.shape[-1] != k:
                v = v.expand(v.shape[:-1] + (k,))
            return lg.forall(T, v, -1) if is_forall else lg.exists(T, v, -1)
        return quantify

    def _set_size(self, s: N) -> Callable[[Ctx], int]:
        if s.op == "range":
            n_fn = self.term(s.args[0], 0)

            def size(ctx: Ctx) -> int:
                v = n_fn(ctx)
                if v.ndim and v.numel() > 1 and not bool((v == v.flatten()[0]).all()):
                    raise SpecError([Diagnostic("error", "range(n) needs the same n for every example",
                                                s.span, hint="give n as a parameter or a literal, "
                                                "not a value that differs per example")])
                k = int(v.flatten()[0]) if v.ndim else int(v)
                if not 0 <= k <= MAX_RANGE:
                    raise SpecError([Diagnostic(
                        "error", f"range(n) got n = {k}", s.span,
                        hint=f"n must be between 0 and {MAX_RANGE}: check the parameter "
                             "values passed with params=")])
                return k
            return size
        net, declared = s.attr

        def classes(ctx: Ctx) -> int:
            if declared is not None:
                return declared
            if net not in ctx.class_sizes:
                raise SpecError([Diagnostic(
                    "error", f"the number of classes of '{net}' is not known yet", s.span,
                    hint=f"declare the output size: `network {net} : Tensor -> Tensor[10]`")])
            return ctx.class_sizes[net]
        return classes
