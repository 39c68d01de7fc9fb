"""`robustspec explain`: what a property means after compilation, in words and formulas.

Prints the normalised formula (NNF), each quantifier's polarity, inferred domain and search,
and the loss under the chosen logic as a formula (from the sympy lowering).
"""
from __future__ import annotations

import sympy as sp

from robustspec.dsl.diagnostics import SpecError

from .ir import Domain, N, show, walk
from .logics import get_logic
from .lower import untranslatable
from .property import Property
from .search import Search, make_search
from .symbolic import symbolic_loss


def describe_domain(d: Domain) -> str:
    parts = []
    for c, r in d.linf:
        parts.append(f"L-inf ball  norm_inf({d.var} - {show(c)}) <= {show(r)}")
    for c, r in d.l2:
        parts.append(f"L2 ball  norm_2({d.var} - {show(c)}) <= {show(r)}")
    if d.lower or d.upper:
        lo = ", ".join(show(x) for x in d.lower) or "-inf"
        hi = ", ".join(show(x) for x in d.upper) or "inf"
        parts.append(f"box  [{'max(' + lo + ')' if len(d.lower) > 1 else lo}, "
                     f"{'min(' + hi + ')' if len(d.upper) > 1 else hi}] elementwise")
    text = "  ∩  ".join(parts)
    if d.linf and (d.lower or d.upper):
        c, r = d.linf[0]
        lo = ", ".join(show(x) for x in d.lower)
        hi = ", ".join(show(x) for x in d.upper)
        text += (f"\n              = [max({lo + ', ' if lo else ''}{show(c)} - {show(r)}), "
                 f"min({hi + ', ' if hi else ''}{show(c)} + {show(r)})] elementwise")
    return text


def explain(prop: Property, logic: str = "dl2", search: Search | str = "pgd",
            unicode: bool = True, latex: bool = False) -> str:
    lg = get_logic(logic)
    strategy = make_search(search)
    lines = [f"property {prop.name}({', '.join(f'{n} : {t}' for n, t in prop.args)})"
             f"    [{prop.spec_name}]",
             "",
             "normalised (negation normal form, domains taken out of the premises):",
             f"  {show(prop.formula)}"]
    if prop.quantifiers:
        lines += ["", "quantifiers:"]
    for q in prop.quantifiers:
        kind = "universal: counterexample search" if q.op == "forall" else "existential: witness search"
        lines.append(f"  {q.op} {', '.join(q.attr.vars)}    ({kind})")
        for d in q.attr.domains:
            lines.append(f"    domain of {d.var}: {describe_domain(d)}")
        target = "not body" if q.op == "forall" else "body"
        lines.append(f"    search: {strategy.describe()}")
        lines.append(f"    objective: minimise L_{lg.name}({target}) = "
                     f"{_pretty(symbolic_loss(q.args[1], lg), unicode)}")
        if q.args[1] is not (q.args[0]) and any(n.op == "max_except" for n in _nodes(q.args[1])):
            lines.append("      (argmax(v) == c is searched through its margin form v[c] > max_except(v, c))")
    lines += ["", f"loss under {lg.name} ({lg.truth_range}):"]
    bad = untranslatable(prop.formula, lg, f"property '{prop.name}'")
    if bad:
        lines.append("  none: " + SpecError(bad).render().replace("\n", "\n  "))
    else:
        expr = symbolic_loss(prop.formula, lg)  # the logic's to_loss: 1 - truth, relu(-robustness)
        lines.append("  L = " + _pretty(expr, unicode).replace("\n", "\n      "))
        if prop.quantifiers:
            stars = ", ".join(f"{v}*" for q in prop.quantifiers for v in q.attr.vars)
            lines.append(f"  where {stars}: the point(s) found by the search, per example")
        if latex:
            lines.append("  LaTeX: " + sp.latex(expr))
    return "\n".join(lines)


def _pretty(expr, unicode: bool) -> str:
    text = sp.pretty(expr, use_unicode=unicode, wrap_line=False)
    return text if "\n" not in text else sp.sstr(expr)


def _nodes(n: N):
    """Each node once (a tree walk would repeat shared nodes exponentially often)."""
    return walk(n)
