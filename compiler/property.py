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
from .search import RealDomain, Search, make_search
from .simplify import simplify

SEARCH_OPTIONS = {"steps", "step_size", "restarts", "samples", "points", "random_start", "early_stop"}


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
        self._domain_fns = {id(q): [self._domain_fn(d) for d in q.attr.domains]
                            for q in self.quantifiers}
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

    def _domain_fn(self, d):
        t = self._terms
        lower = [t.term(n, 0) for n in d.lower]
        upper = [t.term(n, 0) for n in d.upper]
        linf = [(t.term(c, 0), t.term(r, 0)) for c, r in d.linf]
        l2 = [(t.term(c, 0), t.term(r, 0)) for c, r in d.l2]
        declared = (d.ty.shape if d.ty.shape is not None and all(isinstance(s, int) for s in d.ty.shape)
                    else None)

        def realise(ctx: Ctx) -> RealDomain:
            los = [f(ctx) for f in lower]
            his = [f(ctx) for f in upper]
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
        return realise

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
        domain, or a point given outside it) a forall holds vacuously and an exists fails."""
        if bool(inside.all()):
            return value
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

    # ------------------------------------------------------------ binding
    def _split(self, search, kwargs) -> tuple[Search, dict]:
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in SEARCH_OPTIONS}
        return make_search(search, **options), kwargs

    def _points(self, at) -> dict:
        if at is None:
            return {}
        names = self.variables
        if isinstance(at, (Found, dict)):
            pts = dict(at.points if isinstance(at, Found) else at)
            unknown = [k for k in pts if k not in names]
            if unknown:
                close = difflib.get_close_matches(unknown[0], names, n=1)
                raise TypeError(f"at= names '{unknown[0]}', which '{self.name}' does not quantify"
                                + (f"; did you mean '{close[0]}'?" if close else "")
                                + f" (its variables: {', '.join(names) or 'none'})")
            return pts
        if len(names) != 1:
            raise TypeError(f"'{self.name}' quantifies {names}: pass at={{name: tensor}}")
        return {names[0]: at}

    def _bind(self, model, networks, args: dict, params: dict | None) -> Ctx:
        nets = dict(networks or {})
        if model is not None:
            if len(self.networks) != 1:
                raise TypeError(f"the spec declares networks {sorted(self.networks)}; pass "
                                f"networks={{name: module}} instead of one model")
            nets[next(iter(self.networks))] = model
        missing = [n for n in self.networks if n not in nets]
        if missing:
            raise TypeError(f"property '{self.name}' needs network(s) {missing}: pass the model as "
                            f"the first argument or networks={{'{missing[0]}': model}}")
        names = [n for n, _ in self.args]
        unknown = [k for k in args if k not in names]
        if unknown:
            k = unknown[0]
            close = difflib.get_close_matches(k, names + sorted(SEARCH_OPTIONS), n=1)
            raise TypeError(f"property '{self.name}' has no argument '{k}'"
                            + (f"; did you mean '{close[0]}'?" if close else "")
                            + f" (its arguments: {', '.join(names) or 'none'})")
        absent = [n for n in names if n not in args]
        if absent:
            raise TypeError(f"property '{self.name}' needs argument(s) {absent} "
                            f"(signature: {self.name}({', '.join(f'{n} : {t}' for n, t in self.args)}))")
        given = {n: torch.as_tensor(args[n]) for n, _t in self.args}
        ref = next((given[n] for n, t in self.args if t.kind == "real" and given[n].is_floating_point()),
                   None)
        dtype = ref.dtype if ref is not None else torch.get_default_dtype()
        device = ref.device if ref is not None else torch.device("cpu")
        vals: dict[str, torch.Tensor] = {}
        batch = None
        dims: dict[str, int] = {}
        for n, t in self.args:
            v = given[n].to(device)
            if t.kind == "int":
                if v.is_floating_point():
                    raise TypeError(f"argument '{n}' is a label/index and must hold integers")
                v = v.long()
            else:
                v = v.to(dtype)
            if v.ndim == 0:
                raise TypeError(f"argument '{n}' must be batched: the first axis is the batch")
            if batch is None:
                batch = v.shape[0]
            elif v.shape[0] != batch:
                raise ValueError(f"batch sizes differ: '{n}' has {v.shape[0]} examples, "
                                 f"others {batch}")
            if t.kind == "real" and t.shape is not None:
                want = t.shape
                got = tuple(v.shape[1:])
                ok = len(want) == len(got) and all(
                    (w == g) if isinstance(w, int) else dims.setdefault(w, g) == g
                    for w, g in zip(want, got))
                if not ok:
                    raise ValueError(f"argument '{n}' should have shape [batch, "
                                     f"{', '.join(map(str, want))}], got {list(v.shape)}")
            vals[n] = v
        for k, val in {**self.params, **(params or {})}.items():
            if k not in self.params:
                close = difflib.get_close_matches(k, list(self.params), n=1)
                raise TypeError(f"unknown parameter '{k}'" + (f"; did you mean '{close[0]}'?" if close else ""))
            vals[k] = self._param_value(k, val, dtype, device)
            if vals[k].ndim == 1 and len(vals[k]) not in (1, batch or 1):
                raise ValueError(f"parameter '{k}' has {len(vals[k])} values but the batch has "
                                 f"{batch} examples: give one number, or one per example")
        ctx = Ctx(vals, nets, None, dtype, device, batch or 1)
        if self._needs_probe:
            self._probe(ctx)
        return ctx

    def _param_value(self, name: str, val, dtype, device) -> torch.Tensor:
        """A parameter's value (0-dim, or 1-D: one per example), checked like compile-time values."""
        try:
            t = torch.as_tensor(val, device=device)
        except (TypeError, ValueError, RuntimeError):
            t = None
        if t is None or t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"parameter '{name}' takes a number or one number per example, "
                            f"not {val!r}")
        if t.ndim > 1:
            raise TypeError(f"parameter '{name}' takes a number or one number per example, got a "
                            f"tensor of shape {list(t.shape)}")
        if self.param_types[name].kind == "int":
            if bool((t != t.round()).any()):
                raise TypeError(f"parameter '{name}' is {self.param_types[name]} but {val!r} is "
                                "not a whole number")
            if bool((t < 0).any()) and str(self.param_types[name]) == "Nat":
                raise ValueError(f"parameter '{name}' is Nat but {val!r} is negative")
            return t.long()
        return t.to(dtype)

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

    @staticmethod
    def _per_example(v: torch.Tensor, batch: int) -> torch.Tensor:
        """One value per example: formulas that ignore the batch are broadcast over it."""
        if v.ndim == 0:
            return v.expand(batch)
        v = v.reshape(v.shape[0], -1)[:, 0] if v.ndim > 1 else v
        return v.expand(batch) if v.shape[0] == 1 != batch else v


def _logic_key(lg: Logic):
    """Compiled closures are cached per logic *value* (name and options), so a caller passing
    a fresh `DL2()` on every step reuses them instead of growing the caches without bound."""
    attrs = vars(lg)
    if not all(isinstance(v, (int, float, str, bool, type(None))) for v in attrs.values()):
        return (type(lg), id(lg))  # options we cannot compare by value: cache per instance
    return (type(lg), tuple(sorted(attrs.items())))


def _fold(f, xs: list[torch.Tensor], shape) -> torch.Tensor | None:
    if not xs:
        return None
    out = xs[0]
    for x in xs[1:]:
        out = f(out, x)
    return out.expand(shape).contiguous() if out.ndim else out.expand(shape).clone()


__all__ = ["Property", "Found", "Verdict"]
