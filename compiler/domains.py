"""A property's search domains, realised per example, from outside `Property`.

Export and verification back ends need the box (and L2 ball) every quantified variable ranges
over, evaluated for concrete arguments; this is the one public way to get them:

    from robustspec.compiler.domains import realise
    doms = realise(prop, model, x0=x, y=y)            # {"x": RealDomain(lo, hi, ...)}
    doms["x"].lo, doms["x"].hi                         # [batch, *shape] each

A domain that depends on another quantified variable (`forall x . ... exists z .
norm_inf(z - x) <= r`) is realised only when that variable's value is given in `at=`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from robustspec.dsl.diagnostics import Diagnostic, SpecError

from . import native
from .ir import N
from .lower import Ctx, Lowering
from .search import RealDomain


def domain_fn(d, terms: Lowering) -> Callable[[Ctx], RealDomain]:
    """The closure that evaluates domain `d`'s bounds in a context: box [max of lower bounds,
    min of upper bounds] with each L-infinity ball intersected into it, the first L2 ball kept
    for projection, all broadcast to [batch, *shape]."""
    t = terms
    lower = [t.term(n, 0) for n in d.lower]
    upper = [t.term(n, 0) for n in d.upper]
    linf = [(t.term(c, 0), t.term(r, 0)) for c, r in d.linf]
    l2 = [(t.term(c, 0), t.term(r, 0)) for c, r in d.l2]
    declared = (d.ty.shape if d.ty.shape is not None and all(isinstance(s, int) for s in d.ty.shape)
                else None)

    def realise_one(ctx: Ctx) -> RealDomain:
        los = [f(ctx) for f in lower]
        his = [f(ctx) for f in upper]
        if len(linf) == 1 and not l2:
            fast = _box(los, his, linf[0][0](ctx), linf[0][1](ctx), ctx.batch, declared)
            if fast is not None:
                return fast
        center = None
        for cf, rf in linf:
            c, r = cf(ctx), rf(ctx)
            r = r.reshape(r.shape + (1,) * (c.ndim - r.ndim)) if r.ndim else r
            los.append(c - r)
            his.append(c + r)
            center = c if center is None else center
        ball = None
        if l2:
            c, r = l2[0][0](ctx), l2[0][1](ctx)
            ball, center = (c, r), (center if center is not None else c)
        shapes = [v.shape for v in los + his + ([center] if center is not None else []) if v.ndim]
        batch_shape = (ctx.batch,) + tuple(declared) if declared is not None else None
        shape = (shapes[0] if all(sh == shapes[0] for sh in shapes) else
                 torch.broadcast_shapes(*shapes)) if shapes else batch_shape
        if shape is None:
            raise SpecError([Diagnostic("error", f"cannot tell the shape of '{d.var}'",
                                        hint=f"annotate it: forall {d.var} : Tensor[...] . ...")])
        if len(shape) == 0 or shape[0] != ctx.batch:
            shape = (ctx.batch,) + tuple(shape[1:] if len(shape) and shape[0] == 1 else shape)
        lo = _fold(torch.maximum, los, shape)
        hi = _fold(torch.minimum, his, shape)
        if ball is not None:
            ball = (ball[0].expand(shape), ball[1])
        return RealDomain(lo, hi, ball, center.expand(shape) if center is not None else None)
    return realise_one


def _box(los, his, c, r, batch: int, declared) -> RealDomain | None:
    """The common domain, a ball `norm_inf(x - c) <= r` within constant bounds (`0 <= x <= 1`),
    by the native box kernel in one pass over c (bounds, width, empty rows and whether it is
    one point, which the search asks for; the same values as realise_one's torch ops); None
    where it does not apply (c not a CPU float batch, bounds or radius not constants,
    gradients wanted)."""
    if not (isinstance(c, torch.Tensor) and c.ndim >= 1 and c.shape[0] == batch
            and c.device.type == "cpu" and c.dtype in (torch.float32, torch.float64)
            and not c.requires_grad and c.numel() > 0
            and (declared is None or tuple(c.shape[1:]) == tuple(declared))):
        return None
    consts = los + his + [r]
    if any(not isinstance(t, torch.Tensor) or t.ndim or t.requires_grad
           or t.device.type != "cpu" or t.is_complex() for t in consts):
        return None
    kernel = native.box()
    if kernel is None:
        return None
    los, his = [float(t) for t in los], [float(t) for t in his]
    if any(math.isnan(v) for v in los + his):
        return None  # torch's maximum propagates a NaN bound: leave that to its ops
    lo, hi, width, empty, point = kernel(c, float(r), max(los, default=-math.inf),
                                         min(his, default=math.inf))
    return RealDomain(lo, hi, None, c, known=(width, empty, point))


def _fold(f, xs: list[torch.Tensor], shape) -> torch.Tensor | None:
    if not xs:
        return None
    out = xs[0]
    for x in xs[1:]:
        out = f(out, x)
    return out.expand(shape).contiguous() if out.ndim else out.expand(shape).clone()


def radius_params(quantifiers: list[N]) -> frozenset[str]:
    """Parameters written directly as a ball's radius (`norm_inf(x - x0) <= eps`): a negative
    value at call time is an error, not a vacuous verdict."""
    out = set()
    for q in quantifiers:
        for d in q.attr.domains:
            for _c, r in d.linf + d.l2:
                if r.op == "var" and r.attr[1] == "param":
                    out.add(r.attr[0])
    return frozenset(out)


def realise(prop, model=None, *, params: dict | None = None, networks: dict | None = None,
            at: dict | None = None, **args) -> dict[str, RealDomain]:
    """{variable: RealDomain} for every quantified variable of `prop` whose domain can be
    evaluated from the arguments (and the points in `at` for domains depending on them)."""
    ctx = prop._bind(model, networks, dict(args), params)
    known = dict(at or {})
    ctx = ctx.child({**ctx.vals, **known})
    out: dict[str, RealDomain] = {}
    for q in prop.quantifiers:
        needs = set().union(*(d.qvars() for d in q.attr.domains))
        if needs - set(known):
            continue
        for d, fn in zip(q.attr.domains, prop._domain_fns[id(q)]):
            if d.var not in out:
                out[d.var] = fn(ctx)
    return out


domains_of = realise

__all__ = ["realise", "domains_of", "domain_fn", "radius_params", "RealDomain"]
