"""The backend primitives on torch tensors that a Logic may use (see logics/base.py).

Its own module, importing nothing of the compiler but its native kernels (which import nothing
of it), so logics can name it without a cycle.
"""
from __future__ import annotations

import torch

from . import native


def _native_atom(a, b) -> bool:
    """Do the native elementwise atoms take a and b: CPU float32/64 tensors of one dtype, of one
    shape or either 0-dim (a constant)?"""
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) \
        and a.device.type == "cpu" and b.device.type == "cpu" and a.dtype == b.dtype \
        and a.dtype in (torch.float32, torch.float64) \
        and (a.ndim == 0 or b.ndim == 0 or a.shape == b.shape)


class TorchOps:
    """The primitives a Logic may use, on torch tensors."""

    relu = staticmethod(torch.relu)
    abs = staticmethod(torch.abs)
    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    minimum = staticmethod(torch.minimum)
    maximum = staticmethod(torch.maximum)

    @staticmethod
    def eq(a, b):
        r = a == b
        return r.to(a.dtype if a.is_floating_point() else torch.get_default_dtype())

    @staticmethod
    def relu_sub(a, b, w: float = 0.0):
        """relu(a - b), plus w where a == b if w: DL2's atoms in one native call (and one
        backward node) where they fit, torch's 2-6 ops otherwise; the same bits either way."""
        if _native_atom(a, b):
            kernel = native.relu_sub()
            if kernel is not None:
                return kernel(a, b, float(w))
        r = torch.relu(a - b)
        return r + w * TorchOps.eq(a, b) if w else r

    @staticmethod
    def abs_sub(a, b):
        """|a - b|: one native call where it fits (see relu_sub)."""
        if _native_atom(a, b):
            kernel = native.abs_sub()
            if kernel is not None:
                return kernel(a, b)
        return torch.abs(a - b)

    @staticmethod
    def sum(v, dim):
        return v.sum(dim)

    @staticmethod
    def prod(v, dim):
        # over a short last axis with a gradient to come: one native call (torch's bits)
        # instead of torch's prod and its 14-op zero-safe backward
        if v.requires_grad and v.ndim and 0 < v.shape[-1] < 16 and dim in (-1, v.ndim - 1) \
                and v.device.type == "cpu" and v.dtype in (torch.float32, torch.float64) \
                and torch.is_grad_enabled():
            kernel = native.prod_last()
            if kernel is not None:
                return kernel(v)
        return v.prod(dim)

    @staticmethod
    def amin(v, dim):
        return v.amin(dim)

    @staticmethod
    def amax(v, dim):
        return v.amax(dim)

    @staticmethod
    def const(x):
        return torch.tensor(x)

    @staticmethod
    def clamp(v, lo, hi):
        return torch.clamp(v, lo, hi)

    @staticmethod
    def where(c, a, b):
        return torch.where(c, a, b)

    logical_and = staticmethod(torch.logical_and)
    logical_or = staticmethod(torch.logical_or)

    @staticmethod
    def all(v, dim):
        return v.all(dim)

    @staticmethod
    def any(v, dim):
        return v.any(dim)

    symbolic = False

    @staticmethod
    def logsumexp(v, dim):
        return torch.logsumexp(v, dim)

    @staticmethod
    def size(v, dim):
        return v.shape[dim]


T = TorchOps()
