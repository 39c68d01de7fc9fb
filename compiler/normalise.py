"""Normalisation: checked IR -> negation normal form with a quantifier plan.

1. Domain inference: the premises of each continuous quantifier that bound its variable
   (`norm_inf(x - x0) <= eps`, `0 <= x <= 1`, `norm_2(x - c) <= r`) become its search domain;
   what is left stays in the body. An unbounded variable is an error saying what to add.
2. Negation normal form: `not` pushed to the atoms, `=>` and `<=>` eliminated. Polarity falls
   out: a forall under a negation or left of `=>` becomes an exists.
3. Directly nested quantifiers of the same kind merge into one joint search.
4. For each continuous quantifier, the formula its search descends: the negated body for a
   forall (a counterexample search), the body for an exists (a witness search), with
   `argmax(v) == c` replaced by the equivalent margin `v[c] > max_except(v, c)` so that a
   classification property can still be attacked.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from robustspec.dsl.diagnostics import DiagnosticBag, Span

from .checker import CheckedModule
from .ir import CONT_QUANT, IDX_QUANT, NEGATE, Builder, Domain, N, Quant, walk
from .types import INT, REAL, TENSOR, tensor


@dataclass
class NormalProperty:
    name: str
    args: list
    formula: N  # NNF; continuous quantifiers carry a Quant attribute; args = (body, objective)
    original: N  # checked IR before NNF (with domains extracted), for vacuity and explain
    span: Span
    name_span: Span
    vacuity_premise: N | None = None  # NNF premise of the top-level implication, if any

    def quantifiers(self) -> list[N]:
        """Every continuous quantifier node, including the copies inside search objectives
        (an inner quantifier appears, negated, in its outer one's objective)."""
        return [n for n in walk(self.formula) if n.op in CONT_QUANT]

    def variables(self) -> list[str]:
        """The names of the searched variables, each once, outermost first."""
        return list(dict.fromkeys(v for q in self.quantifiers() for v in q.attr.vars))


def _names(n: N) -> set[str]:
    """The quantified-variable names occurring in n (free or bound)."""
    return set(n.qvars)


def _conjuncts(n: N) -> list[N]:
    """The conjuncts of a premise, nested conjunctions included (a helper's `0 <= x and x <= 1`
    inside a premise): premises are read for the domains they state, a Boolean reading."""
    if n.op != "and":
        return [n]
    out: list[N] = []
    for a in n.args:
        out.extend(_conjuncts(a))
    return out


def _without(b: Builder, n: N, drop: set[int]) -> N | None:
    """`n` with the conjuncts in `drop` (premises consumed into a domain) taken out and every
    other and-node kept as written (no flattening: not every logic is associative); None when
    nothing is left."""
    if id(n) in drop:
        return None
    if n.op != "and":
        return n
    kept = [k for k in (_without(b, a, drop) for a in n.args) if k is not None]
    if not kept:
        return None
    if len(kept) == len(n.args) and all(k is a for k, a in zip(kept, n.args)):
        return n
    return kept[0] if len(kept) == 1 else b.and_(kept, span=n.span)


def _implications(b: Builder, premises: list[N], conclusion: N, span) -> N:
    """`P1 => P2 => ... => C` with the premises as given (a chain stays a chain)."""
    for p in reversed(premises):
        conclusion = b.mk("implies", (p, conclusion), span=span)
    return conclusion


class Normaliser:
    def __init__(self, checked: CheckedModule, diags: DiagnosticBag):
        self.c = checked
        self.b: Builder = checked.builder
        self.diags = diags
        # every pass is memoised on nodes: linear in the DAG size (nested `<=>` shares its sides)
        self._memo: dict[tuple, N] = {}

    def _memoised(self, key: tuple, make) -> N:
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = make()
        return got

    # ------------------------------------------------------------ 1. domains
    def domains(self, n: N) -> N:
        if not n.args and n.op not in CONT_QUANT:
            return n
        return self._memoised(("domains", id(n)), lambda: self._domains(n))

    def _domains(self, n: N) -> N:
        if n.op in CONT_QUANT and isinstance(n.attr, str):
            body = self._lift(n.op, n.attr, self.domains(n.args[0]))
            return self._quantifier(n, body)
        new_args = tuple(self.domains(a) for a in n.args)
        if all(x is y for x, y in zip(new_args, n.args)):
            return n
        if n.op == "and":
            return self.b.and_(new_args, span=n.span)
        if n.op == "or":
            return self.b.or_(new_args, span=n.span)
        return self.b.mk(n.op, new_args, n.attr, n.ty, n.span)

    def _lift(self, kind: str, v: str, body: N) -> N:
        """`forall x . forall z . P(x) and Q(x, z) => C` bounds x by P: a premise of the inner
        quantifier (of the same kind) that bounds the outer variable and does not mention the
        inner ones moves out, `forall x . P(x) => forall z . Q(x, z) => C` (the same formula;
        for exists, the same with conjunctions)."""
        if body.op != kind or not isinstance(body.attr, Quant):
            return body
        q: Quant = body.attr
        inner = set(q.vars)
        pool = q.premise if kind == "forall" else body.args[0]
        if pool is None:
            return body
        lifted = [p for p in _conjuncts(pool)
                  if not (inner & _names(p)) and self._bound(p, v) is not None]
        if not lifted:
            return body
        drop = {id(p) for p in lifted}
        rest = _without(self.b, pool, drop)
        if kind == "forall":
            # the inner body's premises stay a chain (P1 => P2 => C), less what moved out
            chain, concl = [], body.args[0]
            while concl is not q.conclusion and concl.op == "implies":
                chain.append(concl.args[0])
                concl = concl.args[1]
            kept = [r for r in (_without(self.b, c, drop) for c in chain) if r is not None]
            premise = (kept[0] if len(kept) == 1 else self.b.and_(kept)) if kept else None
            residual = _implications(self.b, kept, q.conclusion, body.span)
            q2 = Quant(q.vars, q.domains, premise, q.conclusion, q.spans)
            inner_node = self.b.mk(kind, (residual,), q2, body.ty, body.span)
            return self.b.mk("implies", (self.b.and_(lifted), inner_node), span=body.span)
        residual = rest if rest is not None else self.b.mk("true")
        q2 = Quant(q.vars, q.domains, None, residual, q.spans)
        inner_node = self.b.mk(kind, (residual,), q2, body.ty, body.span)
        return self.b.and_(lifted + [inner_node], span=body.span)

    def _quantifier(self, n: N, body: N) -> N:
        v = n.attr
        chain: list[N] = []  # the premises as written: P1 => P2 => C, or the exists body
        conclusion: N | None = body
        if n.op == "forall":
            while conclusion is not None and conclusion.op == "implies":
                chain.append(conclusion.args[0])
                conclusion = conclusion.args[1]
        else:
            chain, conclusion = [body], None
        premises = [p for c in chain for p in _conjuncts(c)]
        lower, upper, linf, l2, used, consumed = [], [], [], [], [], set()
        for p in premises:
            kind = self._bound(p, v)
            if kind is None or (kind[0] == "l2" and l2):
                continue  # not a bound, or a second L2 ball: stays a premise, checked exactly
            used.append(p)
            if p.attr[0] not in ("<", ">"):  # a strict bound is searched in the closed set
                consumed.add(id(p))           # and stays in the body, checked exactly
            what, a, b = kind
            if what in ("lower", "upper"):
                (lower if what == "lower" else upper).append(a)
            else:
                (linf if what == "linf" else l2).append((a, b))
        var_node = self._find_var(body, v)
        ty = var_node.ty if var_node is not None else TENSOR
        if ty.shape is None:
            for c, _r in linf + l2:
                if c.ty.shape is not None:
                    ty = c.ty
                    break
            else:
                for c in lower + upper:
                    if c.ty.shape not in (None, ()):
                        ty = c.ty
                        break
        dom = Domain(v, ty, tuple(lower), tuple(upper), tuple(linf), tuple(l2), tuple(used))
        bounded = bool(linf or l2 or (lower and upper))
        if not bounded:
            missing = "above" if lower else ("below" if upper else "")
            premise_form = ("forall {v} . norm_inf({v} - x0) <= eps => ..." if n.op == "forall"
                            else "exists {v} . norm_inf({v} - x0) <= eps and ...").format(v=v)
            self.diags.error(
                f"the variable '{v}' is not bounded{' ' + missing if missing else ''}: "
                f"there is nowhere to search for it",
                n.span,
                hint=f"add a premise that bounds it, e.g. `{premise_form}` or `0 <= {v} <= 1`")
        elif ty.shape is None and not (linf or l2) and all(c.ty.shape == () for c in lower + upper):
            self.diags.error(f"the shape of '{v}' cannot be inferred from its premises", n.span,
                             hint=f"annotate it: `{n.op} {v} : Tensor[784] . ...`, or bound it by "
                                  f"a ball around a tensor: `norm_inf({v} - x0) <= eps`")
        # what is not consumed into the domain stays, nested as written
        rest = [r for r in (_without(self.b, c, consumed) for c in chain) if r is not None]
        if n.op == "forall":
            premise = (rest[0] if len(rest) == 1 else self.b.and_(rest)) if rest else None
            residual = _implications(self.b, rest, conclusion, n.span)
        else:
            premise, residual = None, rest[0] if rest else self.b.mk("true")
            conclusion = residual
        q = Quant((v,), (dom,), premise, conclusion, (n.span,))
        return self.b.mk(n.op, (residual,), q, n.ty, n.span)

    def _find_var(self, n: N, v: str) -> N | None:
        return next((m for m in walk(n) if m.op == "var" and m.attr == (v, "qvar")), None)

    def _bound(self, p: N, v: str):
        """Classify premise p as a bound on v: ('lower'|'upper', bound, None) or ('linf'|'l2', c, r)."""
        if p.op != "cmp":
            return None
        op, _ = p.attr
        a, b = p.args

        def is_v(n):
            return n.op == "var" and n.attr == (v, "qvar")

        def free(n):
            return v not in n.qvars

        # ball: norm(x - c) <= r   or   r >= norm(x - c)
        for norm_side, r_side, ok_ops in ((a, b, ("<=", "<")), (b, a, (">=", ">"))):
            if op in ok_ops and norm_side.op in ("norm_inf", "norm_2", "abs") and free(r_side):
                d = norm_side.args[0]
                if d.op == "sub":
                    x, c = d.args
                    if is_v(c):
                        x, c = c, x
                    if is_v(x) and free(c):  # abs(x - c) <= r elementwise is the L-inf ball
                        return ("l2" if norm_side.op == "norm_2" else "linf", c, r_side)
        if is_v(a) and free(b):
            if op in ("<=", "<"):
                return ("upper", b, None)
            if op in (">=", ">"):
                return ("lower", b, None)
        if is_v(b) and free(a):
            if op in ("<=", "<"):
                return ("lower", a, None)
            if op in (">=", ">"):
                return ("upper", a, None)
        return None

    # ------------------------------------------------------------ 2. NNF
    def nnf(self, n: N, neg: bool = False) -> N:
        return self._memoised(("nnf", id(n), neg), lambda: self._nnf(n, neg))

    def _nnf(self, n: N, neg: bool = False) -> N:
        op = n.op
        if op == "true" or op == "false":
            return self.b.mk({"true": "false", "false": "true"}[op] if neg else op, span=n.span)
        if op == "cmp":
            if not neg:
                return n
            cop, over = n.attr
            elementwise = _elementwise(n)
            return self.b.mk("cmp", n.args, (NEGATE[cop], ("any" if over == "all" else "all")
                                             if elementwise else "all"), span=n.span)
        if op == "not":
            return self.nnf(n.args[0], not neg)
        if op in ("and", "or"):
            items = [self.nnf(a, neg) for a in n.args]
            conj = (op == "and") != neg
            return self.b.and_(items, span=n.span) if conj else self.b.or_(items, span=n.span)
        if op == "implies":
            a, c = n.args
            if neg:
                return self.b.and_([self.nnf(a), self.nnf(c, True)], span=n.span)
            return self.b.or_([self.nnf(a, True), self.nnf(c)], span=n.span)
        if op == "iff":
            a, c = n.args
            if neg:
                return self.b.or_([self.b.and_([self.nnf(a), self.nnf(c, True)]),
                                   self.b.and_([self.nnf(c), self.nnf(a, True)])], span=n.span)
            return self.b.and_([self.b.or_([self.nnf(a, True), self.nnf(c)]),
                                self.b.or_([self.nnf(c, True), self.nnf(a)])], span=n.span)
        if op in IDX_QUANT:
            kind = op if not neg else ("exists_idx" if op == "forall_idx" else "forall_idx")
            return self.b.mk(kind, (n.args[0], self.nnf(n.args[1], neg)), n.attr, span=n.span)
        if op in CONT_QUANT:
            kind = op if not neg else ("exists" if op == "forall" else "forall")
            q: Quant = n.attr
            body = self.nnf(n.args[0], neg)
            if neg:
                q = replace(q, premise=None, conclusion=None)
            return self._quant_node(kind, body, q, n.span)
        raise AssertionError(f"unexpected formula op {op}")

    def _quant_node(self, kind: str, body: N, q: Quant, span: Span) -> N:
        # 3. merge `forall x . forall z . phi` into one joint search when z's domain ignores x
        if body.op == kind and not set(q.vars) & set().union(*(d.qvars() for d in body.attr.domains)):
            inner: Quant = body.attr
            prem = [p for p in (q.premise, inner.premise) if p is not None]
            q = Quant(q.vars + inner.vars, q.domains + inner.domains,
                      self.b.and_(prem) if prem else None,
                      inner.conclusion if q.conclusion is not None else None, q.spans + inner.spans)
            body = body.args[0]
        # 4. the search objective
        target = self.nnf(body, True) if kind == "forall" else body
        objective = self._surrogate(target)
        return self.b.mk(kind, (body, objective), q, span=span)

    # ------------------------------------------------------------ 4. argmax surrogate
    def _surrogate(self, n: N) -> N:
        return self._memoised(("surrogate", id(n)), lambda: self._surrogate_of(n))

    def _surrogate_of(self, n: N) -> N:
        if n.op == "cmp" and n.attr[0] in ("==", "!=") and (n.args[0].op == "argmax" or
                                                            n.args[1].op == "argmax"):
            a, c = n.args if n.args[0].op == "argmax" else (n.args[1], n.args[0])
            v = a.args[0]
            score = self.b.mk("index", (v, c), ty=tensor(None if v.ty.shape is None else v.ty.shape[1:]),
                              span=a.span)
            other = self.b.mk("max_except", (v, c), ty=REAL, span=a.span)
            op = ">" if n.attr[0] == "==" else "<="
            return self.b.mk("cmp", (score, other), (op, "all"), span=n.span)
        if not n.args or n.op in ("var", "const", "int"):
            return n
        if n.op in CONT_QUANT:
            return n  # has its own objective
        new = tuple(self._surrogate(a) for a in n.args)
        if all(x is y for x, y in zip(new, n.args)):
            return n
        return self.b.mk(n.op, new, n.attr, n.ty, n.span)


def _elementwise(cmp: N) -> bool:
    """Is this comparison over tensor elements (so its negation is 'for some element')?"""
    a, b = cmp.args
    return any(x.ty.kind == "real" and x.ty.shape != () for x in (a, b))


def check_structure(p: NormalProperty, diags: DiagnosticBag) -> None:
    """Report quantifier placements the search cannot handle, with what to write instead."""
    seen: dict[str, Span] = {}
    visited: set[tuple[int, int]] = set()

    def visit(n: N, under_index: N | None):
        key = (id(n), id(under_index))
        if key in visited:
            return
        visited.add(key)
        if n.op in CONT_QUANT:
            if under_index is not None:
                diags.error(f"a '{n.op}' over tensors inside '{under_index.op[:-4]} "
                            f"{under_index.attr} in ...' is not supported", n.span,
                            hint="put the tensor quantifier outside the finite one")
            for v, s in zip(n.attr.vars, n.attr.spans):
                if v in seen and seen[v] != s:  # the same quantifier copied by `<=>` is fine
                    diags.error(f"'{v}' is bound twice in property '{p.name}'", s,
                                hint="give each quantified variable its own name")
                seen[v] = s
            visit(n.args[0], under_index)
            return
        if n.op in IDX_QUANT:
            visit(n.args[1], n)
            return
        for a in n.args:
            visit(a, under_index)
    visit(p.formula, None)


def normalise(checked: CheckedModule, diags: DiagnosticBag) -> dict[str, NormalProperty]:
    norm = Normaliser(checked, diags)
    out = {}
    for name, prop in checked.properties.items():
        if prop.body.ty.kind == "error":
            continue
        original = norm.domains(prop.body)
        formula = norm.nnf(original)
        premise = None
        if original.op == "forall" and original.attr.premise is not None:
            premise = norm.nnf(original.attr.premise)
        elif original.op == "implies":
            premise = norm.nnf(original.args[0])
        np_ = NormalProperty(name, prop.args, formula, original, prop.span, prop.name_span, premise)
        check_structure(np_, diags)
        out[name] = np_
    return out


__all__ = ["NormalProperty", "normalise", "INT"]
