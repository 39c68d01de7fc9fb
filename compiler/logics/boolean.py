"""The exact checker as a logic: atoms are the comparisons themselves, and/or are logical.

    a op b  -> a op b (a bool)       A and B -> A ∧ B      A or B -> A ∨ B
    forall / exists over an axis -> all / any              true / false -> True / False
    to_loss -> 1 where false, 0 where true (no gradient: it decides, it does not train)

It is one entry in the same logic table as DL2 and the fuzzy logics, so the lowering has no
special case for "no logic", and the property-test kit holds the checker to every law: it is
Boolean logic, so it claims them all (and compiler/simplify.py may use them).
"""
from __future__ import annotations

import functools

from .base import Logic

_CMP = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
        ">": lambda a, b: a > b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


class Boolean(Logic):
    name = "boolean"
    kind = "boolean"
    differentiable = False
    truth_range = "{False, True}: the exact verdict"
    value_range = (0.0, 1.0)
    partial_range = (0.0, 1.0)
    atoms = "the comparison itself, exactly"
    claims = frozenset({"sound", "complete", "commutative", "associative", "idempotent",
                        "identity", "absorbing"})
    unsupported = frozenset()  # argmax is fine: nothing is differentiated

    def cmp(self, T, op, a, b):
        return _CMP[op](a, b)

    def and_(self, T, xs):
        return functools.reduce(T.logical_and, xs)

    def or_(self, T, xs):
        return functools.reduce(T.logical_or, xs)

    def forall(self, T, v, dim):
        return T.all(v, dim)

    def exists(self, T, v, dim):
        return T.any(v, dim)

    def true(self, T):
        return T.const(True)

    def false(self, T):
        return T.const(False)

    def to_loss(self, T, v):
        return (~v).to(T.const(1.0).dtype) if hasattr(v, "dtype") else 1 - v

    def satisfied(self, v):
        return v

    def __repr__(self):
        return "<logic boolean>"


BOOLEAN = Boolean()
