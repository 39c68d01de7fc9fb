"""A compiled property: what users call from their own PyTorch loops.

    prop = compile_spec("specs/standard_robustness.spec")["sr"]
    loss = prop.loss(model, x0=x, y=y, logic="dl2")   # 0-dim, differentiable w.r.t. the weights
    found = prop.search(model, x0=x, y=y, steps=50)    # worst points found, per example
    ok = prop.holds(model, x0=x, y=y, at=found)        # bool [batch]: the body, exactly

Everything compiled here is compiled once per property (per logic) and reused on every call.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from robustspec.dsl.diagnostics import Diagnostic, SpecError

from .ir import N, walk
from .logics import Logic, get_logic
from .logics.boolean import BOOLEAN
from .lower import T, Ctx, Lowering, untranslatable
from .normalise import NormalProperty
from .binding import bind, per_example, points_of, split_search
from .domains import domain_fn, radius_params
from .options import SEARCH_OPTIONS  # noqa: F401 (re-exported: the runtime imported it here)
from .search import RealDomain, Search
from .simplify import simplify



@dataclass
class Found:
    """Points found by a search, per quantified variable ([batch, *shape] each)."""

    points: dict[str, torch.Tensor]
    objective: dict[str, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, var: str) -> torch.Tensor:
        return self.points[var]

    def __iter__(self) -> Iterator[str]:
        return iter(self.points)

    def __len__(self) -> int:
        return len(self.points)


@dataclass
class Verdict:
    """The exact check of a property at given points, per example."""

    holds: torch.Tensor  # bool [batch]
    vacuous: torch.Tensor  # bool [batch]: held only because a premise was false

    @property
    def violated(self) -> torch.Tensor:
        return ~self.holds


@contextlib.contextmanager
def eval_mode(nets: dict[str, Callable]):
    """Run searches with every network in eval mode, and restore each module's mode after."""
    modes = [(m, m.training) for m in nets.values() if isinstance(m, torch.nn.Module)]
    for m, _ in modes:
        m.eval()
    try:
        yield
    finally:
        for m, was in modes:
            m.train(was)


class Property:
    """One named property of a compiled spec."""

    def __init__(self, normal: NormalProperty, networks: dict, params: dict, spec_name: str):
        self.name = normal.name
        self.normal = normal
        self.args = normal.args
        self.networks = networks  # name -> Ty
        self.params = {k: v for k, (_t, v) in params.items()}
        self.param_types = {k: t for k, (t, _v) in params.items()}
        self.spec_name = spec_name
        self.formula = normal.formula
        self.quantifiers = normal.quantifiers()
        self.variables = normal.variables()  # the names `at=` and `search()` results use
        self._check = Lowering(BOOLEAN).formula(self.formula)
        self._loss_fns: dict[int, Callable] = {}
        self._objective_fns: dict[tuple[int, int], tuple[Callable, Callable | None]] = {}
        self._body_fns: dict[tuple[int, int], Callable] = {}
        self._terms = Lowering(BOOLEAN)
        self._domain_fns = {id(q): [domain_fn(d, self._terms) for d in q.attr.domains]
                            for q in self.quantifiers}
        self.radius_params = radius_params(self.quantifiers)  # must be >= 0 at call time
        self._vacuity = self._vacuity_fn()
        self._needs_probe = self._uses_unsized_classes(self.formula)
        self._class_sizes: dict[int, int] = {}  # id(network) -> output size, learnt once

    def fingerprint(self) -> str:
        """A digest of what the property means (formula, domains, parameter values), not of
        where it was read from: a checkpoint resumes only under the same property."""
        import hashlib

        from .ir import dag_text, show
        parts = [self.name, dag_text(self.formula)]  # linear in the DAG (show() is a tree)
        for q in self.quantifiers:
            for d in q.attr.domains:
                parts += [d.var] + [show(t) for t in d.lower + d.upper]
                parts += [f"{kind}({show(c)},{show(r)})" for kind, balls in (("linf", d.linf),
                                                                             ("l2", d.l2))
                          for c, r in balls]
        parts += [f"{k}={v!r}" for k, v in sorted(self.params.items())]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        sig = ", ".join(f"{n} : {t}" for n, t in self.args)
        return f"<property {self.name}({sig}) from {self.spec_name}>"

    # ------------------------------------------------------------ public API
    def loss(self, model=None, *, logic: str | Logic = "dl2", search: str | Search = "pgd",
             reduction: str = "mean", networks: dict | None = None, params: dict | None = None,
             generator: torch.Generator | None = None, **kwargs) -> torch.Tensor:
        """The property's loss under `logic`, differentiable w.r.t. the network's weights.

        Quantified variables are first searched for (their worst points, the network in eval
        mode, no gradient left on the weights); the loss is the body's loss at those points.
        reduction: "mean" (0-dim), "sum", or "none" (per example).
        """
        lg = get_logic(logic)
        per_example = lg.to_loss(T, self.value(model, logic=lg, search=search, networks=networks,
                                                  params=params, generator=generator, **kwargs))
        if reduction == "mean":
            return per_example.mean()
        if reduction == "sum":
            return per_example.sum()
        if reduction == "none":
            return per_example
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")

    def value(self, model=None, *, logic: str | Logic = "dl2", search: str | Search = "pgd",
              networks: dict | None = None, params: dict | None = None,
              generator: torch.Generator | None = None, **kwargs) -> torch.Tensor:
        """The formula's value under `logic`, per example: a loss for DL2, a truth degree for
        the fuzzy logics, a robustness degree for STL (quantified variables searched first)."""
        lg = get_logic(logic)
        strategy, args = self._split(search, kwargs)
        ctx = self._bind(model, networks, args, params)
        fn = self._loss_fn(lg)
        ctx.quant = self._search_handler(lg, strategy, generator, record=None, body_logic=lg)
        return self._per_example(fn(ctx), ctx.batch)

    def search(self, model=None, *, search: str | Search = "pgd", logic: str | Logic = "dl2",
               networks: dict | None = None, params: dict | None = None,
               generator: torch.Generator | None = None, **kwargs) -> Found:
        """Search every quantified variable; returns the worst point found per example."""
        lg = get_logic(logic)
        strategy, args = self._split(search, kwargs)
        ctx = self._bind(model, networks, args, params)
        found = Found({})
        if not self.quantifiers:
            return found
        # walk the formula with the checker (so an untranslatable body, e.g. argmax, is fine);
        # each quantifier's search still descends its objective under `logic`
        ctx.quant = self._search_handler(lg, strategy, generator, record=found, body_logic=None)
        with torch.no_grad(), eval_mode(ctx.nets):
            self._check(ctx)
        return found

    def check(self, model=None, *, at: Found | dict | torch.Tensor | None = None,
              networks: dict | None = None, params: dict | None = None,
              search: str | Search = "pgd", generator: torch.Generator | None = None,
              logic: str | Logic = "dl2", **kwargs) -> Verdict:
        """The body, exactly, at the points `at` (searched for first when not given, the
        search descending its objective under `logic`)."""
        strategy, args = self._split(search, kwargs)
        lg = get_logic(logic)
        if at is None and self.quantifiers:
            at = self.search(model, search=strategy, logic=lg, networks=networks, params=params,
                             generator=generator, **args)
        points = self._points(at)
        ctx = self._bind(model, networks, args, params)
        outside: dict[int, torch.Tensor] = {}
        ctx.quant = self._check_handler(points, strategy, generator, outside, lg)
        with torch.no_grad(), eval_mode(ctx.nets):  # a verdict must not depend on dropout
            holds = self._per_example(self._check(ctx), ctx.batch).bool()
            vacuous = self._vacuity(ctx, points)
            if self.formula.op == "forall" and id(self.formula) in outside:
                vacuous = vacuous | outside[id(self.formula)]  # the point left the domain
            vacuous = vacuous & holds
        return Verdict(holds, vacuous)

    def lower(self, backend: str, **options):
        """This property through one back end of the table (compiler/backends.py): "loss",
        "checker", "objective", "sympy", "explain", "query", or one registered since."""
        from .backends import lower
        return lower(self, backend, **options)

    def holds(self, model=None, **kwargs) -> torch.Tensor:
        """Bool [batch]: does the body hold at `at` (searched for first when not given)?"""
        return self.check(model, **kwargs).holds

    # ------------------------------------------------------------ compiled pieces
    def _loss_fn(self, lg: Logic) -> Callable:
        fn = self._loss_fns.get(_logic_key(lg))
        if fn is None:
            diags = untranslatable(self.formula, lg, f"property '{self.name}'")
            if diags:
                raise SpecError(diags)
            # a law the logic claims (and the kit checks) may simplify; no other
            fn = self._loss_fns[_logic_key(lg)] = Lowering(lg).formula(simplify(self.formula, lg))
        return fn

    def _objective(self, q: N, lg: Logic) -> tuple[Callable, Callable | None]:
        key = (id(q), _logic_key(lg))
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
        key = (id(q), _logic_key(lg) if lg else None)
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
            obj = lg.to_loss(T, obj_fn(c))
            tie = lg.to_loss(T, tie_fn(c)) if tie_fn is not None else None
            return obj, tie
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

    def _vacuity_fn(self):
        """Bool [batch]: the top-level implication held because its premise was false."""
        premise = self.normal.vacuity_premise
        if premise is None:
            return lambda ctx, points: torch.zeros(ctx.batch, dtype=torch.bool, device=ctx.device)
        prem = Lowering(BOOLEAN).formula(premise)

        def vacuous(ctx: Ctx, points):
            c = ctx.child({**ctx.vals, **points})
            return ~self._per_example(prem(c), ctx.batch).bool()
        return vacuous

    # ------------------------------------------------------------ binding (binding.py)
    def _split(self, search, kwargs) -> tuple[Search, dict]:
        return split_search(search, kwargs)

    def _points(self, at) -> dict:
        return points_of(self, at)

    def _bind(self, model, networks, args: dict, params: dict | None) -> Ctx:
        return bind(self, model, networks, args, params)

    def _probe(self, ctx: Ctx) -> None:
        """Learn the networks' output sizes (for `classes`) from one example, once per network."""
        x = next((ctx.vals[n][:1] for n, t in self.args if t.kind == "real"), None)
        for name, net in ctx.nets.items():
            known = self._class_sizes.get(id(net))
            if known is not None:
                ctx.class_sizes[name] = known
            elif x is not None:
                with torch.no_grad(), eval_mode({name: net}):
                    try:
                        size = net(x).shape[-1]
                    except Exception:  # a network of another input shape: sized on first use
                        continue
                ctx.class_sizes[name] = self._class_sizes[id(net)] = size

    def _uses_unsized_classes(self, n: N) -> bool:
        return any(m.op == "classes" and m.attr[1] is None for m in walk(n))

    _per_example = staticmethod(per_example)


def _logic_key(lg: Logic):
    """Compiled closures are cached per logic *value* (name and options), so a caller passing
    a fresh `DL2()` on every step reuses them instead of growing the caches without bound."""
    attrs = vars(lg)
    if not all(isinstance(v, (int, float, str, bool, type(None))) for v in attrs.values()):
        return (type(lg), id(lg))  # options we cannot compare by value: cache per instance
    return (type(lg), tuple(sorted(attrs.items())))


__all__ = ["Property", "Found", "Verdict"]
