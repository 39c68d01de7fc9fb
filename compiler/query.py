"""A property lowered to a verification query, per example (for bound propagation, MILP,
Marabou and VNN-LIB export).

A query asks whether a counterexample exists: some x in the input box (the domain's box; an L2
ball by its enclosing box, counterexamples being replayed against the ball by the exact checker)
such that the NEGATED body holds. The negated body is a disjunction of conjunctions of linear
rows over the network's outputs y = f(x), the input x and auxiliary variables t:

    row r:  cy[r] . y + cx[r] . x + ct[r] . t + c[r]  >  0   (strict)   or  >= 0

Terms that do not depend on x (f(x0), eps, labels) are evaluated once in torch and enter as the
constants c. What is not piecewise linear is handled where there is a sound method (softmax
thresholds: certified from margin bounds, falsified by attack) and refused otherwise with a
diagnostic at the operator. Per the issue's table: SR with an L-inf output norm gives 2m
disjuncts, CR's margin form m - 1, LR one auxiliary variable t >= |x_i - x0_i|.

Only torch and the IR here: no solver imports (those live in runtime/).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from robustspec.dsl.diagnostics import Diagnostic, SpecError

from .domains import realise
from .ir import CONT_QUANT, IDX_QUANT, N
from .lower import Lowering

MAX_DISJUNCTS = 20000


def _refuse(n: N, why: str, hint: str | None = None):
    raise SpecError([Diagnostic("error", f"cannot lower to a verification query: {why}", n.span,
                                hint=hint)])


@dataclass
class Form:
    """An affine vector form cy @ y + cx @ x + ct @ t + c of length k, batched.

    Coefficients have a leading batch axis of 1 (shared) or B; None means zero."""

    c: torch.Tensor  # [b, k]
    cy: torch.Tensor | None = None  # [b, k, m]
    cx: torch.Tensor | None = None  # [b, k, n]
    ct: dict = field(default_factory=dict)  # aux id -> [b, k]
    scalar: bool = True

    @property
    def k(self) -> int:
        return self.c.shape[1]

    @property
    def constant(self) -> bool:
        return self.cy is None and self.cx is None and not self.ct

    def map(self, f) -> "Form":
        return Form(f(self.c), None if self.cy is None else f(self.cy),
                    None if self.cx is None else f(self.cx), {a: f(v) for a, v in self.ct.items()},
                    self.scalar)

    def scale(self, s: torch.Tensor) -> "Form":
        """Multiply by a constant s of shape [b] or [b, k] (or 0-dim)."""
        s2 = s.reshape(s.shape[0], -1) if s.ndim else s
        s3 = s2.unsqueeze(-1) if s2.ndim else s2
        return Form(self.c * s2, None if self.cy is None else self.cy * s3,
                    None if self.cx is None else self.cx * s3,
                    {a: v * s2 for a, v in self.ct.items()}, self.scalar)

    def component(self, i) -> "Form":
        """Component i (an int, or a [B] tensor of per-example indices)."""
        if isinstance(i, int):
            sel = lambda v: v[:, i:i + 1]  # noqa: E731
        else:
            idx = i.long().reshape(-1)

            def sel(v):
                v = v.expand((idx.shape[0],) + v.shape[1:]) if v.shape[0] == 1 else v
                g = idx.reshape((-1, 1) + (1,) * (v.ndim - 2)).expand((-1, 1) + v.shape[2:])
                return torch.gather(v, 1, g)
        out = self.map(sel)
        out.scalar = True
        return out


def _add(a: Form, b: Form, sign: float = 1.0) -> Form:
    def plus(u, v):
        if u is None:
            return None if v is None else sign * v
        if v is None:
            return u
        return u + sign * v
    ct = dict(a.ct)
    for k, v in b.ct.items():
        ct[k] = plus(ct.get(k), v)
    return Form(a.c + sign * b.c, plus(a.cy, b.cy), plus(a.cx, b.cx), ct, a.scalar and b.scalar)


@dataclass
class Conj:
    rows: tuple = ()  # row ids
    softmax: tuple = ()  # softmax atom ids
    active: torch.Tensor | None = None  # bool [B] (None: every example)


@dataclass
class SoftmaxAtom:
    """softmax(F)[i] compared with r: a counterexample when `below` and softmax < r (<= r when
    not strict), or when not `below` and softmax > r (>= r). `margins` are the row ids of
    F_i - F_j for every class j (the row j == i is zero and ignored)."""

    margins: tuple
    label: torch.Tensor  # [B] long
    threshold: torch.Tensor  # [B]
    below: bool
    strict: bool
    span: object = None


@dataclass
class Query:
    """The counterexample question for a batch of examples (see the module docstring)."""

    prop: str
    var: str
    shape: tuple  # one example's input shape
    lo: torch.Tensor  # [B, n]
    hi: torch.Tensor  # [B, n]
    ball: tuple | None  # (center [B, n], radius [B]) for an L2 domain, else None
    center: torch.Tensor | None  # [B, n]
    outputs: int  # m
    cy: torch.Tensor  # [b, R, m]
    cx: torch.Tensor | None  # [b, R, n]
    ct: torch.Tensor | None  # [b, R, A]
    c: torch.Tensor  # [B, R]
    strict: torch.Tensor  # bool [R]
    disjuncts: list  # of (row ids tuple, softmax ids tuple)
    active: torch.Tensor  # bool [B, D]
    common: tuple  # row ids conjoined to every disjunct (auxiliary definitions)
    softmax: list  # SoftmaxAtom
    aux_lo: torch.Tensor  # [B, A]
    aux_hi: torch.Tensor  # [B, A]
    network: str = "f"

    @property
    def batch(self) -> int:
        return self.lo.shape[0]

    @property
    def inputs(self) -> int:
        return self.lo.shape[1]

    @property
    def n_aux(self) -> int:
        return self.aux_lo.shape[1]

    @property
    def linear(self) -> bool:
        """Can a complete solver (MILP, Marabou) decide it? (No softmax atoms.)"""
        return not self.softmax

    def row_values(self, y: torch.Tensor, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """[B, R] values of the rows at concrete outputs y [B, m], inputs x [B, n], aux t."""
        v = torch.einsum("brm,bm->br", self.cy.expand(y.shape[0], -1, -1), y) + self.c
        if self.cx is not None:
            v = v + torch.einsum("brn,bn->br", self.cx.expand(x.shape[0], -1, -1), x)
        if self.ct is not None and t is not None:
            v = v + torch.einsum("bra,ba->br", self.ct.expand(x.shape[0], -1, -1), t)
        return v

    def example(self, i: int) -> "Query":
        """The query of example i alone (batch 1)."""
        def pick(v):
            return None if v is None else (v[i:i + 1] if v.shape[0] != 1 else v)
        sm = [SoftmaxAtom(s.margins, s.label[i:i + 1], s.threshold[i:i + 1], s.below, s.strict,
                          s.span) for s in self.softmax]
        ball = None if self.ball is None else (self.ball[0][i:i + 1], self.ball[1][i:i + 1])
        return Query(self.prop, self.var, self.shape, self.lo[i:i + 1], self.hi[i:i + 1], ball,
                     pick(self.center), self.outputs, pick(self.cy), pick(self.cx), pick(self.ct),
                     self.c[i:i + 1], self.strict, self.disjuncts, self.active[i:i + 1],
                     self.common, sm, self.aux_lo[i:i + 1], self.aux_hi[i:i + 1], self.network)


class _Builder:
    def __init__(self, prop, model, args: dict, params: dict | None):
        self.prop = prop
        self.ctx = prop._bind(model, None, dict(args), params)
        self.lowering = Lowering(None)
        self.B = self.ctx.batch
        self.rows: list[tuple[Form, bool]] = []
        self.common: list[int] = []
        self.softmax: list[SoftmaxAtom] = []
        self.aux: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.idx: dict[str, int] = {}

    # ------------------------------------------------------------ constants
    def _ctx(self):
        c = self.ctx.child(self.ctx.vals)
        c.idx = {k: (torch.tensor(v, device=self.ctx.device), 0) for k, v in self.idx.items()}
        return c

    def const(self, n: N) -> torch.Tensor:
        return self.lowering.term(n, 0)(self._ctx())

    def const_form(self, n: N) -> Form:
        v = self.const(n)
        v = v.to(self.ctx.dtype) if not v.is_floating_point() else v
        if v.ndim == 0:
            return Form(v.reshape(1, 1))
        return Form(v.reshape(v.shape[0], -1), scalar=v.ndim == 1)

    def truth(self, n: N) -> torch.Tensor:
        v = self.lowering.formula(n, 0)(self._ctx())
        v = torch.as_tensor(v).bool()
        if v.ndim == 0:
            return v.expand(self.B)
        return v.reshape(v.shape[0], -1)[:, 0].expand(self.B) if v.ndim > 1 else v.expand(self.B)

    # ------------------------------------------------------------ linear forms
    def depends(self, n: N) -> bool:
        return self.var in n.qvars

    def form(self, n: N, pol: int) -> list[Form]:
        """Alternatives (a disjunction, for max-like terms entering positively) of the term n,
        which enters the compared difference with sign pol."""
        if not self.depends(n):
            return [self.const_form(n)]
        op = n.op
        if op == "var":
            eye = torch.eye(self.n, dtype=self.ctx.dtype, device=self.ctx.device).unsqueeze(0)
            return [Form(torch.zeros(1, self.n, dtype=self.ctx.dtype), cx=eye, scalar=False)]
        if op == "apply":
            if n.attr != self.net or n.args[0].op != "var" or n.args[0].attr[0] != self.var:
                _refuse(n, f"the network must be applied to '{self.var}' itself",
                        hint="one network applied to the searched variable; other uses of it "
                             "are constants (such as f(x0))")
            eye = torch.eye(self.m, dtype=self.ctx.dtype, device=self.ctx.device).unsqueeze(0)
            return [Form(torch.zeros(1, self.m, dtype=self.ctx.dtype), cy=eye, scalar=False)]
        if op in ("add", "sub"):
            a = self.form(n.args[0], pol)
            b = self.form(n.args[1], pol if op == "add" else -pol)
            return self._product(a, b, 1.0 if op == "add" else -1.0)
        if op == "neg":
            return [f.scale(torch.tensor(-1.0, dtype=self.ctx.dtype)) for f in self.form(n.args[0], -pol)]
        if op in ("mul", "div"):
            a_dep, b_dep = self.depends(n.args[0]), self.depends(n.args[1])
            if op == "div" and b_dep or (a_dep and b_dep):
                _refuse(n, "a product of terms that both depend on the searched variable is "
                           "not linear")
            var_side, k_side = (n.args[0], n.args[1]) if a_dep else (n.args[1], n.args[0])
            s = self.const(k_side)
            s = s.to(self.ctx.dtype)
            if op == "div":
                s = 1.0 / s
            if s.ndim > 1 and var_side.ty.shape == ():
                s = s.reshape(s.shape[0], -1)[:, 0]
            sign = self._sign(s, n)
            return [f.scale(s) for f in self.form(var_side, pol * sign)]
        if op == "index":
            if self.depends(n.args[1]):
                _refuse(n, "an index that depends on the searched variable")
            i_node = n.args[1]
            i = int(i_node.attr) if i_node.op == "int" else self.const(i_node)
            if not isinstance(i, int) and i.ndim == 0:
                i = int(i)
            if n.args[0].op == "softmax":
                _refuse(n, "softmax is not piecewise linear",
                        hint="a softmax threshold `softmax(f(x))[y] >= eta` is supported as a "
                             "whole comparison; write other uses as margins")
            return [f.component(i) for f in self.form(n.args[0], pol)]
        if op in ("norm_inf", "max", "abs") and (op != "abs" or n.args[0].ty.shape == ()):
            inner = self.form(n.args[0], 1)
            signs = (1.0, -1.0) if op != "max" else (1.0,)
            if pol > 0:  # max_i u_i > ... : some component
                out = []
                for f in inner:
                    for s in signs:
                        for i in range(f.k):
                            out.append(f.component(i).scale(torch.tensor(s, dtype=self.ctx.dtype)))
                return out
            if len(inner) != 1:
                _refuse(n, "a maximum nested in a maximum on the small side of a comparison")
            return [self._aux(inner[0], signs, n)]
        if op == "min":
            inner = self.form(n.args[0], -1)
            if pol < 0 and len(inner) == 1:  # -min(u) = max(-u) entering positively
                f = inner[0]
                return [f.component(i) for i in range(f.k)]
            _refuse(n, "a minimum that must stay large is a conjunction over its elements",
                    hint="state it elementwise: `u >= c` instead of `min(u) >= c`")
        why = {"softmax": "softmax is not piecewise linear", "exp": "exp is not linear",
               "log": "log is not linear", "norm_2": "the L2 norm is not piecewise linear",
               "norm_1": "norm_1 is not supported in queries (it needs 2^n linear pieces)",
               "argmax": "argmax compared with anything but a label is not supported",
               "max_except": "max_except is only supported as a margin"}.get(op, f"'{op}' is not "
                                                                               f"linear")
        _refuse(n, why)

    def _sign(self, s: torch.Tensor, n: N) -> int:
        if bool((s >= 0).all()):
            return 1
        if bool((s <= 0).all()):
            return -1
        _refuse(n, "a factor whose sign differs between examples")

    def _product(self, a: list[Form], b: list[Form], sign: float) -> list[Form]:
        out = [_add(f, g, sign) for f in a for g in b]
        if len(out) > MAX_DISJUNCTS:
            raise SpecError([Diagnostic("error", "the query has too many linear pieces")])
        return out

    def _aux(self, u: Form, signs, n: N) -> Form:
        """A fresh t with t >= s * u_i for every component and sign: max-like terms on the
        side that must stay small (t = max exists and any larger t only weakens the row)."""
        if u.cy is not None or u.ct:
            _refuse(n, "a maximum over network outputs on the side that must stay small",
                    hint="only terms of the input (such as norm_inf(x - x0)) get an auxiliary "
                         "variable")
        a = len(self.aux)
        one = torch.ones(1, 1, dtype=self.ctx.dtype)
        # the box of t: max over the input box of |u_i| (exact for affine u of x)
        vals = []
        for s in signs:
            f = u.scale(torch.tensor(s, dtype=self.ctx.dtype))
            lo, hi = _affine_range(f, self.lo, self.hi)
            vals.append((lo, hi))
            for i in range(f.k):
                row = _add(Form(torch.zeros(1, 1, dtype=self.ctx.dtype), ct={a: one}), f.component(i), -1.0)
                self.common.append(self._row(row, strict=False))
        lo = torch.stack([v[0] for v in vals]).amax(0).amax(1).clamp_min(0) if len(signs) > 1 else \
            torch.stack([v[0] for v in vals]).amax(0).amax(1)
        hi = torch.stack([v[1] for v in vals]).amax(0).amax(1)
        self.aux.append((lo, hi))
        return Form(torch.zeros(1, 1, dtype=self.ctx.dtype), ct={a: one})

    def _row(self, f: Form, strict: bool) -> int:
        self.rows.append((f, strict))
        return len(self.rows) - 1

    # ------------------------------------------------------------ formulas -> DNF
    def dnf(self, n: N) -> list[Conj]:
        op = n.op
        if op == "true":
            return [Conj()]
        if op == "false":
            return []
        if op == "or":
            out = [c for a in n.args for c in self.dnf(a)]
            self._cap(out)
            return out
        if op == "and":
            out = [Conj()]
            for a in n.args:
                out = self._conj_product(out, self.dnf(a))
            return out
        if op in IDX_QUANT:
            set_node, body = n.args
            size = self._set_size(set_node)
            parts = []
            for j in range(size):
                self.idx[n.attr] = j
                parts.append(self.dnf(body))
            self.idx.pop(n.attr, None)
            if op == "exists_idx":
                out = [c for p in parts for c in p]
                self._cap(out)
                return out
            out = [Conj()]
            for p in parts:
                out = self._conj_product(out, p)
            return out
        if op in CONT_QUANT:
            _refuse(n, "quantifier alternation (a quantifier inside the searched body) is not "
                       "exportable", hint="verify the inner property on its own")
        if op == "cmp":
            return self.atom(n)
        _refuse(n, f"'{op}' in a formula")

    def _set_size(self, s: N) -> int:
        if s.op == "range":
            v = self.const(s.args[0])
            return int(v.flatten()[0]) if v.ndim else int(v)
        return self.m

    def _cap(self, out):
        if len(out) > MAX_DISJUNCTS:
            raise SpecError([Diagnostic("error", f"the query has more than {MAX_DISJUNCTS} "
                                                 "disjuncts")])

    def _conj_product(self, a: list[Conj], b: list[Conj]) -> list[Conj]:
        out = []
        for p in a:
            for q in b:
                act = p.active if q.active is None else (q.active if p.active is None else
                                                         p.active & q.active)
                out.append(Conj(p.rows + q.rows, p.softmax + q.softmax, act))
        self._cap(out)
        return out

    def atom(self, n: N) -> list[Conj]:
        if not self.depends(n):
            return [Conj(active=self.truth(n))]
        cop, over = n.attr
        a, b = n.args
        for soft, other, below_op in ((a, b, ("<", "<=")), (b, a, (">", ">="))):
            if soft.op == "index" and soft.args[0].op == "softmax":
                return self._softmax_atom(n, soft, other, cop in below_op)
        if cop in ("==", "!="):
            _refuse(n, f"'{cop}' between terms of the searched variable",
                    hint="state it with <=, <, >= or > (margins)")
        big, small = (a, b) if cop in (">", ">=") else (b, a)
        strict = cop in (">", "<")
        gs = self._product(self.form(big, 1), self.form(small, -1), -1.0)
        out = []
        for g in gs:
            if g.k == 1 or over == "all":
                out.append(Conj(tuple(self._row(g.component(i), strict) for i in range(g.k))))
            else:
                out.extend(Conj((self._row(g.component(i), strict),)) for i in range(g.k))
        self._cap(out)
        return out

    def _softmax_atom(self, n: N, soft: N, other: N, below: bool) -> list[Conj]:
        if self.depends(other):
            _refuse(n, "a softmax compared with a term of the searched variable")
        cop = n.attr[0]
        inner = self.form(soft.args[0].args[0], 1)
        if len(inner) != 1 or inner[0].k != self.m:
            _refuse(soft, "softmax of anything but a linear vector of the outputs")
        F = inner[0]
        i_node = soft.args[1]
        lab = torch.full((self.B,), int(i_node.attr), dtype=torch.long) if i_node.op == "int" else \
            self.const(i_node).long().reshape(-1).expand(self.B)
        Fi = F.component(lab)
        margins = tuple(self._row(_add(Fi, F.component(j), -1.0), False) for j in range(self.m))
        r = self.const(other).to(self.ctx.dtype)
        r = r.reshape(-1).expand(self.B) if r.ndim else r.expand(self.B)
        self.softmax.append(SoftmaxAtom(margins, lab.clone(), r.clone(), below,
                                        cop in ("<", ">"), n.span))
        return [Conj(softmax=(len(self.softmax) - 1,))]

    # ------------------------------------------------------------ assembly
    def build(self, model) -> Query:
        prop = self.prop
        f = prop.formula
        if f.op != "forall":
            _refuse(f, "only a property of the form `forall x . ...` is a verification query"
                    if f.op != "exists" else "an `exists` property asks for a witness, not a proof",
                    hint="verify a property whose body is one forall over the input")
        q = f.attr
        if len(q.vars) != 1:
            _refuse(f, "a joint quantifier over several variables is not supported")
        self.var = q.vars[0]
        if len(prop.networks) != 1:
            _refuse(f, "a property over several networks")
        self.net = next(iter(prop.networks))
        doms = realise(prop, model, **self.args)
        dom = doms[self.var]
        shape = tuple(dom.shape[1:])
        B = dom.shape[0]
        if dom.lo is None or dom.hi is None:
            lo = dom.l2[0] - dom.l2[1].reshape((-1,) + (1,) * len(shape))
            hi = dom.l2[0] + dom.l2[1].reshape((-1,) + (1,) * len(shape))
        else:
            lo, hi = dom.lo, dom.hi
        self.lo, self.hi = lo.reshape(B, -1).to(self.ctx.dtype), hi.reshape(B, -1).to(self.ctx.dtype)
        self.n = self.lo.shape[1]
        center = dom.center if dom.center is not None else (lo + hi) / 2
        with torch.no_grad():
            was = model.training
            model.eval()
            try:
                self.m = int(model(center.reshape((B,) + shape)[:1]).shape[-1])
            finally:
                model.train(was)
        conjs = self.dnf(f.args[1])
        R = len(self.rows)
        dt = self.ctx.dtype
        # stack rows: coefficient tensors keep a shared batch axis where every row shares it
        def stack(get, width):
            parts = [get(fm) for fm, _ in self.rows]
            if all(p is None for p in parts):
                return None
            b = max((p.shape[0] for p in parts if p is not None), default=1)
            return torch.cat([(torch.zeros(1, 1, width, dtype=dt) if p is None else p)
                              .expand(b, 1, width) for p in parts], 1) if R else None
        cy = stack(lambda fm: fm.cy, self.m)
        cy = cy if cy is not None else torch.zeros(1, R, self.m, dtype=dt)
        cx = stack(lambda fm: fm.cx, self.n)
        A = len(self.aux)
        ct = stack(lambda fm: (torch.stack([fm.ct[a] if a in fm.ct else torch.zeros_like(
            next(iter(fm.ct.values()))) for a in range(A)], -1) if fm.ct else None), A) if A else None
        c = torch.cat([fm.c.expand(B, 1) for fm, _ in self.rows], 1) if R else torch.zeros(B, 0, dtype=dt)
        strict = torch.tensor([s for _, s in self.rows], dtype=torch.bool)
        active = torch.stack([cj.active if cj.active is not None else torch.ones(B, dtype=torch.bool)
                              for cj in conjs], 1) if conjs else torch.zeros(B, 0, dtype=torch.bool)
        aux_lo = torch.stack([a[0] for a in self.aux], 1) if A else torch.zeros(B, 0, dtype=dt)
        aux_hi = torch.stack([a[1] for a in self.aux], 1) if A else torch.zeros(B, 0, dtype=dt)
        ball = None
        if dom.l2 is not None:
            r = dom.l2[1]
            ball = (dom.l2[0].reshape(B, -1), (r.reshape(-1) if r.ndim else r.reshape(1)).expand(B))
        return Query(prop.name, self.var, shape, self.lo, self.hi, ball,
                     center.reshape(B, -1), self.m, cy, cx, ct, c, strict,
                     [(cj.rows, cj.softmax) for cj in conjs], active, tuple(self.common),
                     self.softmax, aux_lo, aux_hi, self.net)


def _affine_range(f: Form, lo: torch.Tensor, hi: torch.Tensor):
    """Exact [min, max] over the box of an affine form of x alone: [B, k] each."""
    if f.cx is None:
        return f.c.expand(lo.shape[0], -1), f.c.expand(lo.shape[0], -1)
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    cx = f.cx
    centre = torch.einsum("bkn,bn->bk", cx.expand(lo.shape[0], -1, -1), mid) + f.c
    spread = torch.einsum("bkn,bn->bk", cx.abs().expand(lo.shape[0], -1, -1), rad)
    return centre - spread, centre + spread


def build_query(prop, model, *, params: dict | None = None, **args) -> Query:
    """The verification query of `prop` for the examples in `args` (e.g. x0=x, y=y)."""
    with torch.no_grad():
        b = _Builder(prop, model, args, params)
        b.args = dict(args)
        if params:
            b.args["params"] = params
        return b.build(model)


__all__ = ["Query", "SoftmaxAtom", "Form", "build_query"]
