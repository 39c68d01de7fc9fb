"""DL2 against an independent restatement of the reference implementation (eth-sri/dl2,
dl2lib/diffsat.py), on random formulas: the compiled loss must equal the reference's loss for
`A and A`, `A and false` and every other formula, operand for operand.

The restatement (written here from the reference's definitions, not copied):
  a <= b: max(a - b, 0)    a >= b: max(b - a, 0)    a == b: |a - b|
  a < b: max(a - b, 0) + [a = b]     a > b: max(b - a, 0) + [a = b]
  and: the sum of the operands' losses; or: their product ('mul' mode)
  A => B: (not A) or B; a constant x in {0, 1}: loss 1 - x
  not: pushed to the atoms (< by >=, <= by >, == by (a < b) or (b < a)), through and/or by De
  Morgan and through A => B as A and not B.
"""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustspec.compiler.testing import compiled, eval_term, formulas, rows, spec_text, to_args


def _atom(op, a, b):
    relu = lambda v: max(v, 0.0)  # noqa: E731
    eq = 1.0 if a == b else 0.0
    if op == "<=":
        return relu(a - b)
    if op == ">=":
        return relu(b - a)
    if op == "<":
        return relu(a - b) + eq
    if op == ">":
        return relu(b - a) + eq
    if op == "==":
        return abs(a - b)
    assert op == "!="  # the reference has no !=: it is not (a == b) = (a < b) or (b < a)
    return _atom("<", a, b) * _atom("<", b, a)


_NEG = {"<=": ">", ">=": "<", "<": ">=", ">": "<="}


def dl2_loss(f, row, neg=False):
    op = f[0]
    if op in ("true", "false"):
        x = 1.0 if (op == "true") != neg else 0.0
        return 1.0 - x
    if op == "cmp":
        cop, a, b = f[1], eval_term(f[2], row, {}), eval_term(f[3], row, {})
        if neg:
            if cop == "==":
                return _atom("<", a, b) * _atom("<", b, a)
            if cop == "!=":
                return _atom("==", a, b)
            cop = _NEG[cop]
        return _atom(cop, a, b)
    if op == "not":
        return dl2_loss(f[1], row, not neg)
    if op in ("and", "or"):
        x, y = dl2_loss(f[1], row, neg), dl2_loss(f[2], row, neg)
        return x + y if (op == "and") != neg else x * y
    if op == "implies":
        if neg:
            return dl2_loss(f[1], row) + dl2_loss(f[2], row, True)
        return dl2_loss(f[1], row, True) * dl2_loss(f[2], row)
    assert op == "iff"  # (A => B) and (B => A)
    a, b = f[1], f[2]
    return dl2_loss(("and", ("implies", a, b), ("implies", b, a)), row, neg)


def _check(f, rws):
    prop = compiled(spec_text(f))
    got = prop.value(None, logic="dl2", **to_args(rws))
    want = torch.tensor([dl2_loss(f, r) for r in rws], dtype=got.dtype)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), (spec_text(f), got, want)


@settings(max_examples=150, deadline=None)
@given(formulas(max_depth=3, quantifiers=False, vectors=False), rows(4))
def test_compiled_dl2_equals_the_reference(f, rws):
    _check(f, rws)


@settings(max_examples=60, deadline=None)
@given(formulas(max_depth=2, quantifiers=False, vectors=False), rows(4),
       st.sampled_from(["and", "or"]), st.sampled_from(["same", "true", "false"]))
def test_no_boolean_law_is_applied(f, rws, op, other):
    g = f if other == "same" else (other,)
    _check((op, f, g), rws)
