"""The registry of logics: pick one by name (`logic="dl2"`), or register your own.

    from robustspec.compiler.logics import Logic, register_logic
    register_logic("mine", MyLogic)      # then logic="mine" works everywhere
"""
from __future__ import annotations

from typing import Callable

from robustspec.dsl.diagnostics import Diagnostic, SpecError, did_you_mean

from .base import Logic
from .dl2 import DL2

_REGISTRY: dict[str, Callable[..., Logic]] = {"dl2": DL2}


def register_logic(name: str, factory: Callable[..., Logic]) -> None:
    """Make `logic=name` available; `factory(**options)` returns a Logic instance."""
    _REGISTRY[name.lower()] = factory


def available_logics() -> list[str]:
    return sorted(_REGISTRY)


def get_logic(logic: str | Logic = "dl2", **options) -> Logic:
    """A Logic from a name (with options such as xi=...) or an instance passed through."""
    if isinstance(logic, Logic):
        return logic
    factory = _REGISTRY.get(str(logic).lower())
    if factory is None:
        raise SpecError([Diagnostic(
            "error", f"unknown logic '{logic}'",
            hint=(did_you_mean(str(logic), _REGISTRY) or "") +
            f" (available: {', '.join(available_logics())})")])
    return factory(**options)


__all__ = ["Logic", "DL2", "register_logic", "get_logic", "available_logics"]
