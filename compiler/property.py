"""A compiled property: what users call from their own PyTorch loops.

    prop = compile_spec("specs/standard_robustness.spec")["sr"]
    loss = prop.loss(model, x0=x, y=y, logic="dl2")   # 0-dim, differentiable w.r.t. the weights
    found = prop.search(model, x0=x, y=y, steps=50)    # worst points found, per example
    ok = prop.holds(model, x0=x, y=y, at=found)        # bool [batch]: the body, exactly

Everything compiled here is compiled once per property (per logic) and reused on every call.
The pieces live by concept: binding.py (arguments), domains.py (domains), quantifiers.py
(quantifier search), backends.py (the back-end table this class's methods read).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from robustspec.dsl.diagnostics import SpecError

from .binding import bind, known_outputs, per_example, points_of, split_search
from .domains import domain_fn, radius_params
from .ir import CONT_QUANT, N, walk
from .logics import Logic, get_logic
from .logics.boolean import BOOLEAN
from .lower import T, Ctx, Lowering, untranslatable
from .normalise import NormalProperty
from .options import SEARCH_OPTIONS  # noqa: F401 (re-exported: the runtime imported it here)
from .quantifiers import QuantifierSearch, eval_mode
from .quantifiers import logic_key as _logic_key
from .search import Search
from .simplify import simplify


class _PerNetwork:
    """A value per network object: weakly held where the object allows it (a module, a
    function), else by a strong reference (so that its id cannot be reused meanwhile)."""

    def __init__(self) -> None:
        self._weak: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._strong: dict[int, tuple[object, object]] = {}

    def get(self, net):
        try:
            return self._weak.get(net)
        except TypeError:  # neither weakly referable nor hashable
            held = self._strong.get(id(net))
            return held[1] if held is not None and held[0] is net else None

    def put(self, net, value) -> None:
        try:
            self._weak[net] = value
        except TypeError:
            self._strong[id(net)] = (net, value)


@dataclass
class Found:
    """Points found by a search, per quantified variable ([batch, *shape] each), and the
    search objective at them (<= 0: a counterexample or witness under a sound logic), per
    variable searched; none for a search that does not evaluate its last points
    (PGD(keep="last"))."""

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


class Property(QuantifierSearch):
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
        # network -> output size, learnt once per network: held weakly (an id alone would be
        # reused by the next network made after one is freed, e.g. evaluate's RowChunks)
        self._class_sizes = _PerNetwork()
        # one quantifier with nothing searched inside (search() returns its points alone)
        q = self.formula
        self._one_search = q.op in CONT_QUANT and not any(n.op in CONT_QUANT for n in walk(q.args[0]))

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
             generator: torch.Generator | None = None, outputs: dict | None = None,
             **kwargs) -> torch.Tensor:
        """The property's loss under `logic`, differentiable w.r.t. the network's weights.

        Quantified variables are first searched for (their worst points, the network in eval
        mode, no gradient left on the weights); the loss is the body's loss at those points.
        reduction: "mean" (0-dim), "sum", or "none" (per example).
        outputs: network outputs the caller already has, e.g. {"x0": logits} with logits =
        model(x0) as the model is now (with its graph); used for f(x0) instead of running the
        network again, only where exact (a network known to be the same in train and eval
        mode: binding.known_outputs), else ignored.
        """
        lg = get_logic(logic)
        per_example = lg.to_loss(T, self.value(model, logic=lg, search=search, networks=networks,
                                                  params=params, generator=generator,
                                                  outputs=outputs, **kwargs))
        if reduction == "mean":
            return per_example.mean()
        if reduction == "sum":
            return per_example.sum()
        if reduction == "none":
            return per_example
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")

    def value(self, model=None, *, logic: str | Logic = "dl2", search: str | Search = "pgd",
              networks: dict | None = None, params: dict | None = None,
              generator: torch.Generator | None = None, outputs: dict | None = None,
              **kwargs) -> torch.Tensor:
        """The formula's value under `logic`, per example: a loss for DL2, a truth degree for
        the fuzzy logics, a robustness degree for STL (quantified variables searched first).
        outputs: as in `loss`."""
        lg = get_logic(logic)
        strategy, args = self._split(search, kwargs)
        ctx = self._bind(model, networks, args, params)
        ctx.known = known_outputs(self, ctx, outputs, args)
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
        q = self.formula
        if self._one_search:
            # one quantifier with nothing searched inside: its points are the whole answer, so
            # its body is not evaluated at them (SR's or LR's two network passes saved)
            with torch.no_grad(), eval_mode(ctx.nets):
                points, score, _ = self._run_search(q, ctx, lg, strategy, generator)
            found.points.update(points)
            if score is not None:  # PGD(keep="last") evaluates no objective at its points
                found.objective[q.attr.vars[0]] = score
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
        "checker", "objective", "sympy", "explain", "query", "verify", or one registered since."""
        from .backends import lower
        return lower(self, backend, **options)

    def verify(self, model, *, verifier: str = "auto", timeout: float = 30.0,
               params: dict | None = None, **kwargs):
        """Constraint satisfaction per example: attack, sound bound propagation, then a
        complete solver (verifier "auto" | "bounds" | "milp" | "marabou"). Arguments by the
        property's names (`x0=`, `y=`); returns runtime.verify.VerifyResult, whose `verdicts`
        are "verified", "falsified", "unknown" or "boundary". Needs the `verify` extra for the
        complete solvers. The back end lives in the runtime (the table names it by string, so
        the compiler imports nothing from there)."""
        return self.lower("verify", model=model, verifier=verifier, timeout=timeout,
                          params=params, **kwargs)

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
            known = self._class_sizes.get(net)
            if known is not None:
                ctx.class_sizes[name] = known
            elif x is not None:
                with torch.no_grad(), eval_mode({name: net}):
                    try:
                        size = net(x).shape[-1]
                    except Exception:  # a network of another input shape: sized on first use
                        continue
                ctx.class_sizes[name] = size
                self._class_sizes.put(net, size)

    def _uses_unsized_classes(self, n: N) -> bool:
        return any(m.op == "classes" and m.attr[1] is None for m in walk(n))

    _per_example = staticmethod(per_example)


__all__ = ["Property", "Found", "Verdict", "eval_mode"]
