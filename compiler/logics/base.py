"""What a logic is: a table of operators from atoms and connectives to values.

A logic never sees the IR; the lowering hands it already-computed operand values and a backend
`T` (torch here, sympy for the reference lowering) with the few primitives it may use. So a new
logic is one small class, and the same table serves the loss, the search objective and the
symbolic printout.

The table a logic fills in (every method receives the backend `T` first):

    cmp(T, op, a, b)      an atom a op b (op in <= < >= > == !=) -> value
    and_(T, [x, ...])     n-ary conjunction (n >= 1)        or_(T, [x, ...])   disjunction
    forall(T, v, dim)     conjunction over one axis of v    exists(T, v, dim)  disjunction
    true(T), false(T)     the constants
    to_loss(T, v)         the per-example loss to minimise (>= 0)

There is no negation: the compiler pushes `not` into the atoms first (negation normal form)
and eliminates `A => B` as `(not A) or B`, so a logic's implication is always the
S-implication of its disjunction with the standard negation.

Backend primitives every `T` has: relu abs exp log minimum maximum eq sum prod amin amax const
clamp where logsumexp(v, dim) size(v, dim), relu_sub(a, b, w=0) = relu(a - b) + w * eq(a, b)
and abs_sub(a, b) = |a - b| (DL2's atoms: one native call on CPU tensors), and the flag
`symbolic` (True on the sympy backend: a logic may then skip purely numerical safeguards such
as stability shifts that do not change the value).

What a logic *claims* (`claims`) is what the property-test kit (`robustspec.compiler.testing`)
holds it to: "sound", "complete", "commutative", "associative", "shadow_lifting",
"idempotent", "identity", "absorbing". A check the logic does not claim is still run and
reported, as "not claimed". The last three are the Boolean laws a simplification may apply:
the compiler applies one only under a logic that claims it (compiler/simplify.py), so a
logic's translation is exactly its table, operand for operand, unless it says otherwise.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

CLAIMS = ("sound", "complete", "commutative", "associative", "shadow_lifting", "idempotent",
          "identity", "absorbing")
# the laws a simplification may use (compiler/simplify.py), each a claim the kit checks:
#   idempotent  A and A = A, A or A = A
#   identity    A and true = A, A or false = A
#   absorbing   A and false = false, A or true = true
LAWS = ("idempotent", "identity", "absorbing")


class Logic:
    """Base class. Values are losses (`kind = "loss"`), truth degrees (`"truth"`),
    robustness degrees (`"robustness"`, any real number, >= 0 read as satisfied) or exact
    verdicts (`"boolean"`: the checker, logics/boolean.py)."""

    name: ClassVar[str] = "logic"
    kind: ClassVar[str] = "loss"  # "loss" | "truth" | "robustness"
    # False for a logic whose values have no useful gradient (the exact checker): training
    # refuses it instead of failing inside backward()
    differentiable: ClassVar[bool] = True
    truth_range: ClassVar[str] = "[0, inf), 0 = satisfied"
    # the closed range of values, for the range check: (lo, hi)
    value_range: ClassVar[tuple[float, float]] = (0.0, math.inf)
    # values of "partly satisfied" formulas (open interval), where the kit draws operands from
    partial_range: ClassVar[tuple[float, float]] = (0.0, 10.0)
    # how atoms become values, in words (docs and `describe`)
    atoms: ClassVar[str] = ""
    # what the kit holds this logic to (see CLAIMS)
    claims: ClassVar[frozenset[str]] = frozenset()
    # IR term ops this logic cannot translate (compile error at the operator)
    unsupported: ClassVar[frozenset[str]] = frozenset({"argmax"})

    def cmp(self, T: Any, op: str, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def and_(self, T: Any, xs: list) -> Any:
        raise NotImplementedError

    def or_(self, T: Any, xs: list) -> Any:
        raise NotImplementedError

    def forall(self, T: Any, v: Any, dim: int) -> Any:
        """A conjunction over one axis (finite quantifiers and elementwise comparisons)."""
        raise NotImplementedError

    def exists(self, T: Any, v: Any, dim: int) -> Any:
        raise NotImplementedError

    def true(self, T: Any) -> Any:
        raise NotImplementedError

    def false(self, T: Any) -> Any:
        raise NotImplementedError

    def to_loss(self, T: Any, v: Any) -> Any:
        """Per-example loss to minimise; >= 0. The compiler always passes the backend `T`."""
        if self.kind == "loss":
            return v
        if self.kind == "truth":
            return 1 - v
        if self.kind == "boolean":
            return (~v).to(T.const(1.0).dtype)
        T = T if T is not None else backend_for(v)
        return T.relu(-v)

    def satisfied(self, v: Any) -> Any:
        """Does the value read as "satisfied" (loss 0)? Bool tensor, for tensors `v`."""
        return self.to_loss(backend_for(v), v) == 0

    def options(self) -> dict:
        """The logic's parameters (for repr, docs and the kit's report)."""
        return {}

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v:g}" for k, v in self.options().items())
        return f"{self.name}{'(' + opts + ')' if opts else ''}: values in {self.truth_range}"

    def __repr__(self) -> str:
        opts = " ".join(f"{k}={v:g}" for k, v in self.options().items())
        return f"<logic {self.name}{' ' + opts if opts else ''}>"


# ---------------------------------------------------------------- helpers for logic tables
def fold(f, xs: list):
    """f(...f(f(x0, x1), x2)..., xn): an n-ary operator from a binary one."""
    out = xs[0]
    for x in xs[1:]:
        out = f(out, x)
    return out


# backends for values that are not torch tensors: compiler/symbolic.py adds SympyOps when it
# is imported (a sympy value cannot exist before), so this module imports no lowering
SYMBOLIC_BACKENDS: list = []


def backend_for(v: Any):
    """The backend a value belongs to: SympyOps for sympy expressions, TorchOps otherwise."""
    if getattr(v, "is_symbolic_family", False) or type(v).__module__.startswith("sympy"):
        return SYMBOLIC_BACKENDS[0]()
    from ..ops import TorchOps
    return TorchOps()


def is_symbolic(T: Any) -> bool:
    return bool(getattr(T, "symbolic", False))


def logsumexp_list(T: Any, xs: list):
    """log(sum(exp(x))) over a list of values, elementwise; numerically stable on torch."""
    if len(xs) == 1:
        return xs[0]
    if is_symbolic(T):
        return T.log(sum(T.exp(x) for x in xs))
    m = fold(T.maximum, xs)  # shift: the result (and its gradient) do not depend on it
    # an infinite maximum (STL's true or false among the operands) would give inf - inf = nan;
    # shifting by 0 there gives log(sum(exp(x))) = +inf, or -inf when every operand is -inf
    m = T.where(m.isfinite(), m, 0 * m.nan_to_num())
    return m + T.log(sum(T.exp(x - m) for x in xs))


def violation(T: Any, op: str, a: Any, b: Any, xi: float) -> Any:
    """DL2's violation of an atom: >= 0, and 0 exactly when `a op b` holds (xi > 0 for < > !=)."""
    if op == "<=":
        return T.relu_sub(a, b)
    if op == ">=":
        return T.relu_sub(b, a)
    if op == "<":
        return T.relu_sub(a, b, xi)
    if op == ">":
        return T.relu_sub(b, a, xi)
    if op == "==":
        return T.abs_sub(a, b)
    if op == "!=":
        return xi * T.eq(a, b)
    raise ValueError(op)


def check_xi(name: str, xi: float) -> float:
    if not 0 < xi < float("inf"):
        raise ValueError(f"{name} needs a finite xi > 0 (got {xi}): with xi = 0 a violated "
                         "strict inequality would cost nothing, with inf a satisfied one is nan")
    return float(xi)


class FuzzyLogic(Logic):
    """A t-norm logic whose atoms are the truth `1 / (1 + v)`, v the DL2 violation of the atom.

    Subclasses give the connectives; the atom translation, `xi`, `true`/`false` and the
    truth range are shared.
    """

    kind = "truth"
    truth_range = "[0, 1]: 1 = true (exactly when satisfied)"
    value_range = (0.0, 1.0)
    partial_range = (0.0, 1.0)
    atoms = "1 / (1 + v), v the DL2 violation (xi * [a = b] for strictness)"

    def __init__(self, xi: float = 1.0):
        self.xi = check_xi(self.name, xi)

    def options(self):
        return {"xi": self.xi}

    def cmp(self, T, op, a, b):
        return 1 / (1 + violation(T, op, a, b, self.xi))

    def true(self, T):
        return T.const(1.0)

    def false(self, T):
        return T.const(0.0)
