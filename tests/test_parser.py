"""The parser: every construct of the grammar, precedence and associativity, and source spans."""
from __future__ import annotations

import pytest

from robustspec.dsl import SpecError, ast, parse


def body(text: str) -> ast.Expr:
    """Parse `text` as the body of a constant definition and return its AST."""
    m = parse(f"c = {text}\n")
    assert len(m.decls) == 1
    return m.decls[0].body


def N(x):  # noqa: N802 - short builders for expected trees
    return ast.Number(float(x), isinstance(x, int))


def V(name):  # noqa: N802
    return ast.Name(name)


def C(*items):  # noqa: N802 - Compare(a, op, b, op, c, ...)
    return ast.Compare(list(items[1::2]), list(items[0::2]))


def B(op, a, b):  # noqa: N802
    return ast.BinOp(op, a, b)


def K(op, a, b):  # noqa: N802 - connective
    return ast.Connective(op, a, b)


# ---------------------------------------------------------------- declarations
def test_network_decls_with_and_without_shapes():
    m = parse("network f : Tensor[784] -> Tensor[10]\n"
              "network g : Tensor -> Tensor\n"
              "network h : Tensor[1, 28, 28] -> Real\n")
    f, g, h = m.decls
    assert isinstance(f, ast.NetworkDecl) and f.name == "f"
    assert f.input == ast.TypeExpr("Tensor", [784]) and f.output == ast.TypeExpr("Tensor", [10])
    assert g.input == ast.TypeExpr("Tensor", None) and g.output == ast.TypeExpr("Tensor", None)
    assert h.input.dims == [1, 28, 28] and h.output == ast.TypeExpr("Real", None)
    assert str(h.input) == "Tensor[1, 28, 28]" and str(g.input) == "Tensor"


def test_network_symbolic_dims_and_unicode_arrow():
    m = parse("network f : Tensor[n, 3] → Tensor[k]")
    (f,) = m.decls
    assert f.input.dims == ["n", 3] and f.output.dims == ["k"]
    assert isinstance(f.input.dims[1], int) and isinstance(f.input.dims[0], str)


def test_params_with_and_without_defaults():
    m = parse("param eps : Real = 0.1\nparam n : Nat\nparam d : Real = 2 * eps + 1")
    eps, n, d = m.decls
    assert isinstance(eps, ast.ParamDecl)
    assert eps.name == "eps" and eps.type == ast.TypeExpr("Real") and eps.default == N(0.1)
    assert n.name == "n" and n.type.name == "Nat" and n.default is None
    assert d.default == B("+", B("*", N(2), V("eps")), N(1))


def test_helpers_with_and_without_args_and_optional_def():
    m = parse("valid(x) = 0 <= x <= 1\n"
              "def close(x, y : Tensor[3]) = norm_inf(x - y) <= 1\n"
              "def zero() = 0\n"
              "one() = 1\n")
    valid, close, zero, one = m.decls
    assert all(isinstance(d, ast.DefDecl) for d in m.decls)
    assert valid.name == "valid" and [p.name for p in valid.params] == ["x"]
    assert valid.params[0].type is None
    assert valid.body == C(N(0), "<=", V("x"), "<=", N(1))
    assert [p.name for p in close.params] == ["x", "y"]
    assert close.params[1].type == ast.TypeExpr("Tensor", [3])
    assert zero.params == [] and zero.body == N(0)
    assert one.params == [] and one.body == N(1)


def test_const_defs_have_no_params():
    m = parse("classes2 = range(10)\ndef half = 0.5")
    c, h = m.decls
    assert isinstance(c, ast.DefDecl) and c.params is None
    assert c.body == ast.Call("range", [N(10)])
    assert h.name == "half" and h.params is None and h.body == N(0.5)


def test_property_decls():
    m = parse("property sr(x0 : Tensor, y : Label) = true\nproperty none() = false")
    sr, none = m.decls
    assert isinstance(sr, ast.PropertyDecl) and sr.name == "sr"
    assert [(p.name, p.type) for p in sr.params] == [("x0", ast.TypeExpr("Tensor")),
                                                      ("y", ast.TypeExpr("Label"))]
    assert sr.body == ast.BoolLit(True)
    assert none.params == [] and none.body == ast.BoolLit(False)


def test_empty_module_and_comments():
    assert parse("").decls == []
    assert parse("# only a comment\n\n   # another\n").decls == []
    m = parse("# header\nparam eps : Real = 0.1 # trailing comment\n# between\nc = eps # end")
    assert [d.name for d in m.decls] == ["eps", "c"]
    assert m.decls[1].body == V("eps")


# ---------------------------------------------------------------- numbers and terms
@pytest.mark.parametrize("text, value, is_int", [
    ("0", 0.0, True), ("42", 42.0, True), ("0.5", 0.5, False), ("3.", 3.0, False),
    (".25", 0.25, False), ("1e3", 1000.0, False), ("2.5E-2", 0.025, False),
    ("1e+2", 100.0, False),
])
def test_numbers(text, value, is_int):
    n = body(text)
    assert isinstance(n, ast.Number)
    assert n.value == value and n.is_int is is_int


def test_unary_minus():
    assert body("-x") == ast.Neg(V("x"))
    assert body("- -x") == ast.Neg(ast.Neg(V("x")))
    assert body("-1") == ast.Neg(N(1))
    # unary minus binds tighter than * and +
    assert body("-a * b") == B("*", ast.Neg(V("a")), V("b"))
    assert body("a - -b") == B("-", V("a"), ast.Neg(V("b")))
    assert body("a * -b") == B("*", V("a"), ast.Neg(V("b")))
    # ... and looser than indexing and calls
    assert body("-v[0]") == ast.Neg(ast.Index(V("v"), N(0)))
    assert body("-f(x)") == ast.Neg(ast.Call("f", [V("x")]))


def test_arithmetic_precedence_and_left_associativity():
    assert body("a + b * c") == B("+", V("a"), B("*", V("b"), V("c")))
    assert body("a * b + c") == B("+", B("*", V("a"), V("b")), V("c"))
    assert body("a - b - c") == B("-", B("-", V("a"), V("b")), V("c"))
    assert body("a / b / c") == B("/", B("/", V("a"), V("b")), V("c"))
    assert body("a - b + c") == B("+", B("-", V("a"), V("b")), V("c"))
    assert body("a / b * c") == B("*", B("/", V("a"), V("b")), V("c"))
    assert body("a + b / c - d") == B("-", B("+", V("a"), B("/", V("b"), V("c"))), V("d"))
    assert body("(a + b) * c") == B("*", B("+", V("a"), V("b")), V("c"))
    assert body("a * (b - c)") == B("*", V("a"), B("-", V("b"), V("c")))


def test_indexing_and_calls():
    assert body("v[0]") == ast.Index(V("v"), N(0))
    assert body("m[i][j]") == ast.Index(ast.Index(V("m"), V("i")), V("j"))
    assert body("f(x)[y]") == ast.Index(ast.Call("f", [V("x")]), V("y"))
    assert body("softmax(f(x))[y + 1]") == ast.Index(
        ast.Call("softmax", [ast.Call("f", [V("x")])]), B("+", V("y"), N(1)))
    assert body("g()") == ast.Call("g", [])
    assert body("norm(x - x0, 2)") == ast.Call("norm", [B("-", V("x"), V("x0")), N(2)])
    assert body("max(a, b, c)") == ast.Call("max", [V("a"), V("b"), V("c")])
    assert body("(v)[1]") == ast.Index(V("v"), N(1))


def test_literals():
    assert body("true") == ast.BoolLit(True)
    assert body("false") == ast.BoolLit(False)
    assert body("trueish") == V("trueish")  # keywords only match whole words
    assert body("forall_x") == V("forall_x")
    assert body("x'") == V("x'")


# ---------------------------------------------------------------- comparisons
@pytest.mark.parametrize("op", ["<=", ">=", "<", ">", "==", "!="])
def test_comparison_operators(op):
    assert body(f"a {op} b") == C(V("a"), op, V("b"))


def test_comparisons_bind_looser_than_arithmetic():
    assert body("a + 1 <= b * 2") == C(B("+", V("a"), N(1)), "<=", B("*", V("b"), N(2)))


def test_comparison_chains():
    assert body("0 <= x <= 1") == C(N(0), "<=", V("x"), "<=", N(1))
    assert body("a < b == c != d") == C(V("a"), "<", V("b"), "==", V("c"), "!=", V("d"))
    assert body("x0 - eps <= x <= x0 + eps") == C(
        B("-", V("x0"), V("eps")), "<=", V("x"), "<=", B("+", V("x0"), V("eps")))


def test_unicode_comparisons_are_normalised():
    assert body("a ≤ b ≥ c ≠ d") == C(V("a"), "<=", V("b"), ">=", V("c"), "!=", V("d"))


# ---------------------------------------------------------------- connectives
A, Bv, Cv, D = V("A"), V("B"), V("C"), V("D")


def test_connective_precedence():
    # not > and > or > => > <=>
    assert body("A and B or C") == K("or", K("and", A, Bv), Cv)
    assert body("A or B and C") == K("or", A, K("and", Bv, Cv))
    assert body("not A and B") == K("and", ast.Not(A), Bv)
    assert body("A or B => C") == K("=>", K("or", A, Bv), Cv)
    assert body("A => B or C") == K("=>", A, K("or", Bv, Cv))
    assert body("A => B <=> C") == K("<=>", K("=>", A, Bv), Cv)
    assert body("A <=> B => C") == K("<=>", A, K("=>", Bv, Cv))
    assert body("A and B => C or D") == K("=>", K("and", A, Bv), K("or", Cv, D))


def test_connective_associativity():
    assert body("A and B and C") == K("and", K("and", A, Bv), Cv)
    assert body("A or B or C") == K("or", K("or", A, Bv), Cv)
    # `A => B => C` is `A => (B => C)`
    assert body("A => B => C") == K("=>", A, K("=>", Bv, Cv))
    assert body("(A => B) => C") == K("=>", K("=>", A, Bv), Cv)
    assert body("not not A") == ast.Not(ast.Not(A))
    assert body("(A <=> B) <=> C") == K("<=>", K("<=>", A, Bv), Cv)


def test_iff_is_not_associative():
    with pytest.raises(SpecError, match="unexpected '<=>'"):
        parse("c = A <=> B <=> C")


def test_not_binds_tighter_than_connectives_but_looser_than_comparisons():
    assert body("not a <= b") == ast.Not(C(V("a"), "<=", V("b")))
    assert body("not a <= b or c") == K("or", ast.Not(C(V("a"), "<=", V("b"))), V("c"))
    assert body("not (A or B)") == ast.Not(K("or", A, Bv))


def test_unicode_connectives():
    assert body("¬A ∧ B ∨ C ⇒ D") == K("=>", K("or", K("and", ast.Not(A), Bv), Cv), D)
    assert body("A ⇔ B") == K("<=>", A, Bv)


# ---------------------------------------------------------------- quantifiers
def Q(kind, var, b, var_type=None, over=None):  # noqa: N802
    return ast.Quantifier(kind, var, b, var_type=var_type, over=over)


def test_quantifiers():
    assert body("forall x . A") == Q("forall", "x", A)
    assert body("exists x . A") == Q("exists", "x", A)
    assert body("forall x : Tensor[784] . A") == Q("forall", "x", A, ast.TypeExpr("Tensor", [784]))
    assert body("exists x:Tensor . A") == Q("exists", "x", A, ast.TypeExpr("Tensor"))


def test_quantifier_body_extends_rightwards():
    assert body("forall x . A => B") == Q("forall", "x", K("=>", A, Bv))
    assert body("forall x . A <=> B") == Q("forall", "x", K("<=>", A, Bv))
    assert body("forall x . A and B or C") == Q("forall", "x", K("or", K("and", A, Bv), Cv))
    # a quantifier in operand position still takes everything to its right
    assert body("A and forall x . B or C") == K("and", A, Q("forall", "x", K("or", Bv, Cv)))
    assert body("A => forall x . B => C") == K("=>", A, Q("forall", "x", K("=>", Bv, Cv)))
    assert body("not forall x . A and B") == ast.Not(Q("forall", "x", K("and", A, Bv)))
    # ... unless parenthesised
    assert body("(forall x . A) and B") == K("and", Q("forall", "x", A), Bv)
    assert body("forall x . exists y . A") == Q("forall", "x", Q("exists", "y", A))


def test_index_quantifiers():
    assert body("forall j in classes . j != y => f(x)[y] > f(x)[j]") == Q(
        "forall", "j",
        K("=>", C(V("j"), "!=", V("y")),
          C(ast.Index(ast.Call("f", [V("x")]), V("y")), ">", ast.Index(ast.Call("f", [V("x")]), V("j")))),
        over=V("classes"))
    assert body("exists k in range(3) . v[k] >= 0") == Q(
        "exists", "k", C(ast.Index(V("v"), V("k")), ">=", N(0)), over=ast.Call("range", [N(3)]))
    # the set is a term: arithmetic is allowed there
    assert body("forall j in range(n + 1) . A").over == ast.Call("range", [B("+", V("n"), N(1))])


def test_unicode_quantifiers():
    assert body("∀ x . ∃ j in classes . A") == Q("forall", "x", Q("exists", "j", A, over=V("classes")))
    assert body("∀x:Tensor[2]. x ≤ 1") == Q("forall", "x", C(V("x"), "<=", N(1)),
                                           ast.TypeExpr("Tensor", [2]))


def test_keywords_are_not_names():
    for kw in ("forall", "exists", "and", "or", "not", "in", "true", "false", "network", "param",
               "property", "def"):
        with pytest.raises(SpecError):
            parse(f"param {kw} : Real = 1")


def test_full_spec_file_parses():
    m = parse("""
# Standard robustness
network f : Tensor -> Tensor
param eps   : Real = 0.1
param delta : Real = 10
valid(x) = 0 <= x <= 1
property sr(x0 : Tensor, y : Label) =
  forall x . norm_inf(x - x0) <= eps and valid(x) => norm_inf(f(x) - f(x0)) <= delta
""")
    kinds = [type(d).__name__ for d in m.decls]
    assert kinds == ["NetworkDecl", "ParamDecl", "ParamDecl", "DefDecl", "PropertyDecl"]
    sr = m.decls[-1]
    q = sr.body
    assert isinstance(q, ast.Quantifier) and q.kind == "forall" and q.var == "x"
    imp = q.body
    assert imp.op == "=>" and imp.left.op == "and"
    assert imp.left.right == ast.Call("valid", [V("x")])


# ---------------------------------------------------------------- spans
SPAN_SRC = """# comment line
network f : Tensor[3] -> Tensor[2]
param eps : Real = 0.1
property p(x0 : Tensor, y : Label) =
  forall x . norm_inf(x - x0) <= eps => f(x)[y] >= 0.5
"""


def sp(node_or_span):
    s = getattr(node_or_span, "span", node_or_span)
    return (s.line, s.col, s.end_line, s.end_col)


def test_spans_of_declarations():
    m = parse(SPAN_SRC, "a.spec")
    net, eps, prop = m.decls
    assert net.span.file == "a.spec"
    assert sp(net) == (2, 1, 2, 35)
    assert sp(net.name_span) == (2, 9, 2, 10)
    assert net.input.span.text() == "Tensor[3]" and sp(net.input) == (2, 13, 2, 22)
    assert sp(eps.name_span) == (3, 7, 3, 10) and eps.name_span.text() == "eps"
    assert eps.default.span.text() == "0.1"
    assert sp(prop) == (4, 1, 5, 55)
    assert sp(prop.name_span) == (4, 10, 4, 11)
    assert [p.span.text() for p in prop.params] == ["x0 : Tensor", "y : Label"]
    assert sp(prop.params[1]) == (4, 25, 4, 34)


def test_spans_of_expressions():
    m = parse(SPAN_SRC, "a.spec")
    q = m.decls[2].body
    assert sp(q) == (5, 3, 5, 55)
    assert q.span.text() == "forall x . norm_inf(x - x0) <= eps => f(x)[y] >= 0.5"
    assert sp(q.var_span) == (5, 10, 5, 11)
    imp = q.body
    assert imp.op_span.text() == "=>" and sp(imp.op_span) == (5, 38, 5, 40)
    prem, concl = imp.left, imp.right
    assert prem.span.text() == "norm_inf(x - x0) <= eps"
    assert [s.text() for s in prem.op_spans] == ["<="] and sp(prem.op_spans[0]) == (5, 31, 5, 33)
    call = prem.operands[0]
    assert call.func_span.text() == "norm_inf" and sp(call.func_span) == (5, 14, 5, 22)
    sub = call.args[0]
    assert sub.span.text() == "x - x0" and sp(sub) == (5, 23, 5, 29)
    assert sp(sub.right) == (5, 27, 5, 29)
    idx = concl.operands[0]
    assert idx.span.text() == "f(x)[y]" and sp(idx) == (5, 41, 5, 48)
    assert idx.base.span.text() == "f(x)" and idx.index.span.text() == "y"
    assert concl.operands[1].span.text() == "0.5"


def test_spans_with_unicode_and_multiline():
    m = parse("c =\n  ∀ x . x ≤ 1 ∧\n    x ≥ 0", "u.spec")
    q = m.decls[0].body
    assert sp(q) == (2, 3, 3, 10)
    conj = q.body
    assert conj.op_span.text() == "∧"
    assert conj.right.span.text() == "x ≥ 0" and sp(conj.right) == (3, 5, 3, 10)
    assert conj.left.op_spans[0].text() == "≤"


def test_module_keeps_its_source():
    m = parse("c = 1", "s.spec")
    assert m.source.name == "s.spec" and m.source.text == "c = 1"


# ---------------------------------------------------------------- issue 8: hostile input
@pytest.mark.parametrize("make", [
    lambda n: "not " * n + "a <= 1",
    lambda n: "-" * n + "a <= 1",
    lambda n: " + ".join(["a"] * n) + " <= 1",
    lambda n: "abs(" * n + "a" + ")" * n + " <= 1",
    lambda n: " => ".join(["a <= 1"] * n),
    lambda n: "".join(f"forall x{i} . " for i in range(n)) + "a <= 1",
])
def test_deep_nesting_parses_without_recursion(make):
    """The AST is built without recursion (the checker limits the depth, with a diagnostic)."""
    m = parse("property p(a : Real) = " + make(3000))
    deepest, stack = 0, [(m.decls[0].body, 1)]
    while stack:  # the AST's depth, measured without recursion either
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        for value in vars(node).values():
            for child in (value if isinstance(value, list) else [value]):
                if isinstance(child, ast.Expr):
                    stack.append((child, depth + 1))
    assert deepest >= 3000


def test_spans_count_lines_at_newlines_only():
    m = parse("# a\x0c b\u2028 c\nproperty p(a : Real) =\n  a <= 1")
    cmp = m.decls[0].body
    assert (cmp.span.line, cmp.span.col) == (3, 3)
    assert cmp.span.text() == "a <= 1"
