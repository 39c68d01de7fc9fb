"""SCR's certificate on chosen points, bound by bound: sum_{j != y} exp(-g_j) over the eps-ball
bounded (1) by the CROWN margin bounds apart, (2) by the margins minimised apart by MILP, (3)
jointly by the margins' chords (`milp_softmax_upper(segments=1)`) and (4) jointly by pieces
(the default). The point is proved when a bound is below (1 - eta) / eta.

    .venv/bin/python bench/probe_scr_joint.py --model sr=/tmp/h4runs/sr/last.pt --ids 5,9,13 \
        --eps 0.05 --margin-timeout 5 --timeout 30 --out bench/results/probe_scr_joint.json
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from verify_common import add_common_arguments, emit, first_test_points, load_property, named_models


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap, points=100, timeout=30.0)
    ap.add_argument("--ids", default="5,9,13", help="test point indices")
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--margin-timeout", type=float, default=5.0, help="seconds per margin")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from robustspec.compiler.query import build_query
    from robustspec.runtime.bounds import ReluNet, crown_preactivations, query_row_bounds
    from robustspec.runtime.training import property_args
    from robustspec.runtime.verifiers import milp_lower_bounds, milp_softmax_upper
    from robustspec.runtime.verify import _double, _is_label_row

    ids = [int(i) for i in args.ids.split(",")]
    x, y = first_test_points(args.data_dir, max(ids) + 1)
    x, y = x[ids], y[ids]
    prop = load_property("scr")
    rows = []
    for mname, model in named_models(args.model):
        q = _double(build_query(prop, model, params={"eps": args.eps}, **property_args(prop, x, y)))
        net = ReluNet.from_module(model, q.shape, dtype=torch.float64)
        pre = crown_preactivations(net, q.lo, q.hi)
        lb, ub = query_row_bounds(net, q, "crown", pre, "both")
        for k, i in enumerate(ids):
            qi = q.example(k)
            pi = [(l_[k:k + 1], u_[k:k + 1]) for l_, u_ in pre]
            atom = qi.softmax[0]
            want = [r for r in atom.margins if not _is_label_row(qi, r)]
            crown = lb[k, want].numpy()
            tight, _ = milp_lower_bounds(net, qi, pi, want, args.margin_timeout * len(want))
            tight = np.maximum(crown, tight)
            lo = lb[k].numpy().copy()
            lo[want] = tight
            chords, _ = milp_softmax_upper(net, qi, pi, atom, lo, ub[k].numpy(), args.timeout,
                                           segments=1)
            pieces, _ = milp_softmax_upper(net, qi, pi, atom, lo, ub[k].numpy(), args.timeout)
            r = float(atom.threshold[0])
            emit(rows, {"model": mname, "point": i, "eps": args.eps,
                        "threshold": round((1 - r) / r, 4),
                        "crown_apart": round(float(np.exp(-crown).sum()), 4),
                        "milp_apart": round(float(np.exp(-tight).sum()), 4),
                        "chords_joint": round(float(chords), 4),
                        "pieces_joint": round(float(pieces), 4)}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
