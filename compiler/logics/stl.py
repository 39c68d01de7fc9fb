"""STL-style smooth robustness with temperature nu > 0: values in (-inf, inf), >= 0 = satisfied.

    a <= b  -> b - a                    a >= b  -> a - b
    a <  b  -> b - a - xi * [a = b]     a >  b  -> a - b - xi * [a = b]
    a == b  -> -|a - b|                 a != b  -> |a - b| - xi * [a = b]
    A and B -> softmin_nu = -nu * log(exp(-A/nu) + exp(-B/nu))
    A or B  -> log-mean-exp = nu * log((exp(A/nu) + exp(B/nu)) / 2)
    forall / exists: the same over the axis (n terms, the mean over n)
    true -> +inf, false -> -inf
    to_loss -> relu(-value)

The robustness of an atom is the signed distance to its boundary, as in signal temporal logic;
the strict and != atoms take xi off at equality so that "value >= 0" holds exactly when the
atom does. Both connectives are smooth under-approximations of the exact min / max
(softmin <= min and log-mean-exp <= max, each within nu * log n), so value >= 0, i.e. loss 0,
implies the checker says true (sound), while a satisfied formula can still have a small
negative value, i.e. a positive loss (not complete: e.g. x or y with x = 0, y = -5). The usual
smooth max nu * log(sum exp(x / nu)) would over-approximate and lose soundness; the mean makes
the disjunction of one term the term itself. Every conjunct gets a softmax weight > 0 of the
gradient (shadow-lifting); softmin is commutative but not associative.
"""
from __future__ import annotations

import math

from .base import Logic, check_xi, is_symbolic, logsumexp_list


class STL(Logic):
    name = "stl"
    kind = "robustness"
    truth_range = "(-inf, inf): >= 0 reads as satisfied (sound, not complete); loss relu(-value)"
    value_range = (-math.inf, math.inf)
    partial_range = (-5.0, 5.0)
    atoms = "signed distance to the boundary (b - a for a <= b), xi off at equality for < > !="
    claims = frozenset({"sound", "commutative", "shadow_lifting", "absorbing"})

    def __init__(self, nu: float = 1.0, xi: float = 1.0):
        if not 0 < nu < float("inf"):
            raise ValueError(f"stl needs a finite temperature nu > 0 (got {nu})")
        self.nu = float(nu)
        self.xi = check_xi("stl", xi)

    def options(self):
        return {"nu": self.nu, "xi": self.xi}

    def cmp(self, T, op, a, b):
        if op == "<=":
            return b - a
        if op == ">=":
            return a - b
        if op == "<":
            return b - a - self.xi * T.eq(a, b)
        if op == ">":
            return a - b - self.xi * T.eq(a, b)
        if op == "==":
            return -T.abs_sub(a, b)
        if op == "!=":
            return T.abs_sub(a, b) - self.xi * T.eq(a, b)
        raise ValueError(op)

    def and_(self, T, xs):
        if len(xs) == 1:
            return xs[0]
        nu = self.nu
        return -nu * logsumexp_list(T, [-x / nu for x in xs])

    def or_(self, T, xs):
        if len(xs) == 1:
            return xs[0]
        nu = self.nu
        n = len(xs)
        return nu * (logsumexp_list(T, [x / nu for x in xs]) - (T.log(T.const(n)) if is_symbolic(T)
                                                                 else math.log(n)))

    def forall(self, T, v, dim):
        nu = self.nu
        return -nu * T.logsumexp(-v / nu, dim)

    def exists(self, T, v, dim):
        nu = self.nu
        n = T.size(v, dim)
        log_n = math.log(n) if isinstance(n, int) else T.log(n)
        return nu * (T.logsumexp(v / nu, dim) - log_n)

    def true(self, T):
        return T.const(math.inf)

    def false(self, T):
        return T.const(-math.inf)

    def to_loss(self, T, v):
        if T is None:
            from .base import backend_for
            T = backend_for(v)
        return T.relu(-v)
