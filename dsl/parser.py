"""Parse `.spec` text into the AST with lark (LALR), keeping a source span on every node.

Syntax errors become diagnostics with the offending token underlined and a hint for the
mistakes people actually make (`=` for `==`, a quantifier without its `.`, unclosed brackets).
"""
from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from . import ast
from .diagnostics import Diagnostic, Source, Span, SpecError


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = resources.files(__package__).joinpath("grammar.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _span_tok(src: Source, tok: Token) -> Span:
    return Span(src, tok.line, tok.column, tok.end_line or tok.line, tok.end_column or tok.column + 1)


def _span_meta(src: Source, meta) -> Span:
    if getattr(meta, "empty", True):
        return Span(src, 0, 0, 0, 0)
    return Span(src, meta.line, meta.column, meta.end_line, meta.end_column)


# the largest integer a spec may write where an exact whole number is needed (a tensor
# dimension): every integer up to 2**53 is exact as a float, and torch takes it as a size
MAX_EXACT_INT = 2 ** 53


class _ToAst(Transformer_NonRecursive):
    """lark tree -> dataclasses; every node gets its span. Non-recursive, so nesting depth
    never exhausts Python's stack here (the checker limits it, with a diagnostic)."""

    def __init__(self, src: Source):
        super().__init__()
        self.src = src
        self.problems: list[Diagnostic] = []

    def _s(self, meta) -> Span:
        return _span_meta(self.src, meta)

    def _t(self, tok: Token) -> Span:
        return _span_tok(self.src, tok)

    # ---- declarations
    @v_args(meta=True)
    def start(self, meta, decls):
        return ast.Module(list(decls), span=self._s(meta), source=self.src)

    @v_args(meta=True)
    def network_decl(self, meta, c):
        name, tin, _arrow, tout = c
        return ast.NetworkDecl(str(name), tin, tout, span=self._s(meta), name_span=self._t(name))

    @v_args(meta=True)
    def param_decl(self, meta, c):
        name, typ, default = c
        return ast.ParamDecl(str(name), typ, default, span=self._s(meta), name_span=self._t(name))

    @v_args(meta=True)
    def property_decl(self, meta, c):
        name, params, body = c
        return ast.PropertyDecl(str(name), params or [], body, span=self._s(meta),
                                name_span=self._t(name))

    @v_args(meta=True)
    def def_decl(self, meta, c):
        name, params, body = c
        return ast.DefDecl(str(name), params or [], body, span=self._s(meta), name_span=self._t(name))

    @v_args(meta=True)
    def const_decl(self, meta, c):
        name, body = c
        return ast.DefDecl(str(name), None, body, span=self._s(meta), name_span=self._t(name))

    @v_args(meta=True)
    def type(self, meta, c):
        name, *dims = c
        return ast.TypeExpr(str(name), list(dims) if dims else None, span=self._s(meta))

    def dim_int(self, c):
        text = str(c[0])
        if len(text) > 16 or int(text) > MAX_EXACT_INT:  # int() of 4300+ digits even raises
            self.problems.append(Diagnostic(
                "error", f"the dimension {text[:20]}{'...' if len(text) > 20 else ''} is too large",
                self._t(c[0]), hint=f"a tensor dimension is a whole number up to {MAX_EXACT_INT}"))
            return 1
        return int(text)

    def dim_sym(self, c):
        return str(c[0])

    def params(self, c):
        return list(c)

    @v_args(meta=True)
    def param(self, meta, c):
        name, typ = c
        return ast.Param(str(name), typ, span=self._s(meta))

    def args(self, c):
        return list(c)

    # ---- formulas
    @v_args(meta=True)
    def _connective(self, meta, c, op):
        left, tok, right = c
        return ast.Connective(op, left, right, span=self._s(meta), op_span=self._t(tok))

    def iff(self, meta, c):
        return self._connective(meta, c, "<=>")

    def implies(self, meta, c):
        return self._connective(meta, c, "=>")

    def or_(self, meta, c):
        return self._connective(meta, c, "or")

    def and_(self, meta, c):
        return self._connective(meta, c, "and")

    iff = v_args(meta=True)(iff)
    implies = v_args(meta=True)(implies)
    or_ = v_args(meta=True)(or_)
    and_ = v_args(meta=True)(and_)

    @v_args(meta=True)
    def not_(self, meta, c):
        return ast.Not(c[1], span=self._s(meta))

    @v_args(meta=True)
    def quant_cont(self, meta, c):
        q, var, typ, body = c
        kind = {"∀": "forall", "∃": "exists"}.get(str(q), str(q))
        return ast.Quantifier(kind, str(var), body, var_type=typ, span=self._s(meta),
                              var_span=self._t(var))

    @v_args(meta=True)
    def quant_idx(self, meta, c):
        q, var, over, body = c
        kind = {"∀": "forall", "∃": "exists"}.get(str(q), str(q))
        return ast.Quantifier(kind, str(var), body, over=over, span=self._s(meta),
                              var_span=self._t(var))

    # ---- terms
    _COMP = {"≤": "<=", "≥": ">=", "≠": "!="}

    @v_args(meta=True)
    def compare(self, meta, c):
        operands, ops, spans = [c[0]], [], []
        for i in range(1, len(c), 2):
            ops.append(self._COMP.get(str(c[i]), str(c[i])))
            spans.append(self._t(c[i]))
            operands.append(c[i + 1])
        return ast.Compare(ops, operands, span=self._s(meta), op_spans=spans)

    @v_args(meta=True)
    def binop(self, meta, c):
        left, op, right = c
        return ast.BinOp(str(op), left, right, span=self._s(meta))

    @v_args(meta=True)
    def neg_term(self, meta, c):
        return ast.Neg(c[1], span=self._s(meta))

    @v_args(meta=True)
    def index(self, meta, c):
        return ast.Index(c[0], c[1], span=self._s(meta))

    @v_args(meta=True)
    def call(self, meta, c):
        name, args = c
        return ast.Call(str(name), args or [], span=self._s(meta), func_span=self._t(name))

    @v_args(meta=True)
    def number(self, meta, c):
        text = str(c[0])
        is_int = text.isdigit()
        return ast.Number(float(text), is_int, span=self._s(meta))

    @v_args(meta=True)
    def true(self, meta, c):
        return ast.BoolLit(True, span=self._s(meta))

    @v_args(meta=True)
    def false(self, meta, c):
        return ast.BoolLit(False, span=self._s(meta))

    @v_args(meta=True)
    def name(self, meta, c):
        return ast.Name(str(c[0]), span=self._s(meta))


# ---------------------------------------------------------------- syntax errors
_TERMINAL_TEXT = {
    "NAME": "a name", "NUMBER": "a number", "INT": "an integer", "LPAR": "'('", "RPAR": "')'",
    "LSQB": "'['", "RSQB": "']'", "COMMA": "','", "DOT": "'.'", "COLON": "':'", "EQUAL": "'='",
    "COMP": "a comparison", "PLUS": "'+'", "MINUS": "'-'", "TIMES": "'*'", "DIVIDE": "'/'",
    "AND": "'and'", "OR": "'or'", "NOT": "'not'", "IMPLIES": "'=>'", "IFF": "'<=>'",
    "QUANT": "'forall' or 'exists'", "TRUE": "'true'", "FALSE": "'false'", "ARROW": "'->'",
    "IN": "'in'", "NETWORK": "'network'", "PARAM": "'param'", "PROPERTY": "'property'",
    "DEF": "'def'", "$END": "end of file",
}


def _describe_expected(expected: set[str]) -> str:
    names = sorted({_TERMINAL_TEXT.get(t, t) for t in expected if not t.startswith("__")})
    if len(names) > 8:
        return ""
    return "expected " + ", ".join(names[:-1]) + (" or " if len(names) > 1 else "") + names[-1] \
        if names else ""


_QUANT_HEAD = re.compile(r"(forall|exists|∀|∃)\s+[A-Za-z_][A-Za-z_0-9']*"
                         r"(\s*:\s*[A-Za-z_]+(\s*\[[^\]]*\])?)?\s*$")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_'")


def _ends_with_def_head(text: str) -> bool:
    """Does the text end with `name(args)` (a property's or helper's signature)? Scanned from
    the end in linear time: a regex search for it was quadratic in the length of a name."""
    text = text.rstrip()
    if not text.endswith(")"):
        return False
    open_ = text.rfind("(")
    if open_ < 0 or ")" in text[open_ + 1:-1]:
        return False
    head = text[:open_].rstrip()
    i = len(head)
    while i > 0 and head[i - 1] in _NAME_CHARS:
        i -= 1
    return i < len(head) and (head[i].isalpha() or head[i] == "_")


def _strip_comments(text: str) -> str:
    return re.sub(r"#[^\n]*", "", text)


def _unclosed(text: str, open_: str, close: str) -> int:
    return text.count(open_) - text.count(close)


def _syntax_hint(tok: Token, expected: set[str], before: str) -> str:
    """The likeliest fix, judged from the text before the error, never from lark's merged
    expected-token sets alone (they are too large to say what is missing)."""
    if tok.type == "EQUAL":
        return "'=' only defines a name; compare with '=='"
    if _QUANT_HEAD.search(before):
        return "a quantifier is written 'forall x . body' (note the '.')"
    if tok.type == "DOT" and re.search(r"(forall|exists|∀|∃)\s*$", before):
        return "name the quantified variable: 'forall x . body'"
    if tok.type == "RPAR" and _unclosed(before, "(", ")") <= 0:
        return "this ')' has no matching '('"
    if tok.type == "RSQB" and _unclosed(before, "[", "]") <= 0:
        return "this ']' has no matching '['"
    if _unclosed(before, "(", ")") > 0 and (tok.type == "$END" or "RPAR" in expected) and \
            tok.type in ("$END", "PROPERTY", "PARAM", "NETWORK", "DEF", "NAME"):
        return "a '(' is not closed"
    if _unclosed(before, "[", "]") > 0 and "RSQB" in expected:
        return "a '[' is not closed"
    if "EQUAL" in expected and _ends_with_def_head(before):
        return "a property or helper is defined with '=': property p(x0 : Tensor) = ..."
    if tok.type == "$END":
        return "the declaration is incomplete"
    if tok.type in ("NUMBER", "LPAR") and re.search(r"[\w)\]]\s*$", before):
        return ("two values stand next to each other: is an operator (+, -, *, /, <=, and, ...) "
                "missing before this?")
    return ("declarations start with 'network', 'param', 'property' or a helper's name; "
            "check the text just before this point")


def _syntax_diagnostic(src: Source, err: UnexpectedInput) -> Diagnostic:
    if isinstance(err, UnexpectedCharacters):
        ch = src.text[err.pos_in_stream] if err.pos_in_stream < len(src.text) else "?"
        span = Span(src, err.line, err.column, err.line, err.column + 1)
        hint = None
        if ch == "=" or ch == "!":
            hint = "comparisons are written <=, >=, <, >, == and !="
        elif ch in "|&":
            hint = "write 'and', 'or' and 'not' for the connectives"
        else:
            hint = ("names are letters, digits, _ and '; numbers like 0.1 or 1e-3; "
                    "comments start with #")
        return Diagnostic("error", f"unexpected character {ch!r}", span, hint)
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    if tok.type == "$END":
        text = src.text.rstrip()
        line = text.count("\n") + 1  # lines as lark counts them: '\n' only
        col = len(text) - (text.rfind("\n") + 1) + 1
        span = Span(src, line, col, line, col + 1)
        msg = "unexpected end of file"
    else:
        span = _span_tok(src, tok)
        msg = f"unexpected {str(tok)!r}"
    expected = set(err.expected or ())
    before = src.text[: tok.start_pos] if tok.type != "$END" else src.text
    hint = _syntax_hint(tok, expected, _strip_comments(before))
    exp = _describe_expected(expected)
    if exp:
        msg += f"; {exp}"
    return Diagnostic("error", msg, span, hint)


def parse(text: str, filename: str = "<string>") -> ast.Module:
    """Parse spec text. Raises SpecError (with a rendered diagnostic) on a syntax error."""
    src = Source(filename, text)
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as err:
        raise SpecError([_syntax_diagnostic(src, err)]) from None
    to_ast = _ToAst(src)
    module = to_ast.transform(tree)
    if to_ast.problems:
        raise SpecError(to_ast.problems)
    return module


def parse_file(path: str | Path) -> ast.Module:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([Diagnostic("error", f"no such spec file: {path}",
                                    hint="check the path; spec files end in .spec")]) from None
    except IsADirectoryError:
        raise SpecError([Diagnostic("error", f"{path} is a folder, not a spec file",
                                    hint=f"name a file in it, e.g. {path / 'example.spec'}")]) from None
    except OSError as e:  # permissions, a symlink loop, a name too long, ...
        raise SpecError([Diagnostic("error", f"{path} cannot be read: {e.strerror or e}",
                                    hint="check the path and the file's permissions")]) from None
    if data.startswith(b"\xef\xbb\xbf"):  # a BOM (Windows editors) is no syntax error
        data = data[3:]
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")  # universal newlines, as before
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError([_not_utf8(path, data, e)]) from None
    return parse(text, str(path))


def _not_utf8(path: Path, data: bytes, e: UnicodeDecodeError) -> Diagnostic:
    """The first byte that is not UTF-8, located by line and column (columns in characters,
    as the parser counts them) and shown in the line as U+FFFD."""
    line_start = data.rfind(b"\n", 0, e.start) + 1
    line = data.count(b"\n", 0, e.start) + 1
    col = len(data[line_start:e.start].decode("utf-8", errors="replace")) + 1
    src = Source(str(path), data.decode("utf-8", errors="replace"))
    return Diagnostic("error", f"{path} is not UTF-8 text: byte 0x{data[e.start]:02x} "
                      f"cannot be decoded ({e.reason})", Span(src, line, col, line, col + 1),
                      hint="save the file as UTF-8 (most editors offer it under 'Save as' or "
                           "'encoding')")
