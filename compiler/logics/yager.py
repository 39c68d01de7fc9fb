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
flat). The p-norms are taken as m * (sum (u/m)^p)^(1/p) with m the largest term: exact, no
underflow of u^p for large p, and no infinite derivative of the root at 0.
"""
from __future__ import annotations

from .base import FuzzyLogic, fold, is_symbolic


class Yager(FuzzyLogic):
    name = "yager"
    truth_range = "[0, 1]: 1 = true (also for some unsatisfied disjunctions: not sound)"
    claims = frozenset({"complete", "commutative", "associative", "identity", "absorbing"})

    def __init__(self, p: float = 2.0, xi: float = 1.0):
        if not 1 <= p < float("inf"):
            raise ValueError(f"yager needs a finite p >= 1 (got {p}): for p < 1 the operators "
                             "are not a t-norm and t-conorm, and p = inf is Goedel logic "
                             "(logic='goedel')")
        super().__init__(xi)
        self.p = float(p)

    def options(self):
        return {"p": self.p, "xi": self.xi}

    def _norm(self, T, us: list):
        """(sum u^p)^(1/p) of non-negative values, elementwise over the list."""
        if is_symbolic(T):
            total = sum(u ** self.p for u in us)
            return total ** (1 / self.p) if self.p != 1 else total
        if self.p == 1:
            return sum(us)
        m = fold(T.maximum, us)
        return self._scaled(T, m, sum((u / T.where(m > 0, m, 1 + 0 * m)) ** self.p for u in us))

    def _norm_axis(self, T, u, dim):
        if is_symbolic(T):
            total = T.sum(u ** self.p, dim)
            return total ** (1 / self.p) if self.p != 1 else total
        if self.p == 1:
            return T.sum(u, dim)
        m = T.amax(u, dim)
        safe = T.where(m > 0, m, 1 + 0 * m).unsqueeze(dim)
        return self._scaled(T, m, T.sum((u / safe) ** self.p, dim))

    def _scaled(self, T, m, r):
        """m * r^(1/p) with m the largest term, so r >= 1 wherever m > 0: no underflow of u^p
        for large p (a p-norm taken directly is 0 for u = 1/3, p = 100 in float32) and no
        infinite derivative of the root at 0."""
        return T.where(m > 0, m * T.clamp(r, 1, None) ** (1 / self.p), 0 * m)

    def and_(self, T, xs):
        if len(xs) == 1:
            return xs[0]
        return 1 - T.clamp(self._norm(T, [1 - x for x in xs]), None, 1)

    def or_(self, T, xs):
        if len(xs) == 1:
            return xs[0]
        return T.clamp(self._norm(T, list(xs)), None, 1)

    def forall(self, T, v, dim):
        return 1 - T.clamp(self._norm_axis(T, 1 - v, dim), None, 1)

    def exists(self, T, v, dim):
        return T.clamp(self._norm_axis(T, v, dim), None, 1)
