"""The keyword names Property's methods take for themselves: one list, so a property argument
can never shadow one (the checker refuses such names) and binding splits them off the same way.
"""
from __future__ import annotations

from .search import SEARCHES

# every option of every search strategy (steps, step_size, restarts, samples, points, ...)
SEARCH_OPTIONS = frozenset(f for _name, cls in SEARCHES.items() for f in cls.__dataclass_fields__)
# the other keywords of loss / value / search / check / holds (and names Python reserves there)
CALL_OPTIONS = frozenset({"logic", "search", "reduction", "params", "networks", "at",
                          "generator", "model", "self"})
RESERVED_ARGS = SEARCH_OPTIONS | CALL_OPTIONS

__all__ = ["SEARCH_OPTIONS", "CALL_OPTIONS", "RESERVED_ARGS"]
