"""Where one PGD search call's time goes, by phase (issue 10: the attack's fixed cost per call).

Times robustspec's `cr` search (specs/classification_robustness.spec, the attack of
bench_training_speed (b) and attack_equal_strength.py) on one batch of 128, by wrapping the
phases of `Property.search` with wall-clock timers: binding the arguments, realising the
domain, the uniform start, every evaluation of the objective (with its gradient inside the
loop, without it for the last point), the best-point bookkeeping and step, the last point's
bookkeeping. What is left is Python around them. One thread.

    .venv/bin/python bench/search_phases.py [--steps 0,2,5] [--reps 200]
"""
from __future__ import annotations

import argparse
import collections
import functools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_training_speed as bts  # noqa: E402  (the same data and attacked model)

from robustspec.compiler import PGD, compile_spec  # noqa: E402
from robustspec.compiler import property as prop_module  # noqa: E402
from robustspec.compiler import quantifiers, search  # noqa: E402

PHASES = [(prop_module.Property, "_bind", "binding the arguments"),
          (quantifiers.QuantifierSearch, "_domains", "the domain (box bounds)"),
          (search.RealDomain, "sample", "the uniform start"),
          (search, "_evaluate", "objective evaluations (the network, forward)"),
          (torch.autograd, "grad", "gradients (backward)"),
          (search._Best, "update_and_step", "best points and the step"),
          (search._Best, "update", "the last point's bookkeeping")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="0,2,5")
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    spent: collections.Counter = collections.Counter()
    for owner, name, label in PHASES:
        original = getattr(owner, name)

        def timed(*a, _f=original, _label=label, **k):
            start = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                spent[_label] += time.perf_counter() - start
        setattr(owner, name, functools.wraps(original)(timed))
    x, _ = bts.data(2048)
    model, y = bts.attack_model(x)
    cr = compile_spec(str(bts.ROOT / "specs" / "classification_robustness.spec"))["cr"]
    xb, yb = x[:bts.BATCH], y[:bts.BATCH]
    gen = torch.Generator().manual_seed(bts.SEED)
    for steps in (int(s) for s in args.steps.split(",")):
        def run():
            cr.search(model, x0=xb, y=yb, params={"eps": 0.1}, generator=gen,
                      search=PGD(steps=steps, step_size=0.01, early_stop=False))
        for _ in range(5):
            run()
        spent.clear()
        start = time.perf_counter()
        for _ in range(args.reps):
            run()
        total = (time.perf_counter() - start) / args.reps * 1e3
        print(f"{steps} steps: {total:.3f} ms a call (batch {bts.BATCH}, wall clock, mean of "
              f"{args.reps})")
        for label, secs in spent.most_common():
            print(f"  {label:48s} {secs / args.reps * 1e3:7.3f} ms")
        print(f"  {'the rest (Python around the phases)':48s} "
              f"{total - sum(spent.values()) / args.reps * 1e3:7.3f} ms")


if __name__ == "__main__":
    main()
