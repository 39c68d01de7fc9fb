"""What a logic is: a table of operators from atoms and connectives to values.

A logic never sees the IR; the lowering hands it already-computed operand values and a backend
`T` (torch here, sympy for the reference lowering) with the few primitives it may use. So a new
logic is one small class, and the same table serves the loss, the search objective and the
symbolic printout.
"""
from __future__ import annotations

from typing import Any, ClassVar


class Logic:
    """Base class. Values are either losses (0 = satisfied, `kind = "loss"`) or truth degrees."""

    name: ClassVar[str] = "logic"
    kind: ClassVar[str] = "loss"  # "loss": values >= 0, 0 iff satisfied | "truth": values in [0, 1]
    truth_range: ClassVar[str] = "[0, inf), 0 = satisfied"
    # IR term ops this logic cannot translate (compile error at the operator)
    unsupported: ClassVar[frozenset[str]] = frozenset({"argmax"})

    def cmp(self, T: Any, op: str, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def and_(self, T: Any, xs: list) -> Any:
        raise NotImplementedError

    def or_(self, T: Any, xs: list) -> Any:
        raise NotImplementedError

    def forall(self, T: Any, v: Any, dim: int) -> Any:
        """A conjunction over one axis (finite quantifiers and elementwise comparisons)."""
        raise NotImplementedError

    def exists(self, T: Any, v: Any, dim: int) -> Any:
        raise NotImplementedError

    def true(self, T: Any) -> Any:
        raise NotImplementedError

    def false(self, T: Any) -> Any:
        raise NotImplementedError

    def to_loss(self, T: Any, v: Any) -> Any:
        """Per-example loss to minimise; >= 0."""
        return v if self.kind == "loss" else 1 - v

    def describe(self) -> str:
        return f"{self.name}: values in {self.truth_range}"

    def __repr__(self) -> str:
        return f"<logic {self.name}>"
