"""The MILP stage old against new on the same points: the complete solver as it was at a given
commit (one MILP, a selector binary per open disjunct) against the working tree's (one MILP per
open disjunct), alternating per property and eps, on the first N test points of a checkpoint.

    git show 9cee631:runtime/verifiers.py > /tmp/old_verifiers.py
    .venv/bin/python bench/compare_milp.py --old /tmp/old_verifiers.py \
        --model /tmp/h4runs/baseline/last.pt --props sr:0.06,cr_margin:0.05 --points 100 --timeout 10
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
import time

import torch

from verify_common import DATA_DIR, emit, first_test_points, load_property


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="an older runtime/verifiers.py")
    ap.add_argument("--model", required=True)
    ap.add_argument("--props", default="sr:0.06,cr_margin:0.05")
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--data-dir", default=DATA_DIR)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from robustspec.runtime import verify as V
    from robustspec.runtime.training import model_from_checkpoint

    spec = importlib.util.spec_from_file_location("old_verifiers", args.old)
    old = importlib.util.module_from_spec(spec)
    sys.modules["old_verifiers"] = old  # dataclasses look their module up
    spec.loader.exec_module(old)

    takes_ub = "ub" in inspect.signature(old.milp).parameters

    def old_milp(net, query, pre, lb, open_d, timeout, extra=0.0, ub=None):
        if takes_ub:
            return old.milp(net, query, pre, lb, open_d, timeout, extra, ub=ub)
        return old.milp(net, query, pre, lb, open_d, timeout, extra)
    new_solvers = V.SOLVERS
    x, y = first_test_points(args.data_dir, args.points)
    model, _, _ = model_from_checkpoint(args.model)
    rows = []
    for item in args.props.split(","):
        pname, eps = item.split(":")
        prop = load_property(pname)
        for which, solvers in (("old", {"milp": old_milp}), ("new", new_solvers)):
            V.SOLVERS = solvers
            t0 = time.perf_counter()
            r = V.verify(model, prop, x, y, eps=float(eps), verifier="milp", timeout=args.timeout,
                         progress=False)
            V.SOLVERS = new_solvers
            c = r.counts()
            by = sum(1 for d in r.decided_by if d == "milp")
            row = {"property": pname, "eps": float(eps), "milp": which, **c, "decided_by_milp": by,
                   "decided": 1 - c["unknown"] / len(r.verdicts),
                   "complete_s": round(sum(r.times["complete"]), 1),
                   "wall_s": round(time.perf_counter() - t0, 1)}
            emit(rows, row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
