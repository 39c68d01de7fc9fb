"""The back-end table: every output the compiler makes from a normalised property, one entry
each, in one Registry.

    from robustspec.compiler.backends import BACKENDS, lower
    fn = lower(prop, "loss", logic="goedel")      # a closure Ctx -> value under the logic
    chk = lower(prop, "checker")                  # the exact checker (the logic "boolean")
    expr = lower(prop, "sympy", logic="dl2")      # the loss as a sympy expression
    text = lower(prop, "explain", logic="dl2")    # what `robustspec explain` prints
    q = lower(prop, "query", model=net, x0=x)     # a verification query (compiler/query.py)
    r = lower(prop, "verify", model=net, x0=x, y=y)  # verdicts (runtime/verify.py, by name)

An entry is a function `build(prop, **options)`. A new back end is one line here (or one
`BACKENDS.register(name, build)` call from its own module); an entry given as
"module:function" is imported on first use, so the table names back ends whose modules import
optional packages without importing them.

Every logic (DL2, the fuzzy logics, STL and the exact checker) goes through the same "loss"
entry: the logic is an option, not a back end, because a logic is a table of operators
(logics/base.py) that the one torch lowering reads.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from .registry import Registry

BACKENDS: Registry = Registry("back end")


def _resolve(value) -> Callable[..., Any]:
    if isinstance(value, str):  # "package.module:function", imported on first use
        module, _, attr = value.partition(":")
        return getattr(importlib.import_module(module), attr)
    return value


def lower(prop, backend: str, **options) -> Any:
    """The output of back end `backend` for `prop` (options as the entry takes them)."""
    return _resolve(BACKENDS.get(backend))(prop, **options)


def _loss(prop, logic="dl2"):
    from .logics import get_logic
    return prop._loss_fn(get_logic(logic))


def _checker(prop):
    return prop._check


def _objective(prop, quantifier=None, logic="dl2"):
    from .logics import get_logic
    q = quantifier if quantifier is not None else prop.quantifiers[0]
    return prop._objective(q, get_logic(logic))


def _sympy(prop, logic="dl2", evaluate=True):
    from .symbolic import value_expression
    return value_expression(prop.formula, logic, evaluate=evaluate)


def _explain(prop, **options):
    from .explain import explain
    return explain(prop, **options)


def _query(prop, **options):
    from .query import build_query
    return build_query(prop, **options)


BACKENDS.register("loss", _loss, help="the value under a logic (dl2, goedel, ..., boolean): a "
                  "torch closure")
BACKENDS.register("checker", _checker, help="the exact checker: the logic 'boolean'")
BACKENDS.register("objective", _objective, help="a quantifier's search objective and tie-break")
BACKENDS.register("sympy", _sympy, help="the value as a sympy expression")
BACKENDS.register("explain", _explain, help="the human-readable account `robustspec explain` prints")
BACKENDS.register("query", _query, help="a verification query per example (compiler/query.py)")
# the one back end outside the compiler: its solvers are runtime (optional packages), so it is
# named by string and imported on first use; the compiler never imports the runtime itself
BACKENDS.register("verify", "robustspec.runtime.verify:verify_property",
                  help="constraint satisfaction: attack, bounds, a complete solver (runtime/verify.py)")

__all__ = ["BACKENDS", "lower"]
