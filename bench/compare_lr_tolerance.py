"""LR's MILP at HiGHS's default feasibility tolerance (1e-7) against
verifiers.AUX_FEASIBILITY_TOLERANCE, same points, same process, alternating per property and
eps: how many points each decides (at 1e-7 a tie near x = x0 passes for a counterexample and
the point ends `boundary`).

    .venv/bin/python bench/compare_lr_tolerance.py --model lr=runs/lr/last.pt --points 30 \
        --eps 0.02 --L 10,1000 --timeout 10 --out bench/results/verify_lr_tolerance.json
"""
from __future__ import annotations

import argparse
import time

import torch

from verify_common import add_common_arguments, emit, first_test_points, load_property, named_models


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap, points=30, timeout=10.0)
    ap.add_argument("--eps", default="0.02")
    ap.add_argument("--L", default="10,1000")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from robustspec.runtime import verifiers
    from robustspec.runtime.verify import verify

    x, y = first_test_points(args.data_dir, args.points)
    prop = load_property("lr")
    new = verifiers.AUX_FEASIBILITY_TOLERANCE
    rows = []
    for mname, model in named_models(args.model):
        for L in [float(v) for v in args.L.split(",")]:
            for eps in [float(e) for e in args.eps.split(",")]:
                for label, tol in (("1e-7 (HiGHS default)", None), (repr(new), new)):
                    verifiers.AUX_FEASIBILITY_TOLERANCE = tol
                    t0 = time.perf_counter()
                    r = verify(model, prop, x, y, eps=eps, params={"L": L}, verifier="milp",
                               timeout=args.timeout, progress=False)
                    emit(rows, {"model": mname, "L": L, "eps": eps, "tolerance": label,
                                "points": len(r.verdicts), **r.counts(),
                                "decided": round(1 - r.counts()["unknown"] / len(r.verdicts), 4),
                                "wall_s": round(time.perf_counter() - t0, 1)}, args.out)
    verifiers.AUX_FEASIBILITY_TOLERANCE = new
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
