"""Types and shapes of the spec language.

A value is a real tensor of some shape (a scalar is shape ()), an integer (a label, an index,
a natural-number parameter), a formula, a network, or a finite index set. Shapes may hold
symbolic dimensions (`Tensor[n]`) that are bound when a network and a batch are bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field

Dim = int | str
Shape = tuple[Dim, ...] | None  # None: a tensor of unknown shape


@dataclass(frozen=True)
class Ty:
    kind: str  # real | int | bool | net | set | error
    shape: Shape = ()
    inp: Shape = None  # networks only
    out: Shape = None
    name: str | None = field(default=None, compare=False)  # as declared, e.g. "Label"

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def __str__(self) -> str:
        if self.name:
            return self.name
        if self.kind == "real":
            if self.shape == ():
                return "Real"
            return "Tensor" if self.shape is None else f"Tensor[{', '.join(map(str, self.shape))}]"
        if self.kind == "net":
            return f"network {fmt_shape(self.inp)} -> {fmt_shape(self.out)}"
        return {"int": "Index", "bool": "Formula", "set": "finite set", "error": "<error>"}[self.kind]


def fmt_shape(shape: Shape) -> str:
    return "Tensor" if shape is None else ("Real" if shape == () else
                                          f"Tensor[{', '.join(map(str, shape))}]")


REAL = Ty("real", ())
TENSOR = Ty("real", None)
INT = Ty("int")
BOOL = Ty("bool")
SET = Ty("set")
ERROR = Ty("error")  # already reported: compatible with everything, to avoid cascades


def tensor(shape: Shape) -> Ty:
    return Ty("real", shape)


def broadcast(a: Shape, b: Shape) -> Shape | str:
    """Shape of an elementwise op, or an error string. Scalars broadcast; unknown is a wildcard."""
    if a == ():
        return b
    if b == ():
        return a
    if a is None:
        return b
    if b is None:
        return a
    if len(a) != len(b):
        return f"shapes {fmt_shape(a)} and {fmt_shape(b)} have different ranks"
    out = []
    for da, db in zip(a, b):
        if da == db:
            out.append(da)
        else:
            return f"shapes {fmt_shape(a)} and {fmt_shape(b)} differ"
    return tuple(out)
