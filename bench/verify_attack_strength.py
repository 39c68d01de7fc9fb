"""Are the points the verifier leaves open at eps 0.05 false but missed by the attack? The
attack stage's falsified count under stronger PGD (more steps, more restarts), bounds only (no
complete solver), on the first N test points of each checkpoint.

    .venv/bin/python bench/verify_attack_strength.py --model baseline=/tmp/h4runs/baseline/last.pt \
        --model sr=/tmp/h4runs/sr/last.pt --points 100 --eps 0.05 --out bench/results/verify_attack_strength.json
"""
from __future__ import annotations

import argparse
import time

import torch

from verify_common import DATA_DIR, emit, first_test_points, load_property

STRENGTHS = ((50, 1), (200, 1), (200, 10), (1000, 5))  # (steps, restarts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT")
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--data-dir", default=DATA_DIR)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from robustspec.runtime.training import model_from_checkpoint
    from robustspec.runtime.verify import verify

    x, y = first_test_points(args.data_dir, args.points)
    rows = []
    for item in args.model:
        name, _, path = item.partition("=")
        model, _, _ = model_from_checkpoint(path)
        for pname in ("scr", "cr_margin"):
            prop = load_property(pname)
            for steps, restarts in STRENGTHS:
                t0 = time.perf_counter()
                r = verify(model, prop, x, y, eps=args.eps, verifier="bounds", attack_steps=steps,
                           restarts=restarts, progress=False)
                row = {"model": name, "property": pname, "eps": args.eps, "steps": steps,
                       "restarts": restarts, **r.counts(), "seconds": round(time.perf_counter() - t0, 1)}
                emit(rows, row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
