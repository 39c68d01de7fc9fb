"""Constraint satisfaction on the paper's FASHION MLP: verdict counts, seconds per point per
stage, and the gap between constraint security (no attack finds a counterexample) and
constraint satisfaction (proved), per model, property and eps.

    .venv/bin/python bench/bench_verify.py --model baseline=runs/base/last.pt \
        --model sr=runs/sr/last.pt --points 100 --eps 0.01,0.05,0.1 --timeout 30 \
        --props sr,cr_margin,scr --out bench/results/verify.json

Targets (issue 9): the bounds stage at least 100 points/s; at eps 0.01 and 0.05 at least 90%
of points decided within the timeout each. Points: the first N of the test split.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from verify_common import add_common_arguments, emit, first_test_points, load_property, named_models


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap, points=100, timeout=30.0)
    ap.add_argument("--eps", default="0.01,0.05,0.1")
    ap.add_argument("--props", default="sr,cr_margin,scr")
    ap.add_argument("--verifier", default="auto")
    ap.add_argument("--first", type=int, default=0, help="skip this many test points first")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from robustspec.runtime.verify import verify

    x, y = first_test_points(args.data_dir, args.points, args.first)
    rows = []
    for mname, model in named_models(args.model):
        with torch.no_grad():
            acc = float((model(x).argmax(1) == y).float().mean())
        for pname in args.props.split(","):
            prop = load_property(pname)
            for eps in [float(e) for e in args.eps.split(",")]:
                t0 = time.perf_counter()
                r = verify(model, prop, x, y, eps=eps, verifier=args.verifier,
                           timeout=args.timeout, progress=sys.stderr.isatty())
                wall = time.perf_counter() - t0
                c = r.counts()
                n = len(r.verdicts)
                st = r.stage_seconds()
                attacked = sum(1 for d in r.decided_by if d == "attack")
                row = {"model": mname, "accuracy": round(acc, 4), "property": pname, "eps": eps,
                       "points": n, **c,
                       "decided": round(1 - c["unknown"] / n, 4),
                       "security": round(1 - attacked / n, 4),
                       "satisfaction": round(c["verified"] / n, 4),
                       "attack_s_per_pt": round(st["attack"] / n, 4),
                       "bounds_s_per_pt": round(st["bounds"] / n, 5),
                       "bounds_pts_per_s": round(n / max(st["bounds"], 1e-9), 1),
                       "complete_s_per_open_pt": round(
                           st["complete"] / max(1, n - sum(1 for d in r.decided_by
                                                         if d in ("attack", "bounds"))), 3),
                       "max_complete_s": round(max(r.times["complete"]), 2),
                       "by_bounds": sum(1 for d in r.decided_by if d == "bounds"),
                       "by_solver": sum(1 for d in r.decided_by if d not in ("attack", "bounds", "")),
                       "wall_s": round(wall, 1), "verifier": r.verifier}
                emit(rows, row, args.out)
    print()
    print("| model | property | eps | verified | falsified | unknown | boundary | decided | "
          "security | satisfaction | gap | attack s/pt | bounds pts/s | complete s/open pt |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['property']} | {r['eps']:g} | {r['verified']} | {r['falsified']} | "
              f"{r['unknown']} | {r['boundary']} | {r['decided']:.2f} | {r['security']:.2f} | "
              f"{r['satisfaction']:.2f} | {r['security'] - r['satisfaction']:.2f} | "
              f"{r['attack_s_per_pt']:.4f} | {r['bounds_pts_per_s']:.0f} | "
              f"{r['complete_s_per_open_pt']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
