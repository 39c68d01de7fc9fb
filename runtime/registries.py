"""A live, read-only view of a registry's names, for the runtime's name tuples.

The runtime's regimes, models and datasets are `robustspec.compiler.registry.Registry` entries
(TRAINING_REGIMES, MODEL_BUILDERS, DATASET_LOADERS); REGIMES, MODELS and DATASETS stay the
sequences of names they always were (`"constraint" in REGIMES`, iteration, slicing, comparison
with a tuple), read from the registry each time so they never drift from it.
"""
from __future__ import annotations

from collections.abc import Sequence

from robustspec.compiler.registry import Registry


class Names(Sequence):
    """The names registered in `registry`, in registration order."""

    def __init__(self, registry: Registry):
        self._registry = registry

    def __getitem__(self, index):
        names = tuple(self._registry.names())
        return names[index]

    def __len__(self) -> int:
        return len(self._registry)

    def __contains__(self, name: object) -> bool:
        return name in self._registry.names()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Names, tuple, list)):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self):
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


__all__ = ["Names"]
