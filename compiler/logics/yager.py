"""Yager fuzzy logic with parameter p >= 1: truth degrees in [0, 1], 1 = true.

    A and B -> max(0, 1 - ((1 - A)^p + (1 - B)^p)^(1/p))
    A or B  -> min(1, (A^p + B^p)^(1/p))
    forall / exists: the same with the sum over the axis
    A => B  -> min(1, ((1 - A)^p + B^p)^(1/p))   (the Yager S-implication; A => B is (not A) or B)
    to_loss -> 1 - truth

p = 1 is Lukasiewicz logic and p -> inf tends to Goedel logic. Atoms: t = 1 / (1 + v), v the DL2
violation (xi * [a = b] for strict < > and for !=).

Not sound for any finite p: (0.8^p + 0.8^p)^(1/p) >= 1 once p <= log 2 / log 1.25 ~ 3.1, and
for larger p nearer-true disjuncts do the same. Complete: a true disjunct makes the sum >= 1, and
true conjuncts give ((1 - 1)^p ...)^(1/p) = 0. Not shadow-lifting (the clipping at 0 and 1 is
flat). The p-th root has an infinite derivative at 0, so the torch side takes the root of
max(s, 1e-30) where s > 0 and 0 where s = 0 (a gradient-safe root; the value differs from the
exact root by at most 1e-30^(1/p)).
"""
from __future__ import annotations

from .base import FuzzyLogic, is_symbolic

_TINY = 1e-30


class Yager(FuzzyLogic):
    name = "yager"
    truth_range = "[0, 1]: 1 = true (also for some unsatisfied disjunctions: not sound)"
    claims = frozenset({"complete", "commutative", "associative"})

    def __init__(self, p: float = 2.0, xi: float = 1.0):
        if not p >= 1:
            raise ValueError(f"yager needs p >= 1 (got {p}): for p < 1 the operators are not a "
                             "t-norm and t-conorm")
        super().__init__(xi)
        self.p = float(p)

    def options(self):
        return {"p": self.p, "xi": self.xi}

    def _root(self, T, s):
        if is_symbolic(T):
            return s ** (1 / self.p) if self.p != 1 else s
        if self.p == 1:
            return s
        return T.where(s > 0, T.clamp(s, _TINY, None) ** (1 / self.p), 0 * s)

    def and_(self, T, xs):
        if len(xs) == 1:
            return xs[0]
        s = sum((1 - x) ** self.p for x in xs)
        return 1 - T.clamp(self._root(T, s), None, 1)

    def or_(self, T, xs):
        if len(xs) == 1:
            return xs[0]
        s = sum(x ** self.p for x in xs)
        return T.clamp(self._root(T, s), None, 1)

    def forall(self, T, v, dim):
        return 1 - T.clamp(self._root(T, T.sum((1 - v) ** self.p, dim)), None, 1)

    def exists(self, T, v, dim):
        return T.clamp(self._root(T, T.sum(v ** self.p, dim)), None, 1)
