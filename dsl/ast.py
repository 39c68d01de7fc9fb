"""The abstract syntax tree: plain dataclasses, each node with the source span it came from.

The AST is what the user wrote, nothing resolved: names are strings, helpers are not inlined,
chains `0 <= x <= 1` stay chains. The compiler turns it into the IR.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .diagnostics import NO_SPAN, Span


@dataclass
class Node:
    span: Span = field(default=NO_SPAN, repr=False, compare=False, kw_only=True)


# ---------------------------------------------------------------- types
@dataclass
class TypeExpr(Node):
    """`Real`, `Label`, `Tensor`, `Tensor[784]`, `Tensor[1, 28, 28]`, `Tensor[n]`."""

    name: str
    dims: list[int | str] | None = None

    def __str__(self) -> str:
        if self.dims is None:
            return self.name
        return f"{self.name}[{', '.join(map(str, self.dims))}]"


# ---------------------------------------------------------------- expressions
@dataclass
class Expr(Node):
    pass


@dataclass
class Number(Expr):
    value: float
    is_int: bool


@dataclass
class BoolLit(Expr):
    value: bool


@dataclass
class Name(Expr):
    id: str


@dataclass
class Call(Expr):
    func: str
    args: list[Expr]
    func_span: Span = field(default=NO_SPAN, repr=False, compare=False)


@dataclass
class Index(Expr):
    base: Expr
    index: Expr


@dataclass
class Neg(Expr):
    """Unary minus on a term."""

    operand: Expr


@dataclass
class BinOp(Expr):
    """Arithmetic: + - * /."""

    op: str
    left: Expr
    right: Expr


@dataclass
class Compare(Expr):
    """A comparison chain: operands[0] ops[0] operands[1] ops[1] operands[2] ..."""

    ops: list[str]
    operands: list[Expr]
    op_spans: list[Span] = field(default_factory=list, repr=False, compare=False)


@dataclass
class Not(Expr):
    operand: Expr


@dataclass
class Connective(Expr):
    """and, or, =>, <=> (binary; the compiler flattens and/or)."""

    op: str
    left: Expr
    right: Expr
    op_span: Span = field(default=NO_SPAN, repr=False, compare=False)


@dataclass
class Quantifier(Expr):
    """`forall x . body`, `forall x : Tensor[784] . body`, or `forall j in classes . body`."""

    kind: str  # "forall" | "exists"
    var: str
    body: Expr
    var_type: TypeExpr | None = None
    over: Expr | None = None  # the finite set of an index quantifier
    var_span: Span = field(default=NO_SPAN, repr=False, compare=False)


# ---------------------------------------------------------------- declarations
@dataclass
class Param(Node):
    name: str
    type: TypeExpr | None = None


@dataclass
class Decl(Node):
    name: str
    name_span: Span = field(default=NO_SPAN, repr=False, compare=False, kw_only=True)


@dataclass
class NetworkDecl(Decl):
    input: TypeExpr
    output: TypeExpr


@dataclass
class ParamDecl(Decl):
    type: TypeExpr
    default: Expr | None = None


@dataclass
class DefDecl(Decl):
    """A helper: `valid(x) = 0 <= x <= 1`, or a constant `classes = range(10)` (params None)."""

    params: list[Param] | None
    body: Expr


@dataclass
class PropertyDecl(Decl):
    params: list[Param]
    body: Expr


@dataclass
class Module(Node):
    decls: list[Decl]
    source: object = field(default=None, repr=False, compare=False)
