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

from .search import RealDomain


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

__all__ = ["realise", "domains_of", "RealDomain"]
