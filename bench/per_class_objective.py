"""The per-class SR objective against the norm_inf one, the objective alone (issue 10).

On a [128, 10] output (what the paper's MLP gives a batch), times the search objective's own
ops and the input gradient through them: the norm_inf form (native norm_inf_of_difference,
then DL2's strict atom) and the per-class form (native abs_sub, the atom, and DL2's exists
over the classes, a native product), beside a floor of one multiply, sum and gradient.
Interleaved blocks of 200 calls, 30 rounds, median; one thread; native kernels required.

    .venv/bin/python bench/per_class_objective.py
"""
from __future__ import annotations

import statistics
import time

import torch

from robustspec.compiler import native


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    a = torch.randn(128, 10, requires_grad=True)
    b = torch.randn(128, 10)
    norm, atom, absd, prod = (native.norm_inf_of_difference(), native.relu_sub(),
                              native.abs_sub(), native.prod_last())
    if norm is None:
        raise SystemExit(f"the native kernels are unavailable: {native.status()}")
    delta, ones = torch.tensor(10.0), torch.ones(128)

    def floor():
        torch.autograd.grad((a * 1).sum(1), a, ones)

    def norm_form():
        torch.autograd.grad(atom(delta, norm(a * 1, b, 1), 1.0), a, ones)

    def per_class():
        torch.autograd.grad(prod(atom(delta, absd(a * 1, b), 1.0)), a, ones)
    fns = {"floor (mul, sum, gradient)": floor, "norm_inf form": norm_form,
           "per-class form": per_class}
    for f in fns.values():
        for _ in range(200):
            f()
    us = {k: [] for k in fns}
    for _ in range(30):
        for k, f in fns.items():
            t = time.perf_counter()
            for _ in range(200):
                f()
            us[k].append((time.perf_counter() - t) / 200 * 1e6)
    for k, v in us.items():
        print(f"{k:28s} {statistics.median(v):6.1f} us")


if __name__ == "__main__":
    main()
