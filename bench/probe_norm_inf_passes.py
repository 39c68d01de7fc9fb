"""Does a norm_inf with fewer full-size passes make LR's search step cheaper? (issue 10)

LR's search takes norm_inf(x - x0) of a batch of images at every PGD step. The shipped form
(compiler/lower.py `_NormInf`) makes 2 passes forward (abs, amax) and 5 backward (tie mask,
its sum, two products, sgn). The variant here makes 2 forward (amax, amin: no |v| written)
and 3 backward for rows whose maximum |v| is on one side only (tie mask against the signed
maximum, its sum, one product), with the same values and the same gradient at every nonzero
entry, but 9 more small ops (the sides, a check, the signed scale). Timed side by side,
interleaved, thread CPU, one thread: clone x, x - x0, the norm, its gradient to x.

    .venv/bin/python bench/probe_norm_inf_passes.py
"""
from __future__ import annotations

import statistics
import time

import torch

from robustspec.compiler.lower import _NormInf


class OneSided(torch.autograd.Function):
    """The variant: fewer passes over v, more small ops."""

    @staticmethod
    def forward(ctx, v, dims):
        hi, lo = v.amax(dims), v.amin(dims)  # torch.aminmax was 220 us here, amax + amin 24
        m = torch.maximum(hi, lo.neg()).abs_()
        ctx.dims = dims
        ctx.save_for_backward(v, m, hi, lo)
        return m

    @staticmethod
    def backward(ctx, g):
        v, m, hi, lo = ctx.saved_tensors
        dims = ctx.dims
        shape = m.shape + (1,) * len(dims)
        up = hi == m
        if bool((up & (lo == m.neg())).any()):  # both signs at the maximum: torch's formula
            a = v.abs()
            mask = torch.eq(a, m.reshape(shape), out=torch.empty_like(a))
            return mask.mul_((g / mask.sum(dims)).reshape(shape)).mul_(v.sgn()), None
        mask = torch.eq(v, torch.where(up, m, m.neg()).reshape(shape), out=torch.empty_like(v))
        scale = g / mask.sum(dims)
        return mask.mul_(torch.where(up, scale, scale.neg()).reshape(shape)), None


def main() -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    batch, dim = 128, 784
    x0 = torch.rand(batch, dim, generator=gen)
    x = (x0 + 0.1 * (2 * torch.rand(batch, dim, generator=gen) - 1)).clamp(0, 1)
    ones = torch.ones(batch)

    def run(fn):
        def step():
            leaf = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(fn.apply(leaf - x0, (1,)), leaf, ones)
            return g
        return step

    fns = {"shipped _NormInf": run(_NormInf), "one-sided variant": run(OneSided)}
    a, b = (f() for f in fns.values())
    assert torch.equal(a[a != 0], b[b != 0]) and torch.equal(a == 0, b == 0)
    times = {k: [] for k in fns}
    for _ in range(30):
        for k, f in fns.items():
            start = time.thread_time()
            for _ in range(50):
                f()
            times[k].append((time.thread_time() - start) / 50 * 1e6)
    base = statistics.median(times["shipped _NormInf"])
    for k, t in times.items():
        print(f"{k:20s} {statistics.median(t):6.1f} us CPU per call ({statistics.median(t) / base:.2f}x)")


if __name__ == "__main__":
    main()
