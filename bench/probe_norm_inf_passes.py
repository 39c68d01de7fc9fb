"""Does a norm_inf with fewer full-size passes make LR's search step cheaper? (issue 10)

Timed side by side: torch's own abs().amax(), the Python fused form lower._NormInf (used where
the native kernels are unavailable), a one-sided variant of it (below), and the native kernel
(compiler/native.py, shipped), at [128, 10], [128, 100] and [128, 784]: each call clones x,
takes x - x0, the norm and its gradient to x.

LR's search takes norm_inf(x - x0) of a batch of images at every PGD step. The Python fused
form (compiler/lower.py `_NormInf`) makes 2 passes forward (abs, amax) and 5 backward (tie
mask, its sum, two products, sgn). The variant here makes 2 forward (amax, amin: no |v|
written) and 3 backward for rows whose maximum |v| is on one side only (tie mask against the
signed maximum, its sum, one product), with the same values and the same gradient at every
nonzero entry, but 9 more small ops (the sides, a check, the signed scale): no faster, not
adopted. The native kernel does the whole norm in one read forward and one read and one
write backward.

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
    from robustspec.compiler import native

    torch.set_num_threads(1)
    kernel = native.norm_inf()
    print(f"native kernels: {native.status()}")
    for batch, dim in ((128, 10), (128, 100), (128, 784)):
        gen = torch.Generator().manual_seed(0)
        x0 = torch.rand(batch, dim, generator=gen)
        x = (x0 + 0.1 * (2 * torch.rand(batch, dim, generator=gen) - 1)).clamp(0, 1)
        ones = torch.ones(batch)

        def run(norm):
            def step():
                leaf = x.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(norm(leaf - x0), leaf, ones)
                return g
            return step

        fns = {"torch abs().amax()": run(lambda v: v.abs().amax(1)),
               "_NormInf (Python)": run(lambda v: _NormInf.apply(v, (1,))),
               "one-sided variant": run(lambda v: OneSided.apply(v, (1,)))}
        if kernel is not None:
            fns["native kernel"] = run(lambda v: kernel(v, 1))
        results = [f() for f in fns.values()]
        for r in results[1:]:  # the same gradient bits at every nonzero entry
            assert torch.equal(r[r != 0], results[0][results[0] != 0]) and torch.equal(r == 0, results[0] == 0)
        times = {k: [] for k in fns}
        for _ in range(30):
            for k, f in fns.items():
                start = time.thread_time()
                for _ in range(50):
                    f()
                times[k].append((time.thread_time() - start) / 50 * 1e6)
        base = statistics.median(times["torch abs().amax()"])
        print(f"[{batch}, {dim}]")
        for k, t in times.items():
            print(f"  {k:20s} {statistics.median(t):6.1f} us CPU per call ({statistics.median(t) / base:.2f}x torch's)")


if __name__ == "__main__":
    main()
