"""The intermediate representation that every lowering reads.

One uniform node type, `N(op, args, attr)`, read by every back end (compiler/backends.py: loss
under a logic - the exact checker being the logic "boolean" - search objective, sympy,
explain, verification query). Each lowering dispatches on `op` once, when it compiles a node
(lower.py: tables of torch functions for the arithmetic, comparison and reduction ops, one
branch for each other op), never at run time. Nodes are hash-consed: building the same subterm
twice (`f(x0)` in two places) gives the same object, so caches keyed by identity share the
work, and `walk` visits each node once (every pass is linear in the DAG size). The IR keeps a
formula as written: `Builder.and_` / `or_` only read a chain `A and B and C` as one n-ary node;
they never merge or drop operands (compiler/simplify.py applies a law only for a logic that
claims it).

Term ops:    const int var apply neg abs exp log add sub mul div max2 min2
             norm_inf norm_1 norm_2 normp sum max min softmax log_softmax argmax index
             max_except (search surrogate only)
Set ops:     range classes
Formula ops: true false cmp and or not implies iff forall_idx exists_idx forall exists
             (not/implies/iff exist only before normalisation)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robustspec.dsl.diagnostics import NO_SPAN, Span

from .types import Ty

FORMULA_OPS = {"true", "false", "cmp", "and", "or", "not", "implies", "iff",
               "forall_idx", "exists_idx", "forall", "exists"}
CONT_QUANT = ("forall", "exists")
IDX_QUANT = ("forall_idx", "exists_idx")
REDUCE_OPS = ("norm_inf", "norm_1", "norm_2", "sum", "max", "min")
FLIP = {"<=": ">=", "<": ">", ">=": "<=", ">": "<", "==": "==", "!=": "!="}
NEGATE = {"<=": ">", "<": ">=", ">=": "<", ">": "<=", "==": "!=", "!=": "=="}


class N:
    """An interned IR node. Compare and hash by identity (interning makes that structural)."""

    __slots__ = ("op", "args", "attr", "ty", "span", "_qvars", "__weakref__")

    def __init__(self, op: str, args: tuple, attr: Any, ty: Ty, span: Span):
        self.op, self.args, self.attr, self.ty, self.span = op, args, attr, ty, span
        self._qvars: frozenset[str] | None = None

    @property
    def is_formula(self) -> bool:
        return self.op in FORMULA_OPS

    @property
    def qvars(self) -> frozenset[str]:
        """Names of quantified (searched) continuous variables occurring free or bound below."""
        if self._qvars is None:
            s: set[str] = set()
            if self.op == "var" and self.attr[1] == "qvar":
                s.add(self.attr[0])
            for a in self.args:
                s |= a.qvars
            if self.op in CONT_QUANT:
                dom: Quant = self.attr
                for d in dom.domains:
                    s |= d.qvars()
            self._qvars = frozenset(s)
        return self._qvars

    def __repr__(self) -> str:
        return show(self)


@dataclass(frozen=True, eq=False)
class Domain:
    """The search domain of one continuous variable, inferred from its premises.

    The box is the intersection of all bounds given; L-infinity balls intersect into it exactly;
    an L2 ball is projected onto first and the box clipped after (alternating projection).
    """

    var: str
    ty: Ty
    lower: tuple[N, ...] = ()
    upper: tuple[N, ...] = ()
    linf: tuple[tuple[N, N], ...] = ()  # (center, radius)
    l2: tuple[tuple[N, N], ...] = ()
    premises: tuple[N, ...] = ()  # the premises consumed, for `explain`

    def qvars(self) -> set[str]:
        s: set[str] = set()
        for n in (*self.lower, *self.upper, *(x for p in self.linf + self.l2 for x in p)):
            s |= n.qvars
        return s


@dataclass(frozen=True, eq=False)
class Quant:
    """Attribute of a continuous quantifier node after normalisation."""

    vars: tuple[str, ...]
    domains: tuple[Domain, ...]
    premise: N | None = None  # residual premise (not part of the domain), pre-NNF; for vacuity
    conclusion: N | None = None
    spans: tuple[Span, ...] = field(default=())


class Builder:
    """Makes interned nodes. One builder per compiled spec."""

    def __init__(self) -> None:
        self._table: dict[tuple, N] = {}

    def mk(self, op: str, args: tuple = (), attr: Any = None, ty: Ty | None = None,
           span: Span = NO_SPAN) -> N:
        key = (op, tuple(id(a) for a in args), attr if _hashable(attr) else id(attr), type(attr), ty)
        node = self._table.get(key)
        if node is None:
            from .types import BOOL, ERROR
            node = N(op, tuple(args), attr, ty or (BOOL if op in FORMULA_OPS else ERROR), span)
            self._table[key] = node
        return node

    # convenience constructors used by the checker and normalisation
    def and_(self, items, span=NO_SPAN) -> N:
        """The n-ary conjunction of `items` as written: the checker passes a chain `A and B and
        C` as three items (the language's reading of a chain, translated by each logic's n-ary
        `and_`); a nested conjunction (`A and (B and C)`, a helper's body) stays nested.
        Nothing is rewritten: duplicates, `true` and `false` stay operands and nesting is kept
        (laws such as A and A = A or associativity hold in some logics only; see
        compiler/simplify.py). No items is `true`, one item is the item itself."""
        return self._chain("and", "true", items, span)

    def or_(self, items, span=NO_SPAN) -> N:
        """The n-ary disjunction of `items` as written (see `and_`); no items is `false`."""
        return self._chain("or", "false", items, span)

    def _chain(self, op: str, empty: str, items, span) -> N:
        # operands exactly as given: a nested and/or stays nested, since flattening it would
        # apply associativity, which not every logic has (STL's smooth min is not associative)
        flat: list[N] = list(items)
        if not flat:
            return self.mk(empty, span=span)
        return flat[0] if len(flat) == 1 else self.mk(op, tuple(flat), span=span)


def walk(root: N, *, into_domains: bool = False):
    """Every node reachable from `root`, each once (a seen-set: linear in the DAG size, however
    often a node is shared), parents before children; iterative, so depth is no limit.
    into_domains: also the bound terms of continuous quantifiers' domains."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        yield n
        kids = list(n.args)
        if into_domains and n.op in CONT_QUANT and isinstance(n.attr, Quant):
            for d in n.attr.domains:
                kids += [*d.lower, *d.upper, *(x for p in d.linf + d.l2 for x in p)]
        stack.extend(reversed(kids))


def dag_text(root: N) -> str:
    """The node graph as text, one line per distinct node ("#k op attr children"): linear in
    the DAG size (show() prints the tree, which a nested `<=>` makes exponential). For digests."""
    order: dict[int, int] = {}
    lines: list[str] = []
    nodes = list(walk(root, into_domains=True))
    for n in reversed(nodes):  # children before parents
        order[id(n)] = len(order)
    for n in reversed(nodes):
        attr = n.attr
        if isinstance(attr, Quant):
            doms = ";".join(f"{d.var}:" + ",".join(
                f"{k}{[order[id(t)] for t in ts]}" for k, ts in (
                    ("lo", d.lower), ("hi", d.upper),
                    ("linf", [x for p in d.linf for x in p]), ("l2", [x for p in d.l2 for x in p])))
                for d in attr.domains)
            attr = f"{' '.join(attr.vars)} in {doms}"
        kids = " ".join(f"#{order[id(a)]}" for a in n.args)
        lines.append(f"#{order[id(n)]} {n.op} {attr!r} {kids}".rstrip())
    return "\n".join(lines)


def _hashable(x: Any) -> bool:
    try:
        hash(x)
        return True
    except TypeError:
        return False


# ---------------------------------------------------------------- pretty printing
_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
_PREC = {"iff": 1, "implies": 2, "or": 3, "and": 4, "not": 5, "cmp": 6, "add": 7, "sub": 7,
         "mul": 8, "div": 8, "neg": 9}


def show(n: N, parent_prec: int = 0) -> str:
    """The node in the spec language's own notation (used by `explain` and in messages)."""
    op, a = n.op, n.args
    p = _PREC.get(op, 10)
    if op == "const":
        v = n.attr
        s = str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(v)
    elif op == "int":
        s = str(n.attr)
    elif op == "var":
        s = n.attr[0]
    elif op == "apply":
        s = f"{n.attr}({show(a[0])})"
    elif op in _INFIX:
        right_prec = p + 1 if op in ("sub", "div") else p
        s = f"{show(a[0], p)} {_INFIX[op]} {show(a[1], right_prec)}"
    elif op == "neg":
        s = f"-{show(a[0], p)}"
    elif op == "index":
        s = f"{show(a[0], 10)}[{show(a[1])}]"
    elif op == "max2":
        s = f"max({show(a[0])}, {show(a[1])})"
    elif op == "min2":
        s = f"min({show(a[0])}, {show(a[1])})"
    elif op == "normp":
        s = f"norm({show(a[0])}, {show(a[1])})"
    elif op == "max_except":
        s = f"max_except({show(a[0])}, {show(a[1])})"
    elif op == "range":
        s = f"range({show(a[0])})"
    elif op == "classes":
        s = "classes"
    elif op in ("true", "false"):
        s = op
    elif op == "cmp":
        cop, over = n.attr
        s = f"{show(a[0], p + 1)} {cop} {show(a[1], p + 1)}"
        if over == "any":
            s = f"some_element({s})"
            p = 10
    elif op in ("and", "or"):
        s = f" {op} ".join(show(x, p + 1) for x in a)
    elif op == "not":
        s = f"not {show(a[0], p)}"
    elif op == "implies":
        s = f"{show(a[0], p + 1)} => {show(a[1], p)}"
    elif op == "iff":
        s = f"{show(a[0], p + 1)} <=> {show(a[1], p + 1)}"
    elif op in IDX_QUANT:
        s = f"{op[:-4]} {n.attr} in {show(a[0])} . {show(a[1])}"
        p = 0
    elif op in CONT_QUANT:
        q = n.attr
        names = " ".join(q.vars) if isinstance(q, Quant) else str(q)
        s = f"{op} {names} . {show(a[0])}"
        if isinstance(q, Quant):
            s = f"{op} {names} in D({', '.join(q.vars)}) . {show(a[0])}"
        p = 0
    else:
        s = f"{op}({', '.join(show(x) for x in a)})"
    return f"({s})" if p < parent_prec else s
