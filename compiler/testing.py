"""A property-test kit for translation rules: point it at any logic, built in or your own.

    from robustspec.compiler.testing import run_kit, run_kit_matrix
    print(run_kit("goedel"))                       # one logic: each check, holds or not
    print(run_kit_matrix(["dl2", "goedel"]))       # a markdown matrix, logic x check

Checks (each returns a `CheckResult`: holds, counterexample text, and whether the logic
claims the property in `Logic.claims`; a check the logic does not claim is still run and
reported as "not claimed"):

    range          values within the logic's `value_range`, losses >= 0, never NaN
    sound          loss 0 (truth 1, robustness >= 0) only where the checker says true
    complete       the converse: where the checker says true, the loss is 0
    nnf            negation normal form and implication elimination preserve the checker's
                   verdict (the compiled checker against a direct evaluation of the formula as
                   written, with not, => and <=>: a check of the compiler, the same for every
                   logic)
    quantifier     forall/exists over an axis equals the n-ary and/or of its slices (the
                   lowering relies on it: tensor comparisons and `forall j` are axes)
    commutative    and/or do not depend on the order of their operands
    associative    and(and(x, y), z) = and(x, and(y, z)) = and(x, y, z), the same for or
    shadow_lifting d and(x1..xn) / d xi > 0 wherever every xi is partly satisfied
    idempotent     A and A = A and A or A = A, compiled (the formula as a user writes it)
    identity       A and true = A and A or false = A, compiled
    absorbing      A and false = false and A or true = true, compiled
    search_sound   a point the PGD search returns lies in the domain, and if the search says it
                   is a counterexample (objective 0), the checker says the body is false there

The random formulas are well-typed spec text over a fixed small signature
`a : Real, b : Real, c : Real, v : Tensor[3]`: comparisons of small terms, tensor comparisons
(`v >= a`), not, and, or, =>, <=> and finite quantifiers `forall j in range(3)`. Assignments
are drawn on a grid of quarters in [-1, 1] (exact in binary floating point), so every violated
atom is violated by at least 1/4 and the checks test the logic, not float rounding.
Everything runs outside pytest (hypothesis's `find`, with a fixed seed), and the strategies
are public for your own `@given` tests.
"""
from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

try:
    from hypothesis import HealthCheck, Phase, find, settings
    from hypothesis import strategies as st
    from hypothesis.errors import NoSuchExample
except ImportError:  # hypothesis is the `kit` extra, not a dependency of robustspec
    from robustspec.dsl.errors import MissingExtra
    raise MissingExtra("kit", "hypothesis", "the property-test kit (robustspec.compiler.testing)") \
        from None

from .logics import BUILTIN_LOGICS, Logic, get_logic
from .lower import TorchOps
from .search import PGD

T = TorchOps()

# ---------------------------------------------------------------- the signature
SIGNATURE = (("a", "Real"), ("b", "Real"), ("c", "Real"), ("v", "Tensor[3]"))
SCALARS = ("a", "b", "c")
VECTOR = "v"
VECTOR_SIZE = 3
# quarters in [-1, 1], 0 first so that shrinking goes towards it
GRID = (0.0, 0.25, -0.25, 0.5, -0.5, 0.75, -0.75, 1.0, -1.0)
CONSTANTS = (0.0, 0.5, 1.0, -0.5, 0.25)
COMPARISONS = ("<=", "<", ">=", ">", "==", "!=")
INDEX_NAMES = ("j", "k")
DTYPE = torch.float64

# Formulas and terms are tuples:
#   terms:    ("var", name) ("const", x) ("elem", k | index-name) ("add", t, u) ("sub", t, u)
#   formulas: ("cmp", op, t, u) ("vcmp", op, t)  [v op t, elementwise over all of v]
#             ("true",) ("false",) ("not", f) ("and", f, g) ("or", f, g) ("implies", f, g)
#             ("iff", f, g) ("forall", j, f) ("exists", j, f)  [j in range(3)]


# ---------------------------------------------------------------- strategies
@st.composite
def terms(draw, bound: tuple[str, ...] = (), depth: int = 1):
    """A scalar term: a variable, a constant, an element v[k] or v[j], or a sum/difference."""
    leaves = [st.tuples(st.just("var"), st.sampled_from(SCALARS)),
              st.tuples(st.just("const"), st.sampled_from(CONSTANTS)),
              st.tuples(st.just("elem"), st.sampled_from(tuple(range(VECTOR_SIZE)) + bound))]
    if depth <= 0:
        return draw(st.one_of(*leaves))
    kind = draw(st.sampled_from(("leaf", "leaf", "add", "sub")))
    if kind == "leaf":
        return draw(st.one_of(*leaves))
    return (kind, draw(terms(bound, depth - 1)), draw(terms(bound, depth - 1)))


@st.composite
def formulas(draw, max_depth: int = 3, bound: tuple[str, ...] = (), quantifiers: bool = True,
             vectors: bool = True, constants: bool = True, max_quantifiers: int = 2):
    """A well-typed formula over SIGNATURE (see the module docstring for its shape).

    quantifiers: allow `forall/exists j in range(3)` (nested at most max_quantifiers deep);
    vectors: allow elementwise comparisons `v op t`; constants: allow `true` and `false`.
    """
    atoms = [st.tuples(st.just("cmp"), st.sampled_from(COMPARISONS), terms(bound), terms(bound))]
    if vectors:
        atoms.append(st.tuples(st.just("vcmp"), st.sampled_from(COMPARISONS), terms(bound, 0)))
    if max_depth <= 0:
        return draw(st.one_of(*atoms))
    kinds = ["atom", "atom", "not", "and", "or", "implies", "iff"]
    if quantifiers and len(bound) < min(max_quantifiers, len(INDEX_NAMES)):
        kinds += ["forall", "exists"]
    if constants:
        kinds += ["const"]
    kind = draw(st.sampled_from(kinds))
    sub = functools.partial(formulas, max_depth=max_depth - 1, bound=bound, quantifiers=quantifiers,
                            vectors=vectors, constants=constants, max_quantifiers=max_quantifiers)
    if kind == "atom":
        return draw(st.one_of(*atoms))
    if kind == "const":
        return (draw(st.sampled_from(("true", "false"))),)
    if kind == "not":
        return ("not", draw(sub()))
    if kind in ("forall", "exists"):
        j = INDEX_NAMES[len(bound)]
        body = draw(formulas(max_depth - 1, bound + (j,), quantifiers, vectors, constants,
                             max_quantifiers))
        return (kind, j, body)
    return (kind, draw(sub()), draw(sub()))


def rows(batch: int = 4):
    """Assignments for a batch: a list of `batch` rows {a, b, c: float, v: [3 floats]} on GRID."""
    g = st.sampled_from(GRID)
    row = st.fixed_dictionaries({"a": g, "b": g, "c": g,
                                 "v": st.lists(g, min_size=VECTOR_SIZE, max_size=VECTOR_SIZE)})
    return st.lists(row, min_size=batch, max_size=batch)


def assignments(batch: int = 4):
    """Assignments as the property's keyword arguments: {name: float64 tensor [batch, ...]}."""
    return rows(batch).map(to_args)


def examples(batch: int = 4, **formula_options):
    """(formula, rows) pairs: a random formula and a batch of assignments for it."""
    return st.tuples(formulas(**formula_options), rows(batch))


def values(logic: Logic | str, n: tuple[int, int] = (2, 4), partial: bool = False):
    """Lists of operand values for the logic's connectives: in its value range (with the
    boundary values), or, with partial=True, strictly inside its `partial_range` (at least
    1e-6 of its width from either end)."""
    lg = get_logic(logic)
    lo, hi = lg.partial_range
    # strictly inside, and 1e-6 of the width away from the ends: "partly satisfied", and no
    # subnormal numbers whose products underflow to 0
    if lg.kind == "boolean":  # the exact checker: the values are False and True
        return st.lists(st.sampled_from((0.0, 1.0)), min_size=n[0], max_size=n[1])
    margin = 1e-6 * (hi - lo)
    inner = st.floats(lo + margin, hi - margin, allow_nan=False)
    if partial:
        one = inner
    else:
        vlo, vhi = lg.value_range
        edges = [x for x in (vlo, vhi) if math.isfinite(x)]
        one = st.one_of(st.sampled_from(edges), inner) if edges else inner
    return st.lists(one, min_size=n[0], max_size=n[1])


# ---------------------------------------------------------------- rendering and reference
def _num(x: float) -> str:
    s = repr(float(x))
    return f"({s})" if x < 0 else s


def render_term(t) -> str:
    op = t[0]
    if op == "var":
        return t[1]
    if op == "const":
        return _num(t[1])
    if op == "elem":
        return f"{VECTOR}[{t[1]}]"
    return f"({render_term(t[1])} {'+' if op == 'add' else '-'} {render_term(t[2])})"


def render(f) -> str:
    """The formula as spec text (fully parenthesised)."""
    op = f[0]
    if op in ("true", "false"):
        return op
    if op == "cmp":
        return f"({render_term(f[2])} {f[1]} {render_term(f[3])})"
    if op == "vcmp":
        return f"({VECTOR} {f[1]} {render_term(f[2])})"
    if op == "not":
        return f"(not {render(f[1])})"
    if op in ("forall", "exists"):
        return f"({op} {f[1]} in range({VECTOR_SIZE}) . {render(f[2])})"
    sym = {"and": "and", "or": "or", "implies": "=>", "iff": "<=>"}[op]
    return f"({render(f[1])} {sym} {render(f[2])})"


def spec_text(f, name: str = "p") -> str:
    sig = ", ".join(f"{n} : {t}" for n, t in SIGNATURE)
    return f"property {name}({sig}) = {render(f)}"


_CMP: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda x, y: x <= y, "<": lambda x, y: x < y, ">=": lambda x, y: x >= y,
    ">": lambda x, y: x > y, "==": lambda x, y: x == y, "!=": lambda x, y: x != y}


def eval_term(t, row: dict, env: dict) -> float:
    op = t[0]
    if op == "var":
        return float(row[t[1]])
    if op == "const":
        return float(t[1])
    if op == "elem":
        k = t[1] if isinstance(t[1], int) else env[t[1]]
        return float(row[VECTOR][k])
    x, y = eval_term(t[1], row, env), eval_term(t[2], row, env)
    return x + y if op == "add" else x - y


def reference(f, row: dict, env: dict | None = None) -> bool:
    """The formula's truth, evaluated directly as written (no normal form): the oracle."""
    env = env or {}
    op = f[0]
    if op == "true":
        return True
    if op == "false":
        return False
    if op == "cmp":
        return _CMP[f[1]](eval_term(f[2], row, env), eval_term(f[3], row, env))
    if op == "vcmp":
        t = eval_term(f[2], row, env)
        return all(_CMP[f[1]](float(x), t) for x in row[VECTOR])
    if op == "not":
        return not reference(f[1], row, env)
    if op == "and":
        return reference(f[1], row, env) and reference(f[2], row, env)
    if op == "or":
        return reference(f[1], row, env) or reference(f[2], row, env)
    if op == "implies":
        return (not reference(f[1], row, env)) or reference(f[2], row, env)
    if op == "iff":
        return reference(f[1], row, env) == reference(f[2], row, env)
    quant = all if op == "forall" else any
    return quant(reference(f[2], row, {**env, f[1]: k}) for k in range(VECTOR_SIZE))


def to_args(rows_: list[dict]) -> dict[str, torch.Tensor]:
    out = {n: torch.tensor([r[n] for r in rows_], dtype=DTYPE) for n in SCALARS}
    out[VECTOR] = torch.tensor([r[VECTOR] for r in rows_], dtype=DTYPE)
    return out


def show_row(row: dict) -> str:
    v = ", ".join(f"{x:g}" for x in row[VECTOR])
    return ", ".join(f"{n}={row[n]:g}" for n in SCALARS) + f", {VECTOR}=[{v}]"


# ---------------------------------------------------------------- evaluation
@functools.lru_cache(maxsize=4096)
def compiled(text: str):
    """The property of a spec text (compiled once per text)."""
    from .spec import compile_spec
    spec = compile_spec(text)
    return spec[next(iter(spec))]


def formula_values(prop, logic: Logic | str, args: dict) -> torch.Tensor:
    """The value of a property (no network, no continuous quantifier) under a logic, per
    example: a loss for DL2, a truth degree, or a robustness degree."""
    lg = get_logic(logic)
    value = getattr(prop, "value", None)
    if callable(value):  # the public API, where Property has one
        return value(None, logic=lg, **args)
    ctx = prop._bind(None, None, dict(args), None)
    v = prop._loss_fn(lg)(ctx)
    return prop._per_example(v, ctx.batch)


def verdicts(prop, args: dict) -> torch.Tensor:
    return prop.check(None, **args).holds


# ---------------------------------------------------------------- results
@dataclass
class CheckResult:
    """One check of one logic."""

    check: str
    logic: str
    claimed: bool
    holds: bool
    counterexample: str | None = None
    examples: int = 0
    note: str = ""

    @property
    def broken_claim(self) -> bool:
        return self.claimed and not self.holds

    def cell(self) -> str:
        """A markdown cell: holds / fails with the counterexample / not claimed."""
        if self.holds:
            return "holds" if self.claimed else "holds (not claimed)"
        text = f"fails: {self.counterexample}" if self.counterexample else "fails"
        return f"**{text}**" if self.claimed else f"not claimed; {text}"

    def __str__(self) -> str:
        return f"{self.check:<15} {self.cell()}"


@dataclass
class KitReport:
    """All checks of one logic: `str(report)` is a table; `report.row()` a markdown row."""

    logic: str
    results: dict[str, CheckResult] = field(default_factory=dict)

    def __getitem__(self, check: str) -> CheckResult:
        return self.results[check]

    @property
    def broken_claims(self) -> list[CheckResult]:
        return [r for r in self.results.values() if r.broken_claim]

    def row(self, checks: Iterable[str] | None = None) -> str:
        checks = list(checks or self.results)
        return f"| {self.logic} | " + " | ".join(
            self.results[c].cell().replace("|", "\\|") if c in self.results else "" for c in checks) + " |"

    def __str__(self) -> str:
        lines = [f"property-test kit: {self.logic}"]
        lines += ["  " + str(r) for r in self.results.values()]
        return "\n".join(lines)


# ---------------------------------------------------------------- running hypothesis outside pytest
def _settings(max_examples: int, shrink: bool = True) -> settings:
    phases = [Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(max_examples=max_examples, deadline=None, database=None, phases=phases,
                    suppress_health_check=list(HealthCheck), derandomize=False)


def _search(strategy, bad: Callable[[Any], bool], max_examples: int, seed: int,
            shrink: bool = True):
    """The smallest example for which `bad` is true (the first one found, with shrink=False),
    or None when none is found."""
    try:
        return find(strategy, bad, settings=_settings(max_examples, shrink),
                    random=random.Random(seed))
    except NoSuchExample:
        return None


def _name(lg: Logic) -> str:
    opts = lg.options()
    return lg.name + ("(" + ", ".join(f"{k}={v:g}" for k, v in opts.items()) + ")" if opts else "")


# ---------------------------------------------------------------- formula-level checks
def _formula_check(lg: Logic, check: str, claimed: bool, bad_rows: Callable, describe: Callable,
                   max_examples: int, seed: int, shrink: bool = True, batch: int = 4,
                   **formula_options) -> CheckResult:
    def bad(example) -> bool:
        f, rws = example
        try:
            return bool(bad_rows(f, rws).any())
        except Exception:  # a crash is a failure too (reported with the error below)
            return True

    found = _search(examples(batch, **formula_options), bad, max_examples, seed, shrink)
    if found is None:
        return CheckResult(check, _name(lg), claimed, True, None, max_examples)
    f, rws = found
    try:
        i = int(bad_rows(f, rws).nonzero()[0, 0])
        text = describe(f, rws[i])
    except Exception as e:
        text = f"`{render(f)}` at {show_row(rws[0])}: raised {_error(e)}"
    return CheckResult(check, _name(lg), claimed, False, text, max_examples)


def _error(e: Exception) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"


def _prop_of(f):
    return compiled(spec_text(f))


def _value_rows(lg: Logic, f, rws) -> torch.Tensor:
    return formula_values(_prop_of(f), lg, to_args(rws))


def _value_text(lg: Logic, v: float) -> str:
    loss = float(lg.to_loss(TorchOps(), torch.tensor(v, dtype=DTYPE)))
    if lg.kind == "loss":
        return f"loss {v:.6g}"
    word = "truth" if lg.kind == "truth" else "robustness"
    return f"{word} {v:.6g} (loss {loss:.6g})"


def check_range(logic: Logic | str = "dl2", max_examples: int = 100, seed: int = 0,
                shrink: bool = True) -> CheckResult:
    """Values within the logic's value_range, losses >= 0, never NaN."""
    lg = get_logic(logic)
    lo, hi = lg.value_range

    def bad_rows(f, rws):
        v = _value_rows(lg, f, rws)
        loss = lg.to_loss(TorchOps(), v)
        return v.isnan() | (v < lo) | (v > hi) | loss.isnan() | (loss < 0)

    def describe(f, row):
        v = float(_value_rows(lg, f, [row])[0])
        return f"`{render(f)}` at {show_row(row)}: {_value_text(lg, v)}, outside [{lo:g}, {hi:g}]"
    return _formula_check(lg, "range", True, bad_rows, describe, max_examples, seed, shrink)


def check_soundness(logic: Logic | str = "dl2", max_examples: int = 100, seed: int = 0,
                    shrink: bool = True) -> CheckResult:
    """Loss 0 only where the checker says true."""
    lg = get_logic(logic)

    def bad_rows(f, rws):
        prop = _prop_of(f)
        args = to_args(rws)
        return lg.satisfied(formula_values(prop, lg, args)) & ~verdicts(prop, args)

    def describe(f, row):
        v = float(_value_rows(lg, f, [row])[0])
        return f"`{render(f)}` at {show_row(row)}: {_value_text(lg, v)} but the checker says false"
    return _formula_check(lg, "sound", "sound" in lg.claims, bad_rows, describe, max_examples,
                          seed, shrink)


def check_completeness(logic: Logic | str = "dl2", max_examples: int = 100, seed: int = 0,
                       shrink: bool = True) -> CheckResult:
    """Where the checker says true, the loss is 0."""
    lg = get_logic(logic)

    def bad_rows(f, rws):
        prop = _prop_of(f)
        args = to_args(rws)
        return ~lg.satisfied(formula_values(prop, lg, args)) & verdicts(prop, args)

    def describe(f, row):
        v = float(_value_rows(lg, f, [row])[0])
        return f"`{render(f)}` at {show_row(row)}: the checker says true but {_value_text(lg, v)}"
    return _formula_check(lg, "complete", "complete" in lg.claims, bad_rows, describe,
                          max_examples, seed, shrink)


def check_nnf(logic: Logic | str = "dl2", max_examples: int = 100, seed: int = 0,
              shrink: bool = True) -> CheckResult:
    """The compiled checker (after negation normal form and => elimination) agrees with the
    formula evaluated as written. Logic-independent: a check of the compiler."""
    lg = get_logic(logic)

    def bad_rows(f, rws):
        got = verdicts(_prop_of(f), to_args(rws))
        want = torch.tensor([reference(f, r) for r in rws])
        return got != want

    def describe(f, row):
        got = bool(verdicts(_prop_of(f), to_args([row]))[0])
        return f"`{render(f)}` at {show_row(row)}: checker {got}, as written {reference(f, row)}"
    return _formula_check(lg, "nnf", True, bad_rows, describe, max_examples, seed, shrink)


# ---------------------------------------------------------------- operator-level checks
def _t(xs: list[float]) -> list[torch.Tensor]:
    return [torch.tensor([x], dtype=DTYPE) for x in xs]


def _close(x: torch.Tensor, y: torch.Tensor, tol: float = 1e-9) -> bool:
    x, y = x.double(), y.double()
    same_inf = torch.isinf(x) & torch.isinf(y) & (torch.sign(x) == torch.sign(y))
    ok = same_inf | ((x - y).abs() <= tol * (1 + torch.maximum(x.abs(), y.abs())))
    return bool(ok.all())


def _axis(xs: list[float]) -> torch.Tensor:
    return torch.tensor([xs], dtype=DTYPE)  # [1 example, n along the axis]


def _fmt(xs) -> str:
    return "[" + ", ".join(f"{x + 0.0:.6g}" for x in xs) + "]"


def _op_check(lg: Logic, check: str, claimed: bool, problem: Callable[[list], str | None],
              max_examples: int, seed: int, shrink: bool = True, partial: bool = False,
              n=(2, 4)) -> CheckResult:
    def safe(xs):
        try:
            return problem(xs)
        except Exception as e:  # a crash is a failure, reported with the error
            return f"at {_fmt(xs)}: raised {_error(e)}"

    found = _search(values(lg, n, partial), lambda xs: safe(xs) is not None, max_examples, seed,
                    shrink)
    if found is None:
        return CheckResult(check, _name(lg), claimed, True, None, max_examples)
    return CheckResult(check, _name(lg), claimed, False, safe(found), max_examples)


def check_commutativity(logic: Logic | str = "dl2", max_examples: int = 100, seed: int = 0,
                        shrink: bool = True) -> CheckResult:
    """and/or (and forall/exists over an axis) do not depend on the order of operands."""
    lg = get_logic(logic)

    def problem(xs):
        perms = [list(reversed(xs)), xs[1:] + xs[:1]]
        for name, op, red in (("and", lg.and_, lg.forall), ("or", lg.or_, lg.exists)):
            base = op(T, _t(xs))
            for p in perms:
                other = op(T, _t(p))
                if not _close(base, other):
                    return (f"{name}{_fmt(xs)} = {float(base):.17g} but {name}{_fmt(p)} = "
                            f"{float(other):.17g}")
                if not _close(red(T, _axis(xs), -1), red(T, _axis(p), -1)):
                    return f"{'forall' if name == 'and' else 'exists'} over {_fmt(xs)} vs {_fmt(p)}"
        return None
    return _op_check(lg, "commutative", "commutative" in lg.claims, problem, max_examples, seed,
                     shrink, n=(2, 4))


def check_associativity(logic: Logic | str = "dl2", max_examples: int = 100, seed: int = 0,
                        shrink: bool = True) -> CheckResult:
    """and(and(x, y), z) = and(x, and(y, z)) = and(x, y, z), and the same for or."""
    lg = get_logic(logic)

    def problem(xs):
        x, y, z = _t(xs)
        for name, op in (("and", lg.and_), ("or", lg.or_)):
            left = op(T, [op(T, [x, y]), z])
            right = op(T, [x, op(T, [y, z])])
            flat = op(T, [x, y, z])
            for what, got in (("(x ∘ y) ∘ z", left), ("x ∘ (y ∘ z)", right)):
                if not _close(got, flat):
                    return (f"{name} at x, y, z = {_fmt(xs)}: {what} = {float(got):.6g} but "
                            f"{name}(x, y, z) = {float(flat):.6g}")
        return None
    return _op_check(lg, "associative", "associative" in lg.claims, problem, max_examples, seed,
                     shrink, n=(3, 3))


def check_quantifier(logic: Logic | str = "dl2", max_examples: int = 100, seed: int = 0,
                     shrink: bool = True) -> CheckResult:
    """forall (exists) over an axis equals the n-ary and (or) of its slices."""
    lg = get_logic(logic)

    def problem(xs):
        for name, op, red in (("and", lg.and_, lg.forall), ("or", lg.or_, lg.exists)):
            a, b = red(T, _axis(xs), -1), op(T, [torch.tensor([x], dtype=DTYPE) for x in xs])
            if not _close(a, b):
                return (f"{'forall' if name == 'and' else 'exists'} over {_fmt(xs)} = {float(a):.6g} "
                        f"but {name}{_fmt(xs)} = {float(b):.6g}")
        return None
    return _op_check(lg, "quantifier", True, problem, max_examples, seed, shrink, n=(1, 4))


def check_shadow_lifting(logic: Logic | str = "dl2", max_examples: int = 100, seed: int = 0,
                         shrink: bool = True) -> CheckResult:
    """The gradient of a conjunction w.r.t. each conjunct is > 0 where all are partly satisfied
    (values strictly inside the logic's partial_range), for and and for forall over an axis."""
    lg = get_logic(logic)

    def problem(xs):
        ts = [torch.tensor([x], dtype=DTYPE, requires_grad=True) for x in xs]
        grads = torch.autograd.grad(lg.and_(T, ts).sum(), ts, allow_unused=True)
        g = [0.0 if gi is None else float(gi) for gi in grads]
        if not all(gi > 0 for gi in g):  # also catches NaN
            return f"d and{_fmt(xs)} / d x = {_fmt(g)}"
        axis = _axis(xs).requires_grad_(True)
        (ga,) = torch.autograd.grad(lg.forall(T, axis, -1).sum(), [axis])
        if not bool((ga > 0).all()):
            return f"d forall{_fmt(xs)} / d x = {_fmt(ga.flatten().tolist())}"
        return None
    return _op_check(lg, "shadow_lifting", "shadow_lifting" in lg.claims, problem, max_examples,
                     seed, shrink, partial=True, n=(2, 4))


# ---------------------------------------------------------------- Boolean laws, compiled
# Each law is checked on compiled spec text, not on the logic's table alone: the compiler must
# translate `A and A` operand for operand (a law is applied only where the logic claims it).
_LAWS = {
    "idempotent": (lambda f: ("and", f, f), lambda f: f, "A and A", "A"),
    "idempotent_or": (lambda f: ("or", f, f), lambda f: f, "A or A", "A"),
    "identity": (lambda f: ("and", f, ("true",)), lambda f: f, "A and true", "A"),
    "identity_or": (lambda f: ("or", f, ("false",)), lambda f: f, "A or false", "A"),
    "absorbing": (lambda f: ("and", f, ("false",)), lambda f: ("false",), "A and false", "false"),
    "absorbing_or": (lambda f: ("or", f, ("true",)), lambda f: ("true",), "A or true", "true"),
}


def _law_check(law: str, logic, max_examples: int, seed: int, shrink: bool) -> CheckResult:
    lg = get_logic(logic)
    cases = [_LAWS[law], _LAWS[law + "_or"]]

    def differs(f, rws, case):
        lhs, rhs = case[0](f), case[1](f)
        a, b = _value_rows(lg, lhs, rws), _value_rows(lg, rhs, rws)
        if a.dtype == torch.bool or b.dtype == torch.bool:
            return a != b
        a, b = a.double(), b.double()
        same_inf = torch.isinf(a) & torch.isinf(b) & (torch.sign(a) == torch.sign(b))
        return ~(same_inf | ((a - b).abs() <= 1e-9 * (1 + torch.maximum(a.abs(), b.abs()))))

    def bad_rows(f, rws):
        return functools.reduce(torch.logical_or, (differs(f, rws, c) for c in cases))

    def describe(f, row):
        for c in cases:
            if bool(differs(f, [row], c)[0]):
                a = float(_value_rows(lg, c[0](f), [row])[0])
                b = float(_value_rows(lg, c[1](f), [row])[0])
                return (f"{c[2]} with A = `{render(f)}` at {show_row(row)}: {c[2]} = {a:.6g} but "
                        f"{c[3]} = {b:.6g}")
        return f"`{render(f)}` at {show_row(row)}"
    return _formula_check(lg, law, law in lg.claims, bad_rows, describe, max_examples, seed,
                          shrink, max_depth=2)


def check_idempotence(logic: Logic | str = "dl2", max_examples: int = 100, seed: int = 0,
                      shrink: bool = True) -> CheckResult:
    """`A and A` and `A or A` compile to the value of `A`."""
    return _law_check("idempotent", logic, max_examples, seed, shrink)


def check_identity(logic: Logic | str = "dl2", max_examples: int = 100, seed: int = 0,
                   shrink: bool = True) -> CheckResult:
    """`A and true` and `A or false` compile to the value of `A`."""
    return _law_check("identity", logic, max_examples, seed, shrink)


def check_absorbing(logic: Logic | str = "dl2", max_examples: int = 100, seed: int = 0,
                    shrink: bool = True) -> CheckResult:
    """`A and false` compiles to the value of `false`, `A or true` to that of `true`."""
    return _law_check("absorbing", logic, max_examples, seed, shrink)


# ---------------------------------------------------------------- search soundness
EPS = 0.25
X0_GRID = (0.0, 0.5, 1.0, 0.25, 0.75)


def search_spec_text(f) -> str:
    """`forall v` in the EPS-ball around x0 (within [0, 1]) of the formula: v is searched."""
    return (f"property q(a : Real, b : Real, c : Real, x0 : Tensor[{VECTOR_SIZE}]) = "
            f"forall {VECTOR} . norm_inf({VECTOR} - x0) <= {EPS} and 0 <= {VECTOR} <= 1 => {render(f)}")


def _search_rows(batch: int):
    g = st.sampled_from(GRID)
    x = st.sampled_from(X0_GRID)
    row = st.fixed_dictionaries({"a": g, "b": g, "c": g,
                                 "x0": st.lists(x, min_size=VECTOR_SIZE, max_size=VECTOR_SIZE)})
    return st.lists(row, min_size=batch, max_size=batch)


def check_search_soundness(logic: Logic | str = "dl2", max_examples: int = 50, seed: int = 0,
                           search=None, shrink: bool = True) -> CheckResult:
    """A searched point lies in the domain, and where the search reports a counterexample
    (objective 0), the checker says the body is false at it. Claimed where soundness is."""
    lg = get_logic(logic)
    strategy = search or PGD(steps=10, step_size=0.05, early_stop=False)

    def run(f, rws):
        prop = compiled(search_spec_text(f))
        args = {n: torch.tensor([r[n] for r in rws], dtype=DTYPE) for n in SCALARS}
        x0 = torch.tensor([r["x0"] for r in rws], dtype=DTYPE)
        args["x0"] = x0
        gen = torch.Generator().manual_seed(seed)
        found = prop.search(None, logic=lg, search=strategy, generator=gen, **args)
        pts = found[VECTOR]
        inside = ((pts - x0).abs().amax(-1) <= EPS + 1e-12) & (pts >= 0).all(-1) & (pts <= 1).all(-1)
        reported = found.objective[VECTOR] <= 0
        holds = prop.check(None, at=found, **args).holds
        return pts, inside, reported, holds

    def bad(example):
        f, rws = example
        try:
            _pts, inside, reported, holds = run(f, rws)
        except Exception:
            return True
        return bool((~inside | (reported & holds)).any())

    claimed = "sound" in lg.claims
    found = _search(st.tuples(formulas(max_depth=2), _search_rows(4)), bad, max_examples, seed,
                    shrink)
    if found is None:
        return CheckResult("search_sound", _name(lg), claimed, True, None, max_examples)
    f, rws = found
    try:
        pts, inside, reported, holds = run(f, rws)
    except Exception as e:
        return CheckResult("search_sound", _name(lg), claimed, False,
                           f"`{render(f)}`: raised {_error(e)}", max_examples)
    i = int((~inside | (reported & holds)).nonzero()[0, 0])
    r = rws[i]
    where = (f"a={r['a']:g}, b={r['b']:g}, c={r['c']:g}, x0={_fmt(r['x0'])}: v*={_fmt(pts[i].tolist())}")
    why = "outside the domain" if not bool(inside[i]) else \
        "reported as a counterexample (objective 0) but the checker says the body holds there"
    return CheckResult("search_sound", _name(lg), claimed, False,
                       f"`{search_spec_text(f).split(' = ', 1)[1]}` at {where} {why}", max_examples)


# ---------------------------------------------------------------- the kit
CHECKS: dict[str, Callable[..., CheckResult]] = {
    "range": check_range,
    "sound": check_soundness,
    "complete": check_completeness,
    "nnf": check_nnf,
    "quantifier": check_quantifier,
    "commutative": check_commutativity,
    "associative": check_associativity,
    "shadow_lifting": check_shadow_lifting,
    "idempotent": check_idempotence,
    "identity": check_identity,
    "absorbing": check_absorbing,
    "search_sound": check_search_soundness,
}


def run_kit(logic: Logic | str = "dl2", max_examples: int = 100, seed: int = 0,
            checks: Iterable[str] | None = None, shrink: bool = True) -> KitReport:
    """Run the checks (all by default) on one logic; `print(run_kit("goedel"))`.

    max_examples per check (half of it for search_sound); seed fixes hypothesis's choices, so
    a report is reproducible; shrink=False reports the first counterexample found (faster)."""
    lg = get_logic(logic)
    report = KitReport(_name(lg))
    for name in (checks or CHECKS):
        if name not in CHECKS:
            import difflib
            close = difflib.get_close_matches(name, CHECKS, n=1)
            raise ValueError(f"unknown check '{name}'" + (f"; did you mean '{close[0]}'?" if close else "")
                             + f" (checks: {', '.join(CHECKS)})")
        n = max_examples if name != "search_sound" else max(1, max_examples // 2)
        report.results[name] = CHECKS[name](lg, max_examples=n, seed=seed, shrink=shrink)
    return report


def run_kit_matrix(logics: Iterable[Logic | str] = BUILTIN_LOGICS, max_examples: int = 100,
                   seed: int = 0, checks: Iterable[str] | None = None, shrink: bool = True) -> str:
    """A markdown table, one row per logic and one column per check, with the counterexamples
    as numbered notes under it. `claimed`: the logic lists the property in `Logic.claims`."""
    checks = list(checks or CHECKS)
    reports = [run_kit(lg, max_examples, seed, checks, shrink) for lg in logics]
    head = "| logic | " + " | ".join(checks) + " |"
    rule = "|---|" + "---|" * len(checks)
    lines, notes = [head, rule], []
    for rep in reports:
        cells = []
        for c in checks:
            r = rep.results[c]
            if r.holds:
                cells.append("holds" if r.claimed else "holds (not claimed)")
                continue
            notes.append(f"{len(notes) + 1}. {rep.logic}, {c}: {r.counterexample}")
            mark = f"[{len(notes)}]"
            cells.append(f"**FAILS** {mark} (claimed)" if r.claimed else f"fails {mark} (not claimed)")
        lines.append(f"| {rep.logic} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Counterexamples (the smallest hypothesis found):", ""] + \
                 [n.replace("|", "\\|") for n in notes]
    return "\n".join(lines)


__all__ = ["SIGNATURE", "GRID", "terms", "formulas", "rows", "assignments", "examples", "values",
           "render", "spec_text", "reference", "to_args", "compiled", "formula_values",
           "CheckResult", "KitReport", "check_range", "check_soundness", "check_completeness",
           "check_nnf", "check_quantifier", "check_commutativity", "check_associativity",
           "check_shadow_lifting", "check_idempotence", "check_identity", "check_absorbing",
           "check_search_soundness", "CHECKS", "run_kit",
           "run_kit_matrix"]
