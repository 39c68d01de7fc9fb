"""Property-based tests on random well-typed quantifier-free formulas (finite quantifiers allowed).

A strategy builds spec text from a small signature (a, b, c : Tensor[3]; r, s : Real;
constants; + - *; sum/max/min/abs/norms; the six comparisons and chains; and, or, not, =>, <=>;
`forall/exists j in range(3)` with indexing) together with a numpy reference evaluator of its
truth. Values come from a small dyadic grid, so ties actually happen and arithmetic is exact.

Checked, per example of a batch of 7:
  * the checker agrees with the reference semantics;
  * the DL2 loss is >= 0, and 0 exactly when the checker says the formula holds;
  * rewriting a formula into an equivalent one (implication elimination, De Morgan, quantifier
    duality, ...) never changes the checker's verdict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustspec.compiler import DL2, compile_spec

BATCH = 7
GRID = [-1.0, -0.5, 0.0, 0.5, 1.0]
# whole numbers are written as integers: `1.0` next to an index `a[1]` hits a known bug
# (see test_dl2.py::test_float_and_int_constants_are_not_merged)
CONSTS = [-1, -0.5, 0, 0.5, 1, 2, 1.0, 2.0]  # 1 and 1.0 are distinct IR constants
VECS = ["a", "b", "c"]
SCALARS = ["r", "s"]
INDEX_NAMES = ["j", "k", "l"]
SIGNATURE = "a : Tensor[3], b : Tensor[3], c : Tensor[3], r : Real, s : Real"
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

Env = dict


@dataclass
class Term:
    text: str
    vec: bool  # Tensor[3] (else a scalar)
    ev: Callable[[Env], np.ndarray]  # -> [7, 3] or [7, 1]


@dataclass
class Formula:
    text: str
    ev: Callable[[Env], np.ndarray]  # -> bool [7]


def _num(c) -> str:
    return f"({c})" if c < 0 else str(c)


# ---------------------------------------------------------------- terms
@st.composite
def terms(draw, depth: int, idx: tuple[str, ...]) -> Term:
    choices = ["vec", "scalar", "const"] + (["index"] if idx else []) + ["index_const"]
    if depth > 0:
        choices += ["neg", "binop", "binop", "reduce", "abs"]
    kind = draw(st.sampled_from(choices))
    if kind == "vec":
        v = draw(st.sampled_from(VECS))
        return Term(v, True, lambda env, v=v: env[v])
    if kind == "scalar":
        v = draw(st.sampled_from(SCALARS))
        return Term(v, False, lambda env, v=v: env[v])
    if kind == "const":
        c = draw(st.sampled_from(CONSTS))
        return Term(_num(c), False, lambda env, c=c: np.full((BATCH, 1), float(c)))
    if kind == "index":
        v, j = draw(st.sampled_from(VECS)), draw(st.sampled_from(idx))
        return Term(f"{v}[{j}]", False, lambda env, v=v, j=j: env[v][:, env[j]:env[j] + 1])
    if kind == "index_const":
        v, k = draw(st.sampled_from(VECS)), draw(st.integers(0, 2))
        return Term(f"{v}[{k}]", False, lambda env, v=v, k=k: env[v][:, k:k + 1])
    if kind == "neg":
        t = draw(terms(depth - 1, idx))
        return Term(f"(-{t.text})", t.vec, lambda env, t=t: -t.ev(env))
    if kind == "abs":
        t = draw(terms(depth - 1, idx))
        return Term(f"abs({t.text})", t.vec, lambda env, t=t: np.abs(t.ev(env)))
    if kind == "binop":
        op = draw(st.sampled_from(["+", "-", "*"]))
        x, y = draw(terms(depth - 1, idx)), draw(terms(depth - 1, idx))
        f = {"+": np.add, "-": np.subtract, "*": np.multiply}[op]
        return Term(f"({x.text} {op} {y.text})", x.vec or y.vec,
                    lambda env, f=f, x=x, y=y: f(x.ev(env), y.ev(env)))
    # a reduction of a vector to a scalar
    fn = draw(st.sampled_from(["sum", "max", "min", "norm_inf", "norm_1"]))
    t = draw(terms(depth - 1, idx))
    if not t.vec:  # make it a vector by adding one
        v = draw(st.sampled_from(VECS))
        t = Term(f"({t.text} + {v})", True, lambda env, t=t, v=v: t.ev(env) + env[v])
    red = {"sum": lambda v: v.sum(1, keepdims=True), "max": lambda v: v.max(1, keepdims=True),
           "min": lambda v: v.min(1, keepdims=True),
           "norm_inf": lambda v: np.abs(v).max(1, keepdims=True),
           "norm_1": lambda v: np.abs(v).sum(1, keepdims=True)}[fn]
    return Term(f"{fn}({t.text})", False, lambda env, red=red, t=t: red(t.ev(env)))


# ---------------------------------------------------------------- formulas
CMP = {"<=": np.less_equal, "<": np.less, ">=": np.greater_equal, ">": np.greater,
       "==": np.equal, "!=": np.not_equal}


def _holds_all(r: np.ndarray) -> np.ndarray:
    r = np.broadcast_to(r, (BATCH,) + r.shape[1:]) if r.ndim else np.broadcast_to(r, (BATCH,))
    return r.reshape(BATCH, -1).all(1)


@st.composite
def formulas(draw, depth: int, idx: tuple[str, ...] = ()) -> Formula:
    choices = ["cmp", "cmp", "chain"] + (["index_cmp"] if idx else []) + ["bool"]
    if depth > 0:
        choices += ["not", "and", "or", "implies", "iff"]
        if len(idx) < 2:
            choices += ["quant"]
    kind = draw(st.sampled_from(choices))
    if kind in ("cmp", "chain"):
        n = 2 if kind == "cmp" else 3
        ts = [draw(terms(2, idx)) for _ in range(n)]
        ops = [draw(st.sampled_from(list(CMP))) for _ in range(n - 1)]
        text = ts[0].text + "".join(f" {op} {t.text}" for op, t in zip(ops, ts[1:]))

        def ev(env, ts=ts, ops=ops):
            vals = [t.ev(env) for t in ts]
            out = np.ones(BATCH, dtype=bool)
            for i, op in enumerate(ops):
                out &= _holds_all(CMP[op](vals[i], vals[i + 1]))
            return out
        return Formula(f"({text})", ev)
    if kind == "index_cmp":
        j = draw(st.sampled_from(idx))
        other = draw(st.sampled_from(list(idx) + ["0", "1", "2"]))
        op = draw(st.sampled_from(list(CMP)))

        def ev(env, j=j, other=other, op=op):
            o = env[other] if other in env else int(other)
            return np.full(BATCH, bool(CMP[op](env[j], o)))
        return Formula(f"({j} {op} {other})", ev)
    if kind == "bool":
        v = draw(st.booleans())
        return Formula("true" if v else "false", lambda env, v=v: np.full(BATCH, v))
    if kind == "not":
        f = draw(formulas(depth - 1, idx))
        return Formula(f"(not {f.text})", lambda env, f=f: ~f.ev(env))
    if kind == "quant":
        q = draw(st.sampled_from(["forall", "exists"]))
        j = next(n for n in INDEX_NAMES if n not in idx)
        f = draw(formulas(depth - 1, idx + (j,)))
        red = np.all if q == "forall" else np.any

        def ev(env, f=f, j=j, red=red):
            return red(np.stack([f.ev({**env, j: v}) for v in range(3)], 1), 1)
        return Formula(f"({q} {j} in range(3) . {f.text})", ev)
    f, g = draw(formulas(depth - 1, idx)), draw(formulas(depth - 1, idx))
    op = {"and": "and", "or": "or", "implies": "=>", "iff": "<=>"}[kind]
    comb = {"and": lambda x, y: x & y, "or": lambda x, y: x | y,
            "implies": lambda x, y: ~x | y, "iff": lambda x, y: x == y}[kind]
    return Formula(f"({f.text} {op} {g.text})", lambda env, f=f, g=g, c=comb: c(f.ev(env), g.ev(env)))


@st.composite
def assignments(draw) -> Env:
    def grid(shape):
        flat = draw(st.lists(st.sampled_from(GRID), min_size=int(np.prod(shape)),
                             max_size=int(np.prod(shape))))
        return np.array(flat, dtype=np.float64).reshape(shape)
    env = {v: grid((BATCH, 3)) for v in VECS}
    env.update({v: grid((BATCH, 1)) for v in SCALARS})
    return env


def torch_args(env: Env) -> dict:
    out = {v: torch.tensor(env[v]) for v in VECS}
    out.update({v: torch.tensor(env[v][:, 0]) for v in SCALARS})
    return out


def compile_formula(text: str, name: str = "p"):
    return compile_spec(f"property {name}({SIGNATURE}) =\n  {text}\n", filename="random.spec")[name]


def per_example(t: torch.Tensor) -> torch.Tensor:
    """One value per example, always: also for formulas that ignore the batch."""
    assert t.shape == (BATCH,), t.shape
    return t


# ---------------------------------------------------------------- the properties
@SETTINGS
@given(formulas(3), assignments())
def test_checker_matches_reference_semantics(f, env):
    prop = compile_formula(f.text)
    holds = per_example(prop.check(None, **torch_args(env)).holds)
    assert holds.dtype == torch.bool
    assert holds.tolist() == f.ev(env).tolist(), f.text


@SETTINGS
@given(formulas(3), assignments(), st.sampled_from([1.0, 0.5, 2.0]))
def test_dl2_loss_nonnegative_and_zero_iff_checker_holds(f, env, xi):
    prop = compile_formula(f.text)
    args = torch_args(env)
    loss = per_example(prop.loss(None, **args, logic=DL2(xi=xi), reduction="none"))
    holds = per_example(prop.check(None, **args).holds)
    assert torch.isfinite(loss).all(), f.text
    assert (loss >= 0).all(), (f.text, loss)
    assert torch.equal(loss == 0, holds), (f.text, loss, holds)


def _same_verdict(text1: str, text2: str, expected: np.ndarray, env: Env):
    args = torch_args(env)
    v1 = per_example(compile_formula(text1).check(None, **args).holds)
    v2 = per_example(compile_formula(text2).check(None, **args).holds)
    assert torch.equal(v1, v2), (text1, text2)
    assert v1.tolist() == expected.tolist(), text1
    l1 = per_example(compile_formula(text1).loss(None, **args, reduction="none"))
    l2 = per_example(compile_formula(text2).loss(None, **args, reduction="none"))
    assert torch.equal(l1 == 0, l2 == 0), (text1, text2, l1, l2)


@SETTINGS
@given(formulas(2), formulas(2), formulas(1), assignments(), st.integers(0, 6))
def test_rewrites_preserve_the_verdict(f, g, h, env, which):
    F, G, H = f.text, g.text, h.text
    vf, vg, vh = f.ev(env), g.ev(env), h.ev(env)
    pairs = [
        (f"{F} => {G}", f"(not {F}) or {G}", ~vf | vg),
        (f"not ({F} and {G})", f"(not {F}) or (not {G})", ~(vf & vg)),
        (f"not ({F} or {G})", f"(not {F}) and (not {G})", ~(vf | vg)),
        (f"{F} <=> {G}", f"({F} => {G}) and ({G} => {F})", vf == vg),
        (f"not (not {F})", F, vf),
        (f"{F} => {G} => {H}", f"({F} and {G}) => {H}", ~(vf & vg) | vh),
        (f"not ({F} <=> {G})", f"({F} and not {G}) or ({G} and not {F})", vf != vg),
    ]
    _same_verdict(*pairs[which], env)


@SETTINGS
@given(formulas(2, ("j",)), assignments(), st.sampled_from(["forall", "exists"]))
def test_quantifier_duality_preserves_the_verdict(f, env, q):
    dual = {"forall": "exists", "exists": "forall"}[q]
    red = np.all if q == "forall" else np.any
    expected = ~red(np.stack([f.ev({**env, "j": v}) for v in range(3)], 1), 1)
    _same_verdict(f"not ({q} j in range(3) . {f.text})",
                  f"{dual} j in range(3) . not {f.text}", expected, env)


def test_the_strategy_produces_ties_and_every_connective():
    """A sanity check of the generator itself: the interesting cases do occur."""
    seen = set()

    @settings(max_examples=80, deadline=None, database=None)
    @given(formulas(3))
    def collect(f):
        for tok in (" and ", " or ", " => ", " <=> ", "not ", "forall", "exists", " == ", " != ",
                    " < ", " > "):
            if tok in f.text:
                seen.add(tok)
        compile_formula(f.text)  # every generated formula is well typed
    collect()
    assert len(seen) >= 9, seen
