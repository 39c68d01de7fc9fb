"""SCR's MILP margin time: equal shares (as before) against shares in proportion to each
margin's weight exp(-lb) in the softmax sum (runtime/verify.py), alternating in one process on
the first 100 test points at eps 0.05.

    .venv/bin/python bench/compare_scr_shares.py --timeout 10 --model baseline=/tmp/h4runs/baseline/last.pt \
        --model sr=/tmp/h4runs/sr/last.pt --out bench/results/verify_scr_time_shares_10s.json
"""
from __future__ import annotations

import argparse
import time

import torch

from verify_common import add_common_arguments, emit, first_test_points, load_property, named_models


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap, points=100, timeout=10.0)
    ap.add_argument("--eps", type=float, default=0.05)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from robustspec.runtime import verifiers
    from robustspec.runtime.verify import verify

    x, y = first_test_points(args.data_dir, args.points)
    prop = load_property("scr")
    weighted = verifiers.milp_lower_bounds

    def equal(*a, **k):
        k.pop("weights", None)
        return weighted(*a, **k)
    rows = []
    for name, model in named_models(args.model):
        for which, fn in (("equal", equal), ("weighted", weighted)):
            verifiers.milp_lower_bounds = fn  # verify imports it from the module at each call
            try:
                t0 = time.perf_counter()
                r = verify(model, prop, x, y, eps=args.eps, verifier="milp", timeout=args.timeout,
                           progress=False)
            finally:
                verifiers.milp_lower_bounds = weighted
            c = r.counts()
            row = {"model": name, "time shares": which, **c, "decided": 1 - c["unknown"] / len(x),
                   "complete_s": round(sum(r.times["complete"]), 1),
                   "wall_s": round(time.perf_counter() - t0, 1)}
            emit(rows, row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
