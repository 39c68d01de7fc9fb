"""Name resolution, type and shape checking: the AST becomes IR, or diagnostics explain why not.

Helpers are macros: each call is checked with its arguments' types and inlined, so a shape error
inside a helper is found at the call that causes it. Errors are collected (a type `ERROR` stops
cascades) and reported together, each with a hint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from robustspec.dsl import ast
from robustspec.dsl.diagnostics import DiagnosticBag, Span, did_you_mean
from robustspec.dsl.parser import MAX_EXACT_INT

from .ir import Builder, N
from .types import BOOL, ERROR, INT, REAL, SET, TENSOR, Ty, broadcast, fmt_shape, tensor

TYPE_NAMES = {"Real": "real", "Tensor": "tensor", "Label": "int", "Index": "int", "Nat": "int",
              "Int": "int", "Bool": "bool"}
# Names a property argument may not take: they are options of Property.loss/search/holds
# (one list, compiler/options.py).
from .options import RESERVED_ARGS  # noqa: E402

BUILTINS = {
    "norm_inf": "norm_inf(v): the largest absolute element of v",
    "norm_1": "norm_1(v): the sum of absolute elements of v",
    "norm_2": "norm_2(v): the Euclidean norm of v",
    "norm": "norm(v, p): the p-norm of v (p = 1, 2 or inf)",
    "abs": "abs(v): elementwise absolute value",
    "max": "max(v) over the elements, or max(a, b) elementwise",
    "min": "min(v) over the elements, or min(a, b) elementwise",
    "sum": "sum(v): the sum of the elements",
    "exp": "exp(v)", "log": "log(v)",
    "softmax": "softmax(v) over the last axis",
    "log_softmax": "log_softmax(v) over the last axis",
    "argmax": "argmax(v): the index of the largest element (no gradient)",
    "range": "range(n): the finite set 0, 1, ..., n-1",
}
CONSTANTS = {"inf": math.inf}

# Limits, so that whatever the checker accepts also compiles and runs (documented in the
# README's paragraph on the spec language). Nesting: every later phase walks formulas
# recursively, so an expression may nest at most MAX_NESTING levels (long `and`/`or` chains and parentheses do not
# count; a 500-term sum or 500 `not`s do), after helpers are inlined.
MAX_NESTING = 100
# Finite quantifiers: each nested one adds a tensor axis (torch allows 64 in all), and together
# they enumerate every combination of their sets' elements.
MAX_FINITE_NESTING = 16
MAX_INDEX_COMBINATIONS = 2 ** 20
MAX_TENSOR_RANK = 32
# Searches: a quantifier over tensors nested in another is searched once per step of the outer
# search, so the cost multiplies with each level (three levels take minutes by default).
MAX_SEARCH_NESTING = 2


@dataclass
class PropertyIR:
    name: str
    args: list[tuple[str, Ty]]
    body: N
    span: Span
    name_span: Span


@dataclass
class CheckedModule:
    networks: dict[str, Ty] = field(default_factory=dict)
    network_spans: dict[str, Span] = field(default_factory=dict)
    params: dict[str, tuple[Ty, float | int]] = field(default_factory=dict)
    param_spans: dict[str, Span] = field(default_factory=dict)
    properties: dict[str, PropertyIR] = field(default_factory=dict)
    builder: Builder = field(default_factory=Builder)


def _resolve_type(t: ast.TypeExpr, diags: DiagnosticBag) -> Ty:
    kind = TYPE_NAMES.get(t.name)
    if kind is None:
        diags.error(f"unknown type '{t.name}'", t.span,
                    hint=did_you_mean(t.name, TYPE_NAMES) or
                    "types are Real, Tensor, Tensor[d1, d2, ...], Label, Index, Nat, Int and Bool")
        return ERROR
    if t.dims is not None and kind != "tensor":
        diags.error(f"type '{t.name}' takes no dimensions", t.span,
                    hint=f"only Tensor has dimensions, e.g. Tensor[{', '.join(map(str, t.dims))}]")
        return ERROR
    if kind == "tensor":
        if t.dims is not None and len(t.dims) > MAX_TENSOR_RANK:
            diags.error(f"a tensor type has at most {MAX_TENSOR_RANK} dimensions, this one "
                        f"{len(t.dims)}", t.span, hint="flatten the tensor, e.g. Tensor[784]")
            return ERROR
        return tensor(tuple(t.dims)) if t.dims is not None else TENSOR
    base = {"real": REAL, "int": INT, "bool": BOOL}[kind]
    return Ty(base.kind, base.shape, name=t.name) if kind == "int" else base


class Checker:
    def __init__(self, module: ast.Module, overrides: dict[str, object] | None = None):
        self.m = module
        self.diags = DiagnosticBag()
        self.out = CheckedModule()
        self.b = self.out.builder
        self.helpers: dict[str, ast.DefDecl] = {}
        self.overrides = dict(overrides or {})
        self._inlining: list[str] = []
        self._bound: set[str] = set()  # names bound by quantifiers so far in this property
        self._depth = 0  # nesting of the expression being checked (helpers inlined)
        self._too_deep = False  # reported once per declaration
        self._finite: list[int | None] = []  # the sizes of the enclosing finite quantifiers' sets
        self._set_sizes: dict[N, int | None] = {}  # each range node's size, where known
        self._searches = 0  # enclosing quantifiers over tensors

    # ------------------------------------------------------------ entry
    def run(self) -> CheckedModule:
        seen: dict[str, Span] = {}
        for d in self.m.decls:
            if d.name in seen:
                prev = seen[d.name]
                self.diags.error(f"'{d.name}' is declared twice", d.name_span,
                                 hint="rename one of them",
                                 notes=[f"first declared at {prev.file}:{prev.line}:{prev.col}"])
                continue
            seen[d.name] = d.name_span
            if isinstance(d, ast.DefDecl):
                self.helpers[d.name] = d
        for d in self.m.decls:
            if isinstance(d, ast.NetworkDecl) and self.out.network_spans.get(d.name) is None:
                tin = _resolve_type(d.input, self.diags)
                tout = _resolve_type(d.output, self.diags)
                for t, te in ((tin, d.input), (tout, d.output)):
                    if t.kind not in ("real", "error"):
                        self.diags.error(f"a network maps tensors to tensors, not {te}", te.span,
                                         hint="write e.g. `network f : Tensor[784] -> Tensor[10]`")
                self.out.networks[d.name] = Ty("net", inp=tin.shape if tin.kind == "real" else None,
                                               out=tout.shape if tout.kind == "real" else None)
                self.out.network_spans[d.name] = d.name_span
        for d in self.m.decls:
            if isinstance(d, ast.ParamDecl):
                self._param(d)
        for name in self.overrides:
            if name not in self.out.params:
                self.diags.error(f"unknown parameter '{name}' given in params",
                                 hint=did_you_mean(name, self.out.params) or
                                 f"the spec declares: {', '.join(self.out.params) or 'no parameters'}")
        for d in self.m.decls:
            if isinstance(d, ast.DefDecl):
                self._check_helper_alone(d)
            elif isinstance(d, ast.PropertyDecl):
                self._property(d)
        return self.out

    # ------------------------------------------------------------ declarations
    def _param(self, d: ast.ParamDecl) -> None:
        ty = _resolve_type(d.type, self.diags)
        if ty.kind not in ("real", "int", "error") or (ty.kind == "real" and ty.shape != ()):
            self.diags.error(f"a parameter is a number, not {d.type}", d.type.span,
                             hint="declare it Real, Nat or Int")
            ty = ERROR
        self._too_deep = False
        value: object = None
        where = d.name_span  # where a bad value is reported: the literal, or the name it overrides
        origin = "params gives"
        if d.name in self.overrides:
            value = _number(self.overrides[d.name])
            if value is None:
                self.diags.error(f"parameter '{d.name}' must be a number, but params gives "
                                 f"{self.overrides[d.name]!r}", d.name_span,
                                 hint="pass one number, e.g. params={'%s': 0.1}; for one value per "
                                      "example pass params= to loss/search/holds instead" % d.name)
        elif d.default is not None:
            node = self._expr(d.default, {})
            value = self._const_value(node, d.default.span)
            where, origin = d.default.span, "its value is"
        else:
            self.diags.error(f"parameter '{d.name}' has no value", d.name_span,
                             hint=f"give it a default (`param {d.name} : {d.type} = ...`) or pass "
                                  f"params={{'{d.name}': ...}}")
        if value is not None:
            value = self._param_value(d, ty, value, where, origin)
        self.out.params[d.name] = (ty, value)
        self.out.param_spans[d.name] = d.name_span

    def _param_value(self, d: ast.ParamDecl, ty: Ty, value: float | int, where: Span,
                     origin: str) -> float | int | None:
        """A parameter's value, finite and of its type, or None after a diagnostic: an
        infinite or NaN eps would make a property vacuous or every loss NaN."""
        shown = _show_number(value)
        if isinstance(value, float) and not math.isfinite(value):
            self.diags.error(f"parameter '{d.name}' must be a finite number, but {origin} {shown}",
                             where, hint="give a finite number; a bound that is never reached is "
                                         "better left out of the property")
            return None
        if ty.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                self.diags.error(f"parameter '{d.name}' is {d.type} but {origin} {shown}", where,
                                 hint="give a whole number")
                return None
            value = int(value)
            if abs(value) > MAX_EXACT_INT:
                self.diags.error(f"parameter '{d.name}' is too large: {origin} {shown}", where,
                                 hint=f"whole numbers in a spec are at most {MAX_EXACT_INT} (2**53) "
                                      "in size")
                return None
            if value < 0 and d.type.name == "Nat":
                self.diags.error(f"parameter '{d.name}' is Nat but {origin} {shown}", where,
                                 hint="give a whole number >= 0, or declare it Int")
                return None
            return value
        try:
            return float(value)
        except OverflowError:  # an int beyond the float range
            self.diags.error(f"parameter '{d.name}' is too large: {origin} {shown}", where,
                             hint="give a number below 1e308")
            return None

    def _const_value(self, n: N, span: Span) -> float | int | None:
        if n.ty.kind == "error":
            return None
        try:
            return _fold(n, self.out.params)
        except _Unknown:  # an earlier parameter without a value: already reported
            return None
        except ZeroDivisionError:
            self.diags.error("division by zero in a parameter's default", span,
                             hint="divide by a number that is not 0")
        except OverflowError:
            self.diags.error("a parameter's default is too large to compute", span,
                             hint="give a number below 1e308")
        except _NotConstant:
            self.diags.error("a parameter's default must be a constant", span,
                             hint="use numbers, + - * / and earlier parameters")
        return None

    def _args(self, params: list[ast.Param], role: str) -> dict[str, tuple[str, Ty, Span]]:
        scope: dict[str, tuple[str, Ty, Span]] = {}
        for p in params:
            if p.name in scope:
                self.diags.error(f"argument '{p.name}' appears twice", p.span, hint="rename one")
                continue
            ty = _resolve_type(p.type, self.diags) if p.type else (TENSOR if role == "arg" else ERROR)
            if role == "arg" and p.type is None:
                self.diags.error(f"property argument '{p.name}' needs a type", p.span,
                                 hint=f"write `{p.name} : Tensor` or `{p.name} : Label`")
            if role == "arg" and p.name in RESERVED_ARGS:
                self.diags.error(f"'{p.name}' is reserved as an option name", p.span,
                                 hint="rename the argument (e.g. x0, y)")
            scope[p.name] = (role, ty, p.span)
        return scope

    def _property(self, d: ast.PropertyDecl) -> None:
        self._bound = set()
        self._too_deep = False
        scope = self._args(d.params, "arg")
        env = {name: self.b.mk("var", attr=(name, "arg"), ty=ty, span=sp)
               for name, (_r, ty, sp) in scope.items()}
        body = self._formula(d.body, env, "the body of a property")
        tall = _taller_than(body, MAX_NESTING + 2)  # + 2: a comparison chain's and, the body
        if tall is not None:
            body = self._too_deep_here(tall.span if tall.span.source else d.span, inlined=True)
        self.out.properties[d.name] = PropertyIR(
            d.name, [(n, t) for n, (_r, t, _s) in scope.items()], body, d.span, d.name_span)

    def _check_helper_alone(self, d: ast.DefDecl) -> None:
        """Check a helper once on its own so unknown names in unused helpers are still reported."""
        self._too_deep = False
        if d.params is None:
            self._expr(d.body, {})
            return
        self._bound = set()
        scope = self._args(d.params, "helper")
        env = {}
        for name, (_r, ty, sp) in scope.items():
            env[name] = self.b.mk("var", attr=(name, "helperarg"), ty=ty if ty.kind != "error" else ERROR,
                                  span=sp)
        self._inlining.append(d.name)
        self._expr(d.body, env)
        self._inlining.pop()

    # ------------------------------------------------------------ expressions
    def _err(self, span: Span, msg: str, hint: str | None = None, notes=()) -> N:
        self.diags.error(msg, span, hint, notes)
        return self.b.mk("error", attr=id(span), ty=ERROR, span=span)

    def _formula(self, e: ast.Expr, env: dict[str, N], what: str) -> N:
        n = self._expr(e, env)
        if n.ty.kind in ("bool", "error"):
            return n
        return self._err(e.span, f"{what} must be a formula, but this is a {n.ty}",
                         hint="compare it with something, e.g. `... <= delta`")

    def _term(self, e: ast.Expr, env: dict[str, N], what: str) -> N:
        n = self._expr(e, env)
        if n.ty.kind == "bool":
            return self._err(e.span, f"{what} must be a value, but this is a formula",
                             hint="formulas combine with and, or, not, => and <=>, not with arithmetic")
        if n.ty.kind in ("net", "set"):
            return self._err(e.span, f"{what} must be a value, but this is a {n.ty}",
                             hint="a finite set only follows `in` in `forall j in ...`; a network "
                                  "is applied to an input, f(x)")
        return n

    def _expr(self, e: ast.Expr, env: dict[str, N]) -> N:
        if self._depth >= MAX_NESTING:
            return self._too_deep_here(e.span)
        self._depth += 1
        try:
            return getattr(self, "_e_" + type(e).__name__)(e, env)
        finally:
            self._depth -= 1

    def _too_deep_here(self, span: Span, inlined: bool = False) -> N:
        """One diagnostic per declaration for nesting beyond MAX_NESTING; later ones are
        consequences of the same shape."""
        if self._too_deep:
            return self.b.mk("error", attr=id(span), ty=ERROR, span=span)
        self._too_deep = True
        return self._err(span, f"this expression is nested more than {MAX_NESTING} levels deep"
                         + (" once helpers are inlined" if inlined else ""),
                         hint="group a long sum or chain with parentheses, e.g. (a + b + c) + "
                              "(d + e + f), or use sum(v) on a tensor; chains of `and`/`or` "
                              "and parentheses have no limit")

    def _e_Number(self, e: ast.Number, env) -> N:
        text = e.span.text() or repr(e.value)
        shown = text if len(text) <= 24 else text[:20] + "..."
        if e.is_int and e.value > MAX_EXACT_INT:
            return self._err(e.span, f"the whole number {shown} is too large to be exact",
                             hint=f"whole numbers are at most {MAX_EXACT_INT} (2**53); write a "
                                  "real number such as 1e20 if that is what is meant")
        if not math.isfinite(e.value):
            return self._err(e.span, f"the number {shown} is too large for a float (the largest "
                             "is about 1.8e308)", hint="write a smaller number, or `inf` where "
                             "infinity is meant")
        if e.value == 0 and any(c in "123456789" for c in text.split("e")[0].split("E")[0]):
            return self._err(e.span, f"the number {shown} is too small for a float: it would be 0",
                             hint="write 0, or a number above 1e-308")
        if e.is_int:
            return self.b.mk("const", attr=int(e.value), ty=REAL, span=e.span)
        return self.b.mk("const", attr=e.value, ty=REAL, span=e.span)

    def _e_BoolLit(self, e: ast.BoolLit, env) -> N:
        return self.b.mk("true" if e.value else "false", span=e.span)

    def _e_Name(self, e: ast.Name, env) -> N:
        if e.id in env:
            return env[e.id]
        if e.id in self.out.params:
            ty = self.out.params[e.id][0]
            return self.b.mk("var", attr=(e.id, "param"), ty=ty, span=e.span)
        if e.id in self.out.networks:
            return self._err(e.span, f"'{e.id}' is a network, not a value",
                             hint=f"apply it to an input: {e.id}(x)")
        if e.id in self.helpers:
            h = self.helpers[e.id]
            if h.params is None:
                return self._inline(h, [], e.span, env)
            return self._err(e.span, f"'{e.id}' takes {len(h.params)} argument(s)",
                             hint=f"call it: {e.id}({', '.join(p.name for p in h.params)})")
        if e.id == "classes":
            return self._classes(e.span)
        if e.id in CONSTANTS:
            return self.b.mk("const", attr=CONSTANTS[e.id], ty=REAL, span=e.span)
        if e.id in BUILTINS:
            return self._err(e.span, f"'{e.id}' is a function", hint=BUILTINS[e.id])
        known = list(env) + list(self.out.params) + list(self.helpers) + ["classes", "inf"]
        return self._err(e.span, f"unknown name '{e.id}'",
                         hint=did_you_mean(e.id, known) or "declare it with `param`, or bind it as a "
                         "property argument or with forall/exists")

    def _classes(self, span: Span) -> N:
        nets = list(self.out.networks.items())
        if len(nets) != 1:
            return self._err(span, "'classes' needs exactly one network to take its outputs from",
                             hint="write range(10) instead" if nets else
                             "declare the network: `network f : Tensor -> Tensor[10]`")
        name, ty = nets[0]
        if ty.out is not None and len(ty.out) != 1:
            return self._err(span, f"'classes' needs a network with a vector output, not {fmt_shape(ty.out)}",
                             hint="write range(n) instead")
        size = ty.out[0] if ty.out and isinstance(ty.out[0], int) else None
        node = self.b.mk("classes", attr=(name, size), ty=SET, span=span)
        self._set_sizes[node] = size
        return node

    def _inline(self, h: ast.DefDecl, args: list[N], span: Span, env) -> N:
        if h.name in self._inlining:
            return self._err(span, f"'{h.name}' calls itself", hint="helpers cannot be recursive")
        local = {}
        for p, a in zip(h.params or [], args):
            if p.type is not None:
                want = _resolve_type(p.type, DiagnosticBag())
                self._expect_arg(want, a, span, f"argument '{p.name}' of '{h.name}'")
            local[p.name] = a
        self._inlining.append(h.name)
        try:
            return self._expr(h.body, local)
        finally:
            self._inlining.pop()

    def _expect_arg(self, want: Ty, got: N, span: Span, what: str) -> None:
        if want.kind == "error" or got.ty.kind == "error":
            return
        if want.kind == "real" and got.ty.kind == "real":
            if want.shape is not None and got.ty.shape is not None and want.shape != got.ty.shape:
                self.diags.error(f"{what} should be {want}, got {got.ty}", span,
                                 hint="pass a value of the declared type, or change the helper's "
                                      "argument type")
            return
        if want.kind != got.ty.kind and not (want.kind == "int" and _int_literal(got)):
            self.diags.error(f"{what} should be {want}, got {got.ty}", span,
                             hint="pass a value of the declared type, or change the helper's "
                                  "argument type")

    def _e_Call(self, e: ast.Call, env) -> N:
        f = e.func
        if f in env or f in self.out.params:
            return self._err(e.func_span, f"'{f}' is a value, not a function",
                             hint="only networks, helpers and built-in functions can be applied")
        if f in self.out.networks:
            return self._apply_network(e, env)
        if f in self.helpers:
            h = self.helpers[f]
            n_params = len(h.params or [])
            if len(e.args) != n_params:
                return self._err(e.span, f"'{f}' takes {n_params} argument(s) but {len(e.args)} were given",
                                 hint=f"call it as {f}({', '.join(p.name for p in h.params or [])})",
                                 notes=[f"'{f}' is defined at {h.span.file}:{h.span.line}:{h.span.col}"])
            args = [self._expr(a, env) for a in e.args]
            if any(a.ty.kind == "error" for a in args):
                return self.b.mk("error", attr=id(e), ty=ERROR, span=e.span)
            return self._inline(h, args, e.span, env)
        if f in BUILTINS:
            return self._builtin(e, env)
        known = list(self.out.networks) + list(self.helpers) + list(BUILTINS)
        return self._err(e.func_span, f"unknown function '{f}'",
                         hint=did_you_mean(f, known) or "declare a network or a helper with this name")

    def _apply_network(self, e: ast.Call, env) -> N:
        net = self.out.networks[e.func]
        if len(e.args) != 1:
            return self._err(e.span, f"network '{e.func}' takes one input but {len(e.args)} were given",
                             hint=f"apply it to one tensor: {e.func}(x)")
        x = self._term(e.args[0], env, f"the input of '{e.func}'")
        if x.ty.kind == "error":
            return x
        if x.ty.kind != "real":
            return self._err(e.args[0].span, f"the input of '{e.func}' must be a tensor, not {x.ty}",
                             hint=f"apply '{e.func}' to a tensor argument (`x0 : Tensor`); labels and "
                                  "indices only index tensors and compare")
        if net.inp is not None and x.ty.shape is not None and x.ty.shape != () and x.ty.shape != net.inp:
            return self._err(e.args[0].span,
                             f"shape mismatch: '{e.func}' takes {fmt_shape(net.inp)} but this is {x.ty}",
                             hint=f"declare the network as `network {e.func} : {x.ty} -> ...` or pass "
                                  f"an input of shape {fmt_shape(net.inp)}")
        return self.b.mk("apply", (x,), attr=e.func, ty=tensor(net.out), span=e.span)

    def _builtin(self, e: ast.Call, env) -> N:
        f, n = e.func, len(e.args)
        arity = {"norm": (2,), "max": (1, 2), "min": (1, 2), "range": (1,)}.get(f, (1,))
        if n not in arity:
            want = " or ".join(map(str, arity))
            return self._err(e.span, f"'{f}' takes {want} argument(s) but {n} were given",
                             hint=BUILTINS[f])
        if f == "range":
            k = self._expr(e.args[0], env)
            if k.ty.kind == "error":
                return k
            if not (k.ty.kind == "int" or _int_literal(k)):
                return self._err(e.args[0].span, f"range needs a whole number, not {k.ty}",
                                 hint="write range(10) or range(n) with `param n : Nat = 10`")
            try:
                size = _fold(k, self.out.params)
            except _Unknown:  # a helper's argument (checked at each call) or a reported error
                size = None
            except _NotConstant:
                return self._err(e.args[0].span, "the size of range(n) must be known before the "
                                 "property runs", hint="give a whole number, a parameter or "
                                 "arithmetic on them, e.g. range(n) with `param n : Nat = 10`")
            if size is not None and not 0 <= size <= MAX_INDEX_COMBINATIONS:
                return self._err(e.args[0].span, f"range({size}) "
                                 + ("has a negative size" if size < 0 else "is too large"),
                                 hint=f"range(n) needs 0 <= n <= {MAX_INDEX_COMBINATIONS} (2**20)")
            node = self.b.mk("range", (k,), ty=SET, span=e.span)
            self._set_sizes[node] = size
            return node
        args = [self._term(a, env, f"the argument of '{f}'") for a in e.args]
        if any(a.ty.kind == "error" for a in args):
            return self.b.mk("error", attr=id(e), ty=ERROR, span=e.span)
        for a, ae in zip(args, e.args):
            if a.ty.kind == "int" and not (f in ("max", "min") and n == 2):
                return self._err(ae.span, f"'{f}' needs a real value, not an index",
                                 hint=f"apply it to a tensor or a number; {BUILTINS[f]}")
        v = args[0]
        if f in ("norm_inf", "norm_1", "norm_2", "sum") or (f in ("max", "min") and n == 1):
            op = f if n == 1 else f
            return self.b.mk(op, (v,), ty=REAL, span=e.span)
        if f == "norm":
            p = args[1]
            if p.op != "const" or p.attr not in (1, 2, math.inf):
                return self._err(e.args[1].span, "norm(v, p) needs p = 1, 2 or inf",
                                 hint="write norm(v, inf) or norm_inf(v)")
            op = {1: "norm_1", 2: "norm_2", math.inf: "norm_inf"}[p.attr]
            return self.b.mk(op, (v,), ty=REAL, span=e.span)
        if f in ("max", "min"):
            a, b = args
            if a.ty.kind == "int" and b.ty.kind == "int":
                return self.b.mk(f + "2", (a, b), ty=INT, span=e.span)
            shape = broadcast(a.ty.shape, b.ty.shape)
            if isinstance(shape, str):
                return self._err(e.span, f"shape mismatch in {f}: {shape}",
                                 hint="both arguments must have the same shape, or one must be a scalar")
            return self.b.mk(f + "2", (a, b), ty=tensor(shape), span=e.span)
        if f in ("abs", "exp", "log"):
            return self.b.mk(f, (v,), ty=v.ty, span=e.span)
        if f in ("softmax", "log_softmax", "argmax"):
            if v.ty.shape == ():
                return self._err(e.args[0].span, f"'{f}' needs a tensor, not a scalar",
                                 hint=f"apply it to a network's output: {f}(f(x))")
            if f == "argmax":
                return self.b.mk("argmax", (v,), ty=INT, span=e.span)
            return self.b.mk(f, (v,), ty=v.ty, span=e.span)
        raise AssertionError(f)

    def _e_Index(self, e: ast.Index, env) -> N:
        base = self._term(e.base, env, "an indexed value")
        idx = self._expr(e.index, env)
        if base.ty.kind == "error" or idx.ty.kind == "error":
            return self.b.mk("error", attr=id(e), ty=ERROR, span=e.span)
        if base.ty.kind != "real" or base.ty.shape == ():
            return self._err(e.base.span, f"cannot index a {base.ty}",
                             hint="only tensors can be indexed, e.g. f(x)[y]")
        if not (idx.ty.kind == "int" or _int_literal(idx)):
            return self._err(e.index.span, f"an index must be a whole number or a label, not {idx.ty}",
                             hint="index with a Label argument, an index variable or an integer")
        if idx.op == "const" and base.ty.shape is not None and isinstance(base.ty.shape[0], int):
            if not 0 <= idx.attr < base.ty.shape[0]:
                return self._err(e.index.span, f"index {idx.attr} is out of range for {base.ty}",
                                 hint=f"indices run from 0 to {base.ty.shape[0] - 1}")
        shape = None if base.ty.shape is None else base.ty.shape[1:]
        if idx.op == "const":
            idx = self.b.mk("int", attr=int(idx.attr), ty=INT, span=idx.span)
        return self.b.mk("index", (base, idx), ty=tensor(shape), span=e.span)

    def _e_Neg(self, e: ast.Neg, env) -> N:
        v = self._term(e.operand, env, "the operand of '-'")
        if v.ty.kind == "error":
            return v
        if v.op == "const":
            return self.b.mk("const", attr=-v.attr, ty=REAL, span=e.span)
        return self.b.mk("neg", (v,), ty=v.ty, span=e.span)

    _ARITH = {"+": "add", "-": "sub", "*": "mul", "/": "div"}

    def _e_BinOp(self, e: ast.BinOp, env) -> N:
        a = self._term(e.left, env, f"the left operand of '{e.op}'")
        b = self._term(e.right, env, f"the right operand of '{e.op}'")
        if a.ty.kind == "error" or b.ty.kind == "error":
            return self.b.mk("error", attr=id(e), ty=ERROR, span=e.span)
        op = self._ARITH[e.op]
        ints = [x.ty.kind == "int" for x in (a, b)]
        if any(ints):
            if all(ints) or (ints[0] and _int_literal(b)) or (ints[1] and _int_literal(a)):
                if op == "div":
                    return self._err(e.span, "cannot divide indices",
                                     hint="indices add, subtract and multiply; compare them instead")
                return self.b.mk(op, (a, b), ty=INT, span=e.span)
            return self._err(e.span, f"cannot mix an index and a real number in '{e.op}'",
                             hint="indices and labels only index tensors and compare with each other")
        shape = broadcast(a.ty.shape, b.ty.shape)
        if isinstance(shape, str):
            return self._err(e.span, f"shape mismatch in '{e.op}': {shape}",
                             hint="both sides must have the same shape, or one must be a scalar")
        return self.b.mk(op, (a, b), ty=tensor(shape), span=e.span)

    def _e_Compare(self, e: ast.Compare, env) -> N:
        vals = [self._term(o, env, "an operand of a comparison") for o in e.operands]
        parts = []
        for i, op in enumerate(e.ops):
            a, b = vals[i], vals[i + 1]
            span = Span(e.span.source, e.operands[i].span.line, e.operands[i].span.col,
                        e.operands[i + 1].span.end_line, e.operands[i + 1].span.end_col)
            if a.ty.kind == "error" or b.ty.kind == "error":
                parts.append(self.b.mk("error", attr=id(span), ty=ERROR, span=span))
                continue
            ia, ib = a.ty.kind == "int", b.ty.kind == "int"
            if ia or ib:
                if not (ia and ib) and not (ia and _int_literal(b)) and not (ib and _int_literal(a)):
                    parts.append(self._err(span, "cannot compare an index with a real number",
                                           hint="compare indices with indices, labels or whole numbers"))
                    continue
                if ia and not ib:
                    b = self.b.mk("int", attr=int(b.attr), ty=INT, span=b.span)
                if ib and not ia:
                    a = self.b.mk("int", attr=int(a.attr), ty=INT, span=a.span)
            else:
                shape = broadcast(a.ty.shape, b.ty.shape)
                if isinstance(shape, str):
                    parts.append(self._err(span, f"shape mismatch in '{op}': {shape}",
                                           hint="compare values of the same shape, or a tensor with a scalar"))
                    continue
            parts.append(self.b.mk("cmp", (a, b), attr=(op, "all"), span=span))
        if any(p.ty.kind == "error" for p in parts):
            return self.b.mk("error", attr=id(e), ty=ERROR, span=e.span)
        return self.b.and_(parts, span=e.span)

    def _e_Not(self, e: ast.Not, env) -> N:
        v = self._formula(e.operand, env, "the operand of 'not'")
        if v.ty.kind == "error":
            return v
        return self.b.mk("not", (v,), span=e.span)

    def _e_Connective(self, e: ast.Connective, env) -> N:
        if e.op in ("and", "or"):
            return self._chain(e, env)
        a = self._formula(e.left, env, f"the left side of '{e.op}'")
        b = self._formula(e.right, env, f"the right side of '{e.op}'")
        if a.ty.kind == "error" or b.ty.kind == "error":
            return self.b.mk("error", attr=id(e), ty=ERROR, span=e.span)
        if e.op == "and":
            return self.b.and_([a, b], span=e.span)
        if e.op == "or":
            return self.b.or_([a, b], span=e.span)
        return self.b.mk({"=>": "implies", "<=>": "iff"}[e.op], (a, b), span=e.span)

    def _chain(self, e: ast.Connective, env) -> N:
        """`a and b and c ...` (left-nested in the AST) as one n-ary node, walked in a loop: a
        chain of any length nests one level, as the IR's flat and/or does."""
        rights = []
        left: ast.Expr = e
        while isinstance(left, ast.Connective) and left.op == e.op:
            rights.append(left.right)
            left = left.left
        operands = [self._formula(left, env, f"the left side of '{e.op}'")]
        operands += [self._formula(r, env, f"the right side of '{e.op}'") for r in reversed(rights)]
        if any(a.ty.kind == "error" for a in operands):
            return self.b.mk("error", attr=id(e), ty=ERROR, span=e.span)
        return (self.b.and_ if e.op == "and" else self.b.or_)(operands, span=e.span)

    def _binder(self, name: str, finite: bool) -> str:
        """The IR name of a bound variable. A helper's quantifier, or a second finite one,
        gets a fresh name when the property already binds that name, so inlining never
        captures a variable (`top(v, j) = forall k ...` called with an outer `k`), a helper
        can be used twice, and two index quantifiers never share cached values. A tensor
        variable the user wrote twice keeps its name: reported as bound twice."""
        out = name
        if name in self._bound and (finite or self._inlining):
            k = 2
            while f"{name}_{k}" in self._bound:
                k += 1
            out = f"{name}_{k}"
        self._bound.add(out)
        return out

    def _e_Quantifier(self, e: ast.Quantifier, env) -> N:
        if e.var in env and env[e.var].op == "var" and env[e.var].attr[1] in ("qvar", "index"):
            return self._err(e.var_span, f"'{e.var}' is already bound by an enclosing quantifier",
                             hint=f"rename it, e.g. {e.var}2")
        if e.var in self.out.params or e.var in self.out.networks:
            return self._err(e.var_span, f"'{e.var}' is already the name of a "
                             f"{'parameter' if e.var in self.out.params else 'network'}",
                             hint="rename the bound variable")
        if e.over is not None:
            over = self._expr(e.over, env)
            if over.ty.kind == "error":
                return over
            if over.ty.kind != "set":
                return self._err(e.over.span, f"'{e.kind} {e.var} in ...' needs a finite set, not a {over.ty}",
                                 hint="write `in classes` or `in range(10)`; to quantify over tensors "
                                      f"write `{e.kind} {e.var} . premises => ...`")
            size = self._set_sizes.get(over)
            if len(self._finite) >= MAX_FINITE_NESTING:
                return self._err(e.var_span, f"finite quantifiers are nested more than "
                                 f"{MAX_FINITE_NESTING} deep here",
                                 hint=f"at most {MAX_FINITE_NESTING} `forall/exists ... in` may "
                                      "enclose each other (each adds a tensor axis)")
            combos = math.prod(k for k in [*self._finite, size] if k is not None)
            if combos > MAX_INDEX_COMBINATIONS:
                return self._err(e.var_span, f"the finite quantifiers around here enumerate "
                                 f"{combos} index combinations",
                                 hint=f"nested finite sets may have at most {MAX_INDEX_COMBINATIONS} "
                                      "(2**20) combinations of elements together; use smaller sets")
            name = self._binder(e.var, finite=True)
            var = self.b.mk("var", attr=(name, "index"), ty=INT, span=e.var_span)
            self._finite.append(size)
            try:
                body = self._formula(e.body, {**env, e.var: var}, f"the body of '{e.kind}'")
            finally:
                self._finite.pop()
            if body.ty.kind == "error":
                return body
            return self.b.mk(e.kind + "_idx", (over, body), attr=name, span=e.span)
        ty = TENSOR
        if e.var_type is not None:
            ty = _resolve_type(e.var_type, self.diags)
            if ty.kind not in ("real", "error"):
                return self._err(e.var_type.span, f"'{e.kind} {e.var}' ranges over tensors, not {e.var_type}",
                                 hint=f"to range over a finite set write `{e.kind} {e.var} in range(n)`")
        if self._searches >= MAX_SEARCH_NESTING:
            return self._err(e.var_span, f"quantifiers over tensors are nested more than "
                             f"{MAX_SEARCH_NESTING} deep here",
                             hint=f"at most {MAX_SEARCH_NESTING} `forall/exists x . ...` over tensors "
                                  "may enclose each other: an inner one is searched at every step "
                                  "of the outer search; quantify several variables in one level "
                                  "or over finite sets (`forall j in range(n)`)")
        name = self._binder(e.var, finite=False)
        var = self.b.mk("var", attr=(name, "qvar"), ty=ty, span=e.var_span)
        self._searches += 1
        try:
            body = self._formula(e.body, {**env, e.var: var}, f"the body of '{e.kind}'")
        finally:
            self._searches -= 1
        if body.ty.kind == "error":
            return body
        return self.b.mk(e.kind, (body,), attr=name, span=e.span)


class _NotConstant(Exception):
    """The expression depends on something only known when the property runs."""


class _Unknown(Exception):
    """The expression depends on a value that is already reported (or a helper's argument)."""


_FOLD = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
         "div": lambda a, b: a / b}


def _fold(n: N, params: dict[str, tuple[Ty, object]]) -> float | int:
    """The value of a constant expression (numbers, parameters, + - * /), exactly as Python
    computes it; _NotConstant if it depends on data, _Unknown if on a missing value."""
    if n.op in ("const", "int"):
        return n.attr
    if n.op == "var" and n.attr[1] == "param":
        value = params[n.attr[0]][1] if n.attr[0] in params else None
        if value is None:
            raise _Unknown(n.attr[0])
        return value
    if n.op == "var" and n.attr[1] == "helperarg":
        raise _Unknown(n.attr[0])
    if n.op == "neg":
        return -_fold(n.args[0], params)
    if n.op in _FOLD:
        return _FOLD[n.op](_fold(n.args[0], params), _fold(n.args[1], params))
    raise _NotConstant(n.op)


def _taller_than(root: N, limit: int) -> N | None:
    """A node more than `limit` levels tall (the lowest one on a tallest path), or None.
    Iterative and linear in the number of distinct nodes (the IR is a DAG)."""
    height: dict[int, int] = {}
    stack: list[tuple[N, bool]] = [(root, False)]
    while stack:
        n, done = stack.pop()
        if id(n) in height:
            continue
        if done:
            height[id(n)] = 1 + max((height[id(a)] for a in n.args), default=0)
            continue
        stack.append((n, True))
        stack.extend((a, False) for a in n.args if id(a) not in height)
    if height[id(root)] <= limit:
        return None
    n = root
    while True:  # walk down a tallest path to its lowest node above the limit
        nxt = max(n.args, key=lambda a: height[id(a)])
        if height[id(nxt)] <= limit:
            return n
        n = nxt


def _show_number(v: float | int) -> str:
    if isinstance(v, int) and abs(v) > 10 ** 20:  # str() of a 4300-digit int even raises
        return f"an integer of about {int(abs(v).bit_length() * 0.30103) + 1} digits"
    return repr(v) if isinstance(v, float) else str(v)


def _number(v: object) -> float | int | None:
    """A parameter value given from Python as a plain number (or a 0-dim tensor/array)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    item = getattr(v, "item", None)
    if callable(item) and getattr(v, "ndim", None) == 0:
        return _number(item())
    return None


def _int_literal(n: N) -> bool:
    return n.op == "const" and isinstance(n.attr, int)


def check(module: ast.Module, params: dict[str, object] | None = None) -> tuple[CheckedModule, DiagnosticBag]:
    c = Checker(module, params)
    out = c.run()
    # the same error can surface once per inlining of a helper: keep the first
    seen, unique = set(), []
    for d in c.diags.items:
        key = (d.severity, d.message, d.span.line, d.span.col)
        if key not in seen:
            seen.add(key)
            unique.append(d)
    c.diags.items = unique
    return out, c.diags
