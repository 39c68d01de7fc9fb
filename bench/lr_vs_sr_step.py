"""LR's constraint-training step against SR's, side by side (issue 10: LR at k = 10).

bench_training_speed.py times each property's step against its own floor, measured beside it;
the floors of two rows differ by a few percent between runs, more than what separates two
versions of LR's step. Here SR's step, LR's step and one floor pass run interleaved in one
loop (many repetitions), so LR - SR (what LR's own `norm_inf(x - x0)` costs a step) and both
ratios share one floor. To compare two commits, run it once per checkout with PYTHONPATH at a
folder holding that checkout as `robustspec` (a `git worktree`), alternating.

    .venv/bin/python bench/lr_vs_sr_step.py [--k 10] [--reps 100] [--split]

--split adds two more LR steps to the loop: without lower.SplitNormInf (the norm through
autograd's node, as before it), and a probe with the split's two passes removed (its kernel
replaced by a cached answer, the fold by nothing: a wrong search, timed only to say what the
norm's passes cost).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_training_speed as bts  # noqa: E402  (the same data, model, specs and step)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=10, help="PGD steps of the training search")
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--split", action="store_true", help="also LR without the split, and the probe")
    args = ap.parse_args()
    torch.set_num_threads(1)
    x, y = bts.data()
    props = bts.props()
    fns = {}
    for name in ("SR", "LR"):
        m = bts.model()
        opt = bts.adam(m.parameters(), bts.LR)
        fns[name] = bts.constraint_step(m, opt, props[name], x, y, args.k,
                                        torch.Generator().manual_seed(bts.SEED + 1))
    if args.split:
        from robustspec.compiler import native
        split, fold = native.norm_inf_split, native.norm_inf_fold
        cached = {}

        def same_answer(a, b, ndims):
            if "out" not in cached:
                cached["out"] = split()(a, b, ndims)
            norm, ties, first = cached["out"]
            return [norm.clone(), ties, first]

        def with_accessors(step, s, f):
            def run():
                native.norm_inf_split, native.norm_inf_fold = s, f
                try:
                    step()
                finally:
                    native.norm_inf_split, native.norm_inf_fold = split, fold
            return run
        for name, s, f in (("LR without the split", lambda: None, fold),
                           ("LR probe: no norm passes", lambda: same_answer,
                            lambda: (lambda *a: None))):
            m = bts.model()
            opt = bts.adam(m.parameters(), bts.LR)
            fns[name] = with_accessors(bts.constraint_step(
                m, opt, props["LR"], x, y, args.k, torch.Generator().manual_seed(bts.SEED + 1)), s, f)
    fm = bts.model()
    fns["pass"] = bts.floor_pass(fm, bts.adam(fm.parameters(), bts.LR), x, y)
    t = bts.interleaved(fns, args.reps)
    floor = (args.k + 2) * t["pass"]["cpu_ms"]
    for name in [n for n in fns if n.startswith("LR ")]:
        print(f"{name}: {t[name]['cpu_ms']:.3f} ms, / floor {t[name]['cpu_ms'] / floor:.3f}, "
              f"LR - this {t['LR']['cpu_ms'] - t[name]['cpu_ms']:+.3f} ms")
    print(f"k = {args.k}, {args.reps} repetitions, thread CPU ms (median): SR {t['SR']['cpu_ms']:.3f}, "
          f"LR {t['LR']['cpu_ms']:.3f}, floor {floor:.3f} ({args.k + 2} passes of "
          f"{t['pass']['cpu_ms']:.3f})")
    print(f"SR / floor {t['SR']['cpu_ms'] / floor:.3f}   LR / floor {t['LR']['cpu_ms'] / floor:.3f}   "
          f"LR - SR {t['LR']['cpu_ms'] - t['SR']['cpu_ms']:.3f} ms")


if __name__ == "__main__":
    main()
