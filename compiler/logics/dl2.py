"""DL2 (Fischer et al., 2019): a formula's loss is >= 0, and 0 exactly when it is satisfied.

    a <= b -> max(a - b, 0)           a < b  -> max(a - b, 0) + xi * [a = b]
    a == b -> |a - b|                 a != b -> xi * [a = b]
    A and B -> L(A) + L(B)            A or B -> L(A) * L(B)
Negation is pushed into the atoms before the table is used (the IR is in NNF), and
A => B is (not A) or B, i.e. L(not A) * L(B). `false` is the constant loss 1.
"""
from __future__ import annotations

from .base import Logic, check_xi, violation


class DL2(Logic):
    name = "dl2"
    kind = "loss"
    truth_range = "[0, inf): 0 exactly when satisfied"
    claims = frozenset({"sound", "complete", "commutative", "associative", "shadow_lifting",
                       "identity"})
    atoms = "the violation: relu(a - b) for a <= b, |a - b| for ==, + xi * [a = b] for < > !="

    def __init__(self, xi: float = 1.0):
        self.xi = check_xi("DL2", xi)

    def cmp(self, T, op, a, b):
        return violation(T, op, a, b, self.xi)  # the table in `atoms`, written once (base.py)

    def and_(self, T, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    def or_(self, T, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out

    def forall(self, T, v, dim):
        return T.sum(v, dim)

    def exists(self, T, v, dim):
        return T.prod(v, dim)

    def true(self, T):
        return T.const(0.0)

    def false(self, T):
        return T.const(1.0)

    def __repr__(self):
        return f"<logic dl2 xi={self.xi}>"
