"""Goedel (min/max) fuzzy logic: truth degrees in [0, 1], 1 = true.

    A and B -> min(A, B)            A or B -> max(A, B)
    forall  -> min over the axis    exists -> max over the axis
    A => B  -> max(1 - A, B)        (Kleene-Dienes: the S-implication of max with 1 - x,
                                     since the compiler rewrites A => B as (not A) or B)
    to_loss -> 1 - truth

Atoms: the DL2 violation v of the atom (relu(a - b) for a <= b, |a - b| for a == b, and
xi * [a = b] added for the strict < > and for !=) mapped to a truth degree by
t = 1 / (1 + v) = 1 - v / (1 + v): smooth, decreasing, with a gradient at every violation,
and t = 1 exactly when the atom holds. So the truth of a formula is 1 exactly when the checker
says true (sound and complete). The gradient of min reaches only the smallest conjunct, so
Goedel logic is not shadow-lifting.
"""
from __future__ import annotations

from .base import FuzzyLogic, fold


class Goedel(FuzzyLogic):
    name = "goedel"
    truth_range = "[0, 1]: 1 = true (exactly when satisfied)"
    claims = frozenset({"sound", "complete", "commutative", "associative", "idempotent",
                       "identity",
                       "absorbing"})

    def and_(self, T, xs):
        return fold(T.minimum, xs)

    def or_(self, T, xs):
        return fold(T.maximum, xs)

    def forall(self, T, v, dim):
        return T.amin(v, dim)

    def exists(self, T, v, dim):
        return T.amax(v, dim)
