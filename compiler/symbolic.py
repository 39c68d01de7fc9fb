"""Lowering the IR to sympy: a property's loss under a logic as a formula.

The same Logic tables as the torch lowering, over a sympy backend (`SympyOps`), so `explain`
prints exactly what is trained, and the test suite can check the torch lowering against this
one (two independent interpreters of the IR that share only the logic's table).

How the tensor layout of the torch lowering is rendered here:
- an axis (a finite quantifier `forall j in range(3)`, or the elements of a tensor in an
  elementwise comparison `v >= a`) is a `Family`: a body with a bound integer index and its
  range. The logic's `forall`/`exists` code runs on it unchanged, and the backend turns the
  reductions into big operators: `sum` -> Sum, `prod` -> Product, `amin`/`amax` -> RangeMin /
  RangeMax, `logsumexp` -> log(Sum(exp(.))). `.doit()` expands them when the range is known,
  which is how `evaluate` computes numbers;
- tensors are opaque symbols (`f(x)`, `norm_inf(...)`); an element of a tensor-valued term is
  `Indexed`, e.g. v[i], `f(x)[i]`;
- a continuous quantifier is its body at the point the search finds (the variable printed
  `x*`).
"""
from __future__ import annotations

import math

import sympy as sp
from sympy.concrete.expr_with_intlimits import ExprWithIntLimits
from sympy.printing.pretty.stringpict import prettyForm

from .ir import CONT_QUANT, IDX_QUANT, N
from .logics import Logic, get_logic
from .logics.base import SYMBOLIC_BACKENDS


# ---------------------------------------------------------------- big min / max
class _RangeExtremum(ExprWithIntLimits):
    """min (or max) of a body over integer ranges, unevaluated until `.doit()`.

    Like Sum, nested ones merge: min_j min_k f is one RangeMin with two limits (innermost first).
    """

    __slots__ = ()
    _fn = sp.Min
    _word = "min"

    def __new__(cls, function, *symbols, **assumptions):
        function = sp.sympify(function)
        indices = {lim[0] for lim in symbols if isinstance(lim, (tuple, sp.Tuple))}
        if not (function.free_symbols & indices) and not function.has(*indices):
            return function  # the extremum of a constant over a (non-empty) range
        return super().__new__(cls, function, *symbols, **assumptions)

    def doit(self, **hints):
        f = self.function
        if hints.get("deep", True):
            f = f.doit(**hints)
        terms = [f]
        for j, lo, hi in self.limits:  # innermost first
            n = hi - lo
            if not n.is_Integer:
                return self.func(f, *self.limits)
            terms = [t.subs(j, lo + i) for t in terms for i in range(int(n) + 1)]
        return self._fn(*terms)

    def _eval_is_extended_real(self):
        return self.function.is_extended_real

    def _eval_evalf(self, prec):
        done = self.doit()
        return None if isinstance(done, _RangeExtremum) else done._eval_evalf(prec)

    def _limits_text(self, printer, sep):
        return sep.join(f"{printer._print(j)}={printer._print(lo)}..{printer._print(hi)}"
                        for j, lo, hi in reversed(self.limits))

    def _sympystr(self, printer):
        return f"{self._word}_{{{self._limits_text(printer, ', ')}}}({printer._print(self.function)})"

    def _latex(self, printer):
        heads = " ".join(rf"\{self._word}_{{{printer._print(j)}={printer._print(lo)}}}^{{{printer._print(hi)}}}"
                         for j, lo, hi in reversed(self.limits))
        return f"{heads} {printer.parenthesize(self.function, 1000)}"

    def _pretty(self, printer):
        body = printer._print(self.function)
        body = prettyForm(*body.parens())
        head = prettyForm(f"{self._word}[{self._limits_text(printer, ', ')}]")
        return prettyForm(*body.left(head))


class RangeMin(_RangeExtremum):
    __slots__ = ()
    _fn = sp.Min
    _word = "min"


class RangeMax(_RangeExtremum):
    __slots__ = ()
    _fn = sp.Max
    _word = "max"


# ---------------------------------------------------------------- families (symbolic axes)
class Family:
    """A value along one axis: `body` with the integer `index` running over lo..hi.

    The sympy stand-in for a tensor axis. Arithmetic and the backend's elementwise primitives
    map over the body; the backend's reductions (sum, prod, amin, amax, logsumexp) turn it into
    a big operator.
    """

    is_symbolic_family = True

    def __init__(self, body, index: sp.Symbol, lo, hi):
        self.body, self.index, self.lo, self.hi = sp.sympify(body), index, sp.sympify(lo), sp.sympify(hi)

    @property
    def limits(self):
        return (self.index, self.lo, self.hi)

    def map(self, f) -> "Family":
        return Family(f(self.body), self.index, self.lo, self.hi)

    def _bin(self, other, f) -> "Family":
        if isinstance(other, Family):
            if other.index != self.index:
                raise ValueError("cannot combine values along different axes")
            other = other.body
        return Family(f(self.body, other), self.index, self.lo, self.hi)

    def __add__(self, o): return self._bin(o, lambda a, b: a + b)
    def __radd__(self, o): return self._bin(o, lambda a, b: b + a)
    def __sub__(self, o): return self._bin(o, lambda a, b: a - b)
    def __rsub__(self, o): return self._bin(o, lambda a, b: b - a)
    def __mul__(self, o): return self._bin(o, lambda a, b: a * b)
    def __rmul__(self, o): return self._bin(o, lambda a, b: b * a)
    def __truediv__(self, o): return self._bin(o, lambda a, b: a / b)
    def __rtruediv__(self, o): return self._bin(o, lambda a, b: b / a)
    def __pow__(self, o): return self._bin(o, lambda a, b: a ** b)
    def __rpow__(self, o): return self._bin(o, lambda a, b: b ** a)
    def __neg__(self): return self.map(lambda a: -a)

    def __repr__(self) -> str:
        return f"Family({self.body}, {self.limits})"


def _lift(f):
    """An elementwise sympy function that also maps over Families."""
    def lifted(*args):
        fam = next((a for a in args if isinstance(a, Family)), None)
        if fam is None:
            return f(*args)
        bodies = []
        for a in args:
            if isinstance(a, Family):
                if a.index != fam.index:
                    raise ValueError("cannot combine values along different axes")
                bodies.append(a.body)
            else:
                bodies.append(a)
        return Family(f(*bodies), fam.index, fam.lo, fam.hi)
    return lifted


def _const(x):
    x = float(x)
    if math.isinf(x):
        return sp.oo if x > 0 else -sp.oo
    return sp.Integer(int(x)) if x.is_integer() else sp.Float(x)


def _reduce(big):
    def reduce(v, dim=-1):
        if not isinstance(v, Family):
            return v  # a value with no axis left: the reduction over one element
        return big(v.body, v.limits)
    return staticmethod(reduce)


class SympyOps:
    """The primitives a Logic may use, on sympy expressions (and Families for axes).

    evaluate=False builds Max/Min unevaluated: much faster on large formulas (sympy's Max/Min
    simplify their arguments pairwise), for numeric evaluation rather than display.
    """

    symbolic = True

    def __init__(self, evaluate: bool = True):
        self.evaluate = evaluate
        ev = evaluate
        self.relu = _lift(lambda e: sp.Max(e, 0, evaluate=ev))
        self.minimum = _lift(lambda a, b: sp.Min(a, b, evaluate=ev))
        self.maximum = _lift(lambda a, b: sp.Max(a, b, evaluate=ev))

        def clamp(v, lo=None, hi=None):
            if lo is not None:
                v = sp.Max(v, lo, evaluate=ev)
            if hi is not None:
                v = sp.Min(v, hi, evaluate=ev)
            return v
        self.clamp = _lift(clamp)

    abs = staticmethod(_lift(sp.Abs))

    def relu_sub(self, a, b, w=0):
        r = self.relu(a - b)
        return r + w * self.eq(a, b) if w else r

    def abs_sub(self, a, b):
        return self.abs(a - b)

    exp = staticmethod(_lift(sp.exp))
    log = staticmethod(_lift(sp.log))
    eq = staticmethod(_lift(sp.KroneckerDelta))
    const = staticmethod(_const)
    sum = _reduce(sp.Sum)
    prod = _reduce(sp.Product)
    amin = _reduce(RangeMin)
    amax = _reduce(RangeMax)

    @staticmethod
    def where(c, a, b):
        return sp.Piecewise((a, c), (b, True))

    @staticmethod
    def logsumexp(v, dim=-1):
        if not isinstance(v, Family):
            return v
        return sp.log(sp.Sum(sp.exp(v.body), v.limits))

    @staticmethod
    def size(v, dim=-1):
        if not isinstance(v, Family):
            return sp.Integer(1)
        return v.hi - v.lo + 1


_FUN: dict[str, sp.Function] = {}


SYMBOLIC_BACKENDS.append(SympyOps)  # logics find it by value type (no import cycle)


def _fn(name: str):
    if name not in _FUN:
        _FUN[name] = sp.Function(name)
    return _FUN[name]


_ELEMENTWISE = {"add", "sub", "mul", "div", "neg", "abs", "exp", "log", "max2", "min2"}
_ELEMENT_NAMES = ("i", "k", "l", "m", "p", "q")


def _is_tensor(n: N) -> bool:
    """Is the term a tensor (compared elementwise)? An unknown shape counts as a tensor, except
    an indexed value (`f(x)[y]` is a scalar for the usual vector-valued network) and arithmetic
    on such values."""
    if n.ty.kind != "real":
        return False
    if n.ty.shape is not None:
        return n.ty.shape != ()
    if n.op == "index":
        return False
    if n.op in _ELEMENTWISE:
        return any(_is_tensor(a) for a in n.args)
    return n.op not in ("const",)


class SympyLowering:
    """IR -> sympy under a logic: the value (loss, truth or robustness) of a formula."""

    def __init__(self, logic: Logic | None, starred: set[str] = frozenset(), evaluate: bool = True):
        self.logic = logic
        self.T = SympyOps(evaluate)
        self.starred = set(starred)
        self._bound: list[str] = []  # index variables in scope (to name element indices)
        self._memo: dict[tuple, object] = {}  # (node, names in scope) -> value: linear in the DAG

    # ------------------------------------------------------------ terms
    def term(self, n: N, elem: sp.Symbol | None = None):
        """The term; with `elem`, its element `elem` (tensor-valued subterms are indexed)."""
        op, a = n.op, n.args
        if elem is not None and _is_tensor(n):
            if op in _ELEMENTWISE:
                return self._term_op(n, [self.term(x, elem) for x in a])
            return sp.Indexed(sp.IndexedBase(sp.sstr(self.term(n))), elem)
        if op == "const":
            return SympyOps.const(n.attr)
        if op == "int":
            return sp.Integer(n.attr)
        if op == "var":
            name, role = n.attr
            if role == "index":
                return sp.Symbol(name, integer=True)
            return sp.Symbol(name + "*" if name in self.starred else name)
        if op == "apply":
            return _fn(n.attr)(self.term(a[0]))
        if op in _ELEMENTWISE:
            return self._term_op(n, [self.term(x, elem if not _is_tensor(x) else None) for x in a])
        if op == "index":
            return sp.Indexed(sp.IndexedBase(sp.sstr(self.term(a[0]))), self.term(a[1]))
        return _fn(op)(*[self.term(x) for x in a])

    @staticmethod
    def _term_op(n: N, xs: list):
        op = n.op
        if op == "neg":
            return -xs[0]
        if op in ("abs", "exp", "log"):
            return {"abs": sp.Abs, "exp": sp.exp, "log": sp.log}[op](xs[0])
        x, y = xs
        return {"add": lambda: x + y, "sub": lambda: x - y, "mul": lambda: x * y,
                "div": lambda: x / y, "max2": lambda: sp.Max(x, y),
                "min2": lambda: sp.Min(x, y)}[op]()

    def _element_index(self, shapes) -> tuple[sp.Symbol, object]:
        name = next((c for c in _ELEMENT_NAMES if c not in self._bound), f"i{len(self._bound)}")
        size = None
        for s in shapes:
            if s in ((), None):
                continue
            if all(isinstance(d, int) for d in s):
                k = math.prod(s)
            else:
                k = sp.Mul(*[sp.Integer(d) if isinstance(d, int) else sp.Symbol(str(d)) for d in s])
            size = k if size is None else (size if isinstance(size, int) and isinstance(k, int)
                                           and size >= k else k)
        return sp.Symbol(name, integer=True), (sp.Symbol("n") if size is None else sp.sympify(size))

    # ------------------------------------------------------------ formulas
    def formula(self, n: N):
        key = (id(n), tuple(self._bound))
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = self._formula(n)
        return got

    def _formula(self, n: N):
        lg, T, op = self.logic, self.T, n.op
        if lg is None:
            raise ValueError("symbolic lowering needs a logic")
        if op == "true":
            return lg.true(T)
        if op == "false":
            return lg.false(T)
        if op == "cmp":
            cop, over = n.attr
            if any(_is_tensor(x) for x in n.args):  # elementwise (unknown shapes print as scalars)
                e, size = self._element_index([x.ty.shape for x in n.args])
                self._bound.append(str(e))
                try:
                    value = lg.cmp(T, cop, self.term(n.args[0], e), self.term(n.args[1], e))
                finally:
                    self._bound.pop()
                fam = Family(value, e, 0, size - 1)
                return lg.forall(T, fam, -1) if over == "all" else lg.exists(T, fam, -1)
            if all(x.ty.kind == "int" for x in n.args):  # labels and indices: a crisp atom
                rel = {"<=": sp.Le, "<": sp.Lt, ">=": sp.Ge, ">": sp.Gt, "==": sp.Eq,
                       "!=": sp.Ne}[cop](self.term(n.args[0]), self.term(n.args[1]))
                return sp.Piecewise((lg.true(T), rel), (lg.false(T), True))
            return lg.cmp(T, cop, self.term(n.args[0]), self.term(n.args[1]))
        if op in ("and", "or"):
            items = [self.formula(x) for x in n.args]
            return lg.and_(T, items) if op == "and" else lg.or_(T, items)
        if op in IDX_QUANT:
            j = sp.Symbol(n.attr, integer=True)
            s = n.args[0]
            upper = (sp.Symbol("K") if s.op == "classes" and s.attr[1] is None else
                     sp.Integer(s.attr[1]) if s.op == "classes" else self.term(s.args[0])) - 1
            self._bound.append(n.attr)
            try:
                body = self.formula(n.args[1])
            finally:
                self._bound.pop()
            fam = Family(body, j, 0, upper)
            return lg.forall(T, fam, -1) if op == "forall_idx" else lg.exists(T, fam, -1)
        if op in CONT_QUANT:
            inner = SympyLowering(lg, self.starred | set(n.attr.vars), self.T.evaluate)
            inner._bound = list(self._bound)
            return inner.formula(n.args[0])
        raise ValueError(op)


def tidy(expr):
    """Floats that are simple fractions (the 1.0 of xi = 1, the 2.0 of p = 2) as rationals."""
    expr = sp.sympify(expr)
    subs = {}
    for f in expr.atoms(sp.Float):
        r = sp.Rational(float(f)).limit_denominator(1000)
        if abs(float(r) - float(f)) <= 1e-12 * max(1.0, abs(float(f))):
            subs[f] = r
    return expr.xreplace(subs) if subs else expr


def value_expression(formula: N, logic: Logic | str, evaluate: bool = True):
    """The value of a formula under a logic (a loss for DL2, a truth degree for the fuzzy
    logics, a robustness degree for STL), as a sympy expression. evaluate=False leaves
    Max/Min unsimplified (fast to build; for `evaluate` rather than for reading)."""
    if evaluate:
        return tidy(SympyLowering(get_logic(logic)).formula(formula))
    with sp.evaluate(False):  # a plain expression tree: no simplification while it is built
        return SympyLowering(get_logic(logic), evaluate=False).formula(formula)


def loss_expression(formula: N, logic: Logic | str):
    """The value of a formula under a logic as a sympy expression (kept for `explain`: for a
    loss logic this is the loss; convert other kinds with `symbolic_loss`)."""
    return value_expression(formula, logic)


def symbolic_loss(formula: N, logic: Logic | str):
    """The loss that training minimises (the logic's `to_loss` of the value), symbolically."""
    lg = get_logic(logic)
    return tidy(lg.to_loss(SympyOps(), value_expression(formula, lg)))


def evaluate(expr, values: dict) -> float:
    """A number from an expression, by interpreting it numerically (float64) with `values`.

    `values` maps names to numbers, and tensor arguments to sequences (v -> [v0, v1, v2]
    binds v[0], v[1], v[2]). Big operators (Sum, Product, RangeMin, RangeMax) run over their
    ranges with the index bound; nothing is simplified on the way, so this is an interpreter
    of the expression independent of torch (and of sympy's own simplification). For exact
    arithmetic use `expand(expr)` and substitute.
    """
    return _Numeric(values).eval(sp.sympify(expr), {})


_BIG = {sp.Sum: sp.Add, sp.Product: sp.Mul, RangeMin: sp.Min, RangeMax: sp.Max}


def expand(expr):
    """The expression with every big operator over a known range written out term by term,
    and nothing else simplified (sympy's own `.doit()` also simplifies every Max/Min, which is
    slow on large formulas). Substitute numbers and call `.doit()` for an exact value."""
    def rec(e):
        big = next((b for b in _BIG if isinstance(e, b)), None)
        if big is not None:
            body = rec(e.function)
            terms = [body]
            for j, lo, hi in e.limits:  # innermost first
                if not (lo.is_number and hi.is_number):
                    return e.func(body, *e.limits)
                lo_i, hi_i = int(round(float(lo.evalf()))), int(round(float(hi.evalf())))
                terms = [t.xreplace({j: sp.Integer(k)}) for t in terms
                         for k in range(lo_i, hi_i + 1)]
            return _BIG[big](*terms)
        if not e.args or isinstance(e, sp.Indexed):
            return e
        return e.func(*[rec(a) for a in e.args])
    with sp.evaluate(False):
        return rec(sp.sympify(expr))


class _Numeric:
    def __init__(self, values: dict):
        self.scalars = {k: float(v) for k, v in values.items() if not isinstance(v, (list, tuple))}
        self.tensors = {k: [float(x) for x in v] for k, v in values.items()
                        if isinstance(v, (list, tuple))}

    def eval(self, e, env: dict) -> float:
        if e.is_Number or e in (sp.oo, -sp.oo):
            return float(e)
        if isinstance(e, sp.Symbol):
            if e in env:
                return float(env[e])
            return self.scalars[e.name]
        if isinstance(e, sp.Indexed):
            k = int(round(self.eval(e.indices[0], env)))
            return self.tensors[str(e.base.label)][k]
        if isinstance(e, sp.Add):
            return math.fsum(self.eval(a, env) for a in e.args)
        if isinstance(e, sp.Mul):
            out = 1.0
            for a in e.args:
                out *= self.eval(a, env)
            return out
        if isinstance(e, sp.Pow):
            b, x = self.eval(e.base, env), self.eval(e.exp, env)
            try:
                return b ** x if not (b == 0 and x < 0) else math.inf
            except OverflowError:
                return math.inf
        if isinstance(e, sp.Max):
            return max(self.eval(a, env) for a in e.args)
        if isinstance(e, sp.Min):
            return min(self.eval(a, env) for a in e.args)
        if isinstance(e, sp.Abs):
            return abs(self.eval(e.args[0], env))
        if isinstance(e, sp.exp):
            x = self.eval(e.args[0], env)
            try:
                return math.exp(x)
            except OverflowError:
                return math.inf
        if isinstance(e, sp.log):
            x = self.eval(e.args[0], env)
            return math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)
        if isinstance(e, sp.KroneckerDelta):
            return 1.0 if self.eval(e.args[0], env) == self.eval(e.args[1], env) else 0.0
        if isinstance(e, (sp.Sum, sp.Product, RangeMin, RangeMax)):
            vals = [self.eval(e.function, b) for b in self._bindings(e.limits, env)]
            if isinstance(e, sp.Sum):
                return math.fsum(vals)
            if isinstance(e, sp.Product):
                return math.prod(vals)
            return min(vals) if isinstance(e, RangeMin) else max(vals)
        if isinstance(e, sp.Piecewise):
            for value, cond in e.args:
                if cond is sp.true or bool(cond.xreplace(self._subs(cond, env))):
                    return self.eval(value, env)
            return math.nan
        raise TypeError(f"cannot evaluate {type(e).__name__}: {e}")

    def _bindings(self, limits, env):
        envs = [env]
        for j, lo, hi in limits:  # innermost first; ranges do not depend on each other here
            envs = [{**b, j: k} for b in envs
                    for k in range(int(self.eval(lo, b)), int(self.eval(hi, b)) + 1)]
        return envs

    def _subs(self, e, env):
        return {s: sp.Float(self.eval(s, env)) for s in e.atoms(sp.Symbol, sp.Indexed)}


__all__ = ["SympyOps", "SympyLowering", "Family", "RangeMin", "RangeMax", "value_expression",
           "loss_expression", "symbolic_loss", "evaluate", "expand", "tidy"]
