"""Lukasiewicz fuzzy logic: truth degrees in [0, 1], 1 = true.

    A and B -> max(0, A + B - 1)        A or B -> min(1, A + B)
    forall  -> max(0, 1 - sum(1 - x))   exists -> min(1, sum(x))     (over the axis)
    A => B  -> min(1, 1 - A + B)        (the Lukasiewicz implication: the S-implication of the
                                         bounded sum with 1 - x; A => B is (not A) or B)
    to_loss -> 1 - truth

Atoms: t = 1 / (1 + v), v the DL2 violation (xi * [a = b] for strict < > and for !=); t = 1
exactly when the atom holds.

Not sound: two half-true disjuncts make a true disjunction (min(1, 0.5 + 0.5) = 1) though
neither holds. Complete: if the checker says true, the truth degree is 1. The bounded sums cut
the gradient off (max(0, A + B - 1) is flat while A + B < 1), so it is not shadow-lifting.
"""
from __future__ import annotations

from .base import FuzzyLogic


class Lukasiewicz(FuzzyLogic):
    name = "lukasiewicz"
    truth_range = "[0, 1]: 1 = true (also for some unsatisfied disjunctions: not sound)"
    claims = frozenset({"complete", "commutative", "associative", "identity", "absorbing"})

    def and_(self, T, xs):
        if len(xs) == 1:
            return xs[0]
        return T.relu(1 - sum(1 - x for x in xs))

    def or_(self, T, xs):
        if len(xs) == 1:
            return xs[0]
        return T.clamp(sum(xs[1:], xs[0]), None, 1)

    def forall(self, T, v, dim):
        return T.relu(1 - T.sum(1 - v, dim))

    def exists(self, T, v, dim):
        return T.clamp(T.sum(v, dim), None, 1)
