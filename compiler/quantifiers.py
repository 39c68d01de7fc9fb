"""Quantifier search inside a property: each continuous quantifier's objective compiled once
per logic, its domain realised, its search run, and its value taken at the point found (for
a loss, a search, or the exact check at given points).

`QuantifierSearch` is the part of `Property` that does this; the lowering reaches it through
`Ctx.quant`, the handler the property installs for a call.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable

import torch

from robustspec.dsl.diagnostics import SpecError

from .ir import N
from .logics import Logic
from .logics.boolean import BOOLEAN
from .lower import T, Ctx, Lowering, untranslatable
from .search import RealDomain, Search


@contextlib.contextmanager
def eval_mode(nets: dict[str, Callable]):
    """Run searches with every network in eval mode, and restore each module's mode after.
    Left alone: a network with no module in training mode (an attack's, an evaluation's, or
    inside an outer eval_mode), and one known to compute the same in either mode
    (`mode_independent`: the paper's MLP and CNN, during training). eval() and train() walk
    every submodule through nn.Module.__setattr__, about 60 us each on the paper's MLP: a
    quarter of a short attack's fixed cost, and 2% of a training step with 10 PGD steps.
    Each submodule's own flag comes back (a frozen batch norm in a training model stays in
    eval mode), after the network's train() (so an overriding train() still runs)."""
    modes = [(m, [(sub, sub.training) for sub in m.modules()]) for m in nets.values()
             if isinstance(m, torch.nn.Module) and any(sub.training for sub in m.modules())
             and not mode_independent(m)]
    for m, _ in modes:
        m.eval()
    try:
        yield
    finally:
        for m, flags in modes:
            m.train(flags[0][1])
            for sub, was in flags:
                if sub.training != was:
                    sub.training = was


# torch.nn modules whose forward never reads `training` and draws no random numbers: the
# same output in train and eval mode, on every call. Exact types only (a subclass may
# override forward); a class of one's own says so with a class attribute
# `mode_independent = True` in its own body (not inherited: see mode_independent).
_MODE_FREE = frozenset((
    torch.nn.Sequential, torch.nn.ModuleList, torch.nn.Identity, torch.nn.Flatten,
    torch.nn.Unflatten, torch.nn.Linear, torch.nn.Bilinear, torch.nn.Conv1d, torch.nn.Conv2d,
    torch.nn.Conv3d, torch.nn.ReLU, torch.nn.ReLU6, torch.nn.LeakyReLU, torch.nn.ELU,
    torch.nn.GELU, torch.nn.SiLU, torch.nn.Tanh, torch.nn.Sigmoid, torch.nn.Softplus,
    torch.nn.Hardtanh, torch.nn.Softmax, torch.nn.LogSoftmax, torch.nn.MaxPool1d,
    torch.nn.MaxPool2d, torch.nn.AvgPool1d, torch.nn.AvgPool2d, torch.nn.AdaptiveAvgPool2d))


def mode_independent(net) -> bool:
    """Is `net` known to compute the same outputs in train and eval mode, deterministically?
    True only for a torch module all of whose submodules are of the types in _MODE_FREE or of
    a class declaring `mode_independent = True` itself, with no forward hooks and no forward
    set on an instance (arbitrary code). Anything else (dropout, batch norm, a function, an unknown layer) is not
    known to be, so its outputs are never shared between calls (Property.loss's `outputs=`)."""
    if not isinstance(net, torch.nn.Module):
        return False
    from torch.nn.modules import module as _module
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return False
    for m in net.modules():
        cls = type(m)
        if cls not in _MODE_FREE and cls.__dict__.get("mode_independent") is not True:
            return False
        if m._forward_hooks or m._forward_pre_hooks or "forward" in vars(m):
            return False  # a hook, or a forward set on the instance: code we know nothing of
    return True


def logic_key(lg: Logic):
    """Compiled closures are cached per logic *value* (name and options), so a caller passing
    a fresh `DL2()` on every step reuses them instead of growing the caches without bound."""
    attrs = vars(lg)
    if not all(isinstance(v, (int, float, str, bool, type(None))) for v in attrs.values()):
        return (type(lg), id(lg))  # options we cannot compare by value: cache per instance
    return (type(lg), tuple(sorted(attrs.items())))


class QuantifierSearch:
    """Objectives, domains, searches and quantifier values of a property (mixed into Property;
    uses its `_objective_fns`, `_body_fns` and `_domain_fns` caches)."""

    def _objective(self, q: N, lg: Logic) -> tuple[Callable, Callable | None]:
        key = (id(q), logic_key(lg))
        got = self._objective_fns.get(key)
        if got is None:
            target = q.args[1]
            bad = [d for d in untranslatable(target, lg, "the search objective")]
            if bad:
                for d in bad:
                    d.message = (f"the search for {', '.join(q.attr.vars)} cannot follow a gradient "
                                 f"through {d.span.text() or 'argmax'}")
                    d.hint = ("compare argmax only with == or != (those are searched through the "
                              "margin form), or use search='random'")
                raise SpecError(bad)
            inv = frozenset(q.attr.vars)
            low = Lowering(lg, invariant_of=inv)
            obj = low.formula(target)
            tie = low.formula(q.args[0]) if q.op == "forall" and not untranslatable(q.args[0], lg, "") \
                else None
            got = self._objective_fns[key] = (obj, tie)
        return got

    def _body(self, q: N, lg: Logic | None) -> Callable:
        key = (id(q), logic_key(lg) if lg else None)
        fn = self._body_fns.get(key)
        if fn is None:
            fn = self._body_fns[key] = Lowering(lg).formula(q.args[0])
        return fn

    # ------------------------------------------------------------ quantifier handlers
    def _domains(self, q: N, ctx: Ctx) -> dict[str, RealDomain]:
        return {d.var: fn(ctx) for d, fn in zip(q.attr.domains, self._domain_fns[id(q)])}

    def _run_search(self, q: N, ctx: Ctx, lg: Logic, strategy: Search, generator,
                    domains: dict[str, RealDomain] | None = None):
        domains = domains if domains is not None else self._domains(q, ctx)
        obj_fn, tie_fn = self._objective(q, lg)
        static: dict = {}
        # a quantifier inside the objective is valued under the search's logic, so that the
        # objective has a gradient through it (not by whoever called this search)
        inner = self._search_handler(lg, strategy, generator, record=None, body_logic=lg)

        def objective(points):
            c = Ctx({**ctx.vals, **points}, ctx.nets, inner, ctx.dtype, ctx.device, ctx.batch,
                    static=static, class_sizes=ctx.class_sizes)
            c.idx = ctx.idx
            c.known = ctx.known
            obj = lg.to_loss(T, obj_fn(c))
            if tie_fn is None:
                return obj, None
            # the tie is only compared (search._Best), never differentiated: no graph for the
            # terms of its own (its atoms and the reduction of a finite quantifier; shared
            # terms come from the cache with obj's graph)
            with torch.no_grad():
                return obj, lg.to_loss(T, tie_fn(c))
        with eval_mode(ctx.nets):
            points, score = strategy.run(objective, {v: d.detached() for v, d in domains.items()},
                                         ctx.batch, generator)
        return points, score, domains

    @staticmethod
    def _within(q: N, value: torch.Tensor, inside: torch.Tensor, lg: Logic | None) -> torch.Tensor:
        """The quantifier's value where its points lie in the domain; elsewhere (an empty
        domain, or a point given outside it) a forall holds vacuously and an exists fails.
        Always a `where` (no host sync asking whether every point is inside)."""
        forall = q.op == "forall"
        lg = lg if lg is not None else BOOLEAN
        fill = (lg.true(T) if forall else lg.false(T)).to(dtype=value.dtype, device=value.device)
        if value.ndim > 1:
            inside = inside.reshape(inside.shape + (1,) * (value.ndim - 1))
        return torch.where(inside, value, fill)

    def _search_handler(self, lg: Logic, strategy: Search, generator, record: Found | None,
                        body_logic: Logic | None):
        """Search the quantifier, then evaluate its body at the point found (loss or check)."""
        def handle(q: N, ctx: Ctx):
            points, score, domains = self._run_search(q, ctx, lg, strategy, generator)
            if record is not None:
                record.points.update(points)
                if score is not None:  # PGD(keep="last") evaluates none
                    record.objective[q.attr.vars[0]] = score
            if torch.is_grad_enabled():  # an outer search differentiates through this one
                points = {v: domains[v].relative(p) for v, p in points.items()}
            value = self._body(q, body_logic)(ctx.child({**ctx.vals, **points}))
            inside = ~functools.reduce(torch.logical_or, (d.empty() for d in domains.values()))
            return self._within(q, value, inside, body_logic)
        return handle

    def _check_handler(self, points: dict, strategy: Search, generator, outside: dict,
                       lg: Logic):
        def handle(q: N, ctx: Ctx):
            missing = [v for v in q.attr.vars if v not in points]
            pts = {v: torch.as_tensor(points[v], device=ctx.device).to(ctx.dtype)
                   for v in q.attr.vars if v in points}
            domains = self._domains(q, ctx)
            if missing:
                found, _, _ = self._run_search(q, ctx, lg, strategy, generator, domains)
                pts.update({v: found[v] for v in missing})
            for v, p in pts.items():
                if p.shape != domains[v].shape:
                    raise ValueError(f"the point given for '{v}' has shape {list(p.shape)}, but "
                                     f"its domain has shape {list(domains[v].shape)} ([batch, ...])")
            inside = functools.reduce(torch.logical_and,
                                      (domains[v].contains(p) for v, p in pts.items()))
            outside[id(q)] = ~inside
            value = self._body(q, None)(ctx.child({**ctx.vals, **pts}))
            return self._within(q, value, inside, None)
        return handle



__all__ = ["QuantifierSearch", "eval_mode", "logic_key", "mode_independent"]
