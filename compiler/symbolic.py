"""Lowering the IR to sympy: a property's loss under a logic as a formula.

The same Logic tables as the torch lowering, over a sympy backend, so `explain` prints exactly
what is trained. Tensors stay opaque symbols (`f(x)`, `norm_inf(...)`); an elementwise
comparison on tensors becomes `sum_elements(...)` (or `prod_elements` for "some element"), a
finite quantifier a real Sum or Product over its index, and a continuous quantifier its body
at the point the search finds (the variable printed as `x*`).
"""
from __future__ import annotations

import sympy as sp

from .ir import CONT_QUANT, IDX_QUANT, N
from .logics import Logic

_sum_elements = sp.Function("sum_elements")
_prod_elements = sp.Function("prod_elements")


class SympyOps:
    """The primitives a Logic may use, on sympy expressions."""

    relu = staticmethod(lambda e: sp.Max(e, 0))
    abs = staticmethod(sp.Abs)
    exp = staticmethod(sp.exp)
    log = staticmethod(sp.log)
    minimum = staticmethod(sp.Min)
    maximum = staticmethod(sp.Max)

    @staticmethod
    def eq(a, b):
        return sp.KroneckerDelta(a, b)

    @staticmethod
    def const(x):
        return sp.Float(x) if not float(x).is_integer() else sp.Integer(int(x))


_FUN = {}


def _fn(name: str):
    if name not in _FUN:
        _FUN[name] = sp.Function(name)
    return _FUN[name]


class SympyLowering:
    def __init__(self, logic: Logic | None, starred: set[str] = frozenset()):
        self.logic = logic
        self.T = SympyOps()
        self.starred = starred
        self._index_ranges: dict[str, object] = {}

    def term(self, n: N):
        op, a = n.op, n.args
        if op == "const":
            return SympyOps.const(n.attr)
        if op == "int":
            return sp.Integer(n.attr)
        if op == "var":
            name, role = n.attr
            if role == "index":
                return sp.Symbol(name, integer=True)
            return sp.Symbol(name + "*" if name in self.starred else name)
        if op == "apply":
            return _fn(n.attr)(self.term(a[0]))
        if op == "neg":
            return -self.term(a[0])
        if op in ("add", "sub", "mul", "div"):
            x, y = self.term(a[0]), self.term(a[1])
            return {"add": x + y, "sub": x - y, "mul": x * y, "div": x / y}[op]
        if op == "abs":
            return sp.Abs(self.term(a[0]))
        if op == "exp":
            return sp.exp(self.term(a[0]))
        if op == "log":
            return sp.log(self.term(a[0]))
        if op == "max2":
            return sp.Max(self.term(a[0]), self.term(a[1]))
        if op == "min2":
            return sp.Min(self.term(a[0]), self.term(a[1]))
        if op == "index":
            return sp.Indexed(sp.IndexedBase(sp.sstr(self.term(a[0]))), self.term(a[1]))
        return _fn(op)(*[self.term(x) for x in a])

    def formula(self, n: N):
        lg, T, op = self.logic, self.T, n.op
        if lg is None:
            raise ValueError("symbolic lowering needs a logic")
        if op == "true":
            return lg.true(T)
        if op == "false":
            return lg.false(T)
        if op == "cmp":
            cop, over = n.attr
            value = lg.cmp(T, cop, self.term(n.args[0]), self.term(n.args[1]))
            if any(x.ty.kind == "real" and x.ty.shape not in ((), None) for x in n.args) or over == "any":
                value = (_sum_elements if over == "all" else _prod_elements)(value) \
                    if lg.kind == "loss" else _fn("all_elements" if over == "all" else "some_element")(value)
            return value
        if op in ("and", "or"):
            items = [self.formula(x) for x in n.args]
            return lg.and_(T, items) if op == "and" else lg.or_(T, items)
        if op in IDX_QUANT:
            j = sp.Symbol(n.attr, integer=True)
            s = n.args[0]
            upper = (sp.Symbol("K") if s.op == "classes" and s.attr[1] is None else
                     sp.Integer(s.attr[1]) if s.op == "classes" else self.term(s.args[0])) - 1
            body = self.formula(n.args[1])
            if lg.kind == "loss" and type(lg).__name__ == "DL2":
                return (sp.Sum if op == "forall_idx" else sp.Product)(body, (j, 0, upper))
            return _fn(f"{op[:-4]}_{n.attr}")(body)
        if op in CONT_QUANT:
            inner = SympyLowering(lg, self.starred | set(n.attr.vars))
            return inner.formula(n.args[0])
        raise ValueError(op)


def loss_expression(formula: N, logic: Logic):
    """The loss (or truth value) of a formula under a logic, as a sympy expression."""
    return SympyLowering(logic).formula(formula)
