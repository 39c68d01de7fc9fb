"""Product fuzzy logic (Reichenbach implication): truth degrees in [0, 1], 1 = true.

    A and B -> A * B                  A or B -> A + B - A * B = 1 - (1 - A)(1 - B)
    forall  -> product over the axis  exists -> 1 - product of (1 - x) over the axis
    A => B  -> 1 - A + A * B          (Reichenbach: the S-implication of the probabilistic sum
                                       with 1 - x, since A => B is compiled as (not A) or B)
    to_loss -> 1 - truth

Atoms: t = 1 / (1 + v), v the DL2 violation (xi * [a = b] for strict < > and for !=); t = 1
exactly when the atom holds. A product of degrees in [0, 1] is 1 only when every factor is, so
the logic is sound and complete; d(A * B)/dA = B > 0 whenever B > 0, so it is shadow-lifting.
In floating point a disjunction of very many nearly-true disjuncts can round to 1 (1 - 1e-17
is 1.0): the kit draws assignments on a grid where every violated atom has truth <= 0.8.
"""
from __future__ import annotations

from .base import FuzzyLogic, fold


class Product(FuzzyLogic):
    name = "product"
    truth_range = "[0, 1]: 1 = true (exactly when satisfied)"
    claims = frozenset({"sound", "complete", "commutative", "associative", "shadow_lifting",
                       "identity",
                       "absorbing"})

    def and_(self, T, xs):
        return fold(lambda x, y: x * y, xs)

    def or_(self, T, xs):
        if len(xs) == 1:
            return xs[0]
        return 1 - fold(lambda x, y: x * y, [1 - x for x in xs])

    def forall(self, T, v, dim):
        return T.prod(v, dim)

    def exists(self, T, v, dim):
        return 1 - T.prod(1 - v, dim)
