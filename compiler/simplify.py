"""Simplification by the Boolean laws, one law at a time, only under a logic that has it.

The IR keeps a formula as written (ir.Builder never merges or drops operands), so a logic's
translation is its table, operand for operand. A logic that *claims* a law (Logic.claims, and
the property-test kit checks the claim) may have its formulas simplified by it before lowering:

    idempotent   A and A -> A             A or A -> A           (duplicate operands)
    identity     A and true -> A          A or false -> A
    absorbing    A and false -> false     A or true -> true

The exact checker (logics/boolean.py) has all three; Goedel too; DL2 only `identity`; the
others see docs/logics.md. Quantifier nodes are kept as they are (their searches are keyed by
node), and the walk is memoised on nodes, so it is linear in the formula's DAG size.
"""
from __future__ import annotations

from .ir import CONT_QUANT, Builder, N
from .logics.base import LAWS, Logic


def laws_of(logic: Logic) -> frozenset[str]:
    return frozenset(law for law in LAWS if law in logic.claims)


def simplify(formula: N, logic: Logic, builder: Builder | None = None) -> N:
    """`formula` rewritten by the laws `logic` claims (the same node when it claims none)."""
    laws = laws_of(logic)
    if not laws:
        return formula
    b = builder or Builder()
    memo: dict[int, N] = {}

    def walk(n: N) -> N:
        got = memo.get(id(n))
        if got is not None:
            return got
        if n.op in CONT_QUANT or not n.is_formula or not n.args:
            out = n
        else:
            args = tuple(walk(a) if a.is_formula else a for a in n.args)
            out = _junction(b, n, args, laws) if n.op in ("and", "or") else (
                n if all(x is y for x, y in zip(args, n.args)) else
                b.mk(n.op, args, n.attr, n.ty, n.span))
        memo[id(n)] = out
        return out
    return walk(formula)


def _junction(b: Builder, n: N, args: tuple, laws: frozenset[str]) -> N:
    unit, zero = ("true", "false") if n.op == "and" else ("false", "true")
    items: list[N] = []
    for a in args:
        if "absorbing" in laws and a.op == zero:
            return b.mk(zero, span=n.span)
        if "identity" in laws and a.op == unit:
            continue
        if "idempotent" in laws and any(a is x for x in items):
            continue
        items.append(a)
    if not items:
        return b.mk(unit, span=n.span)
    if len(items) == 1:
        return items[0]
    if len(items) == len(n.args) and all(x is y for x, y in zip(items, n.args)):
        return n
    return b.mk(n.op, tuple(items), n.attr, n.ty, n.span)


__all__ = ["simplify", "laws_of"]
