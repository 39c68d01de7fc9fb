"""Export a property to VNN-LIB 1.0 (robustspec export) and solve each file with Marabou read
from the files (Marabou.read_onnx + the property file), beside the in-process verdicts: the
agreement and the time per file on the paper's FASHION MLP.

    .venv/bin/python bench/export_marabou.py --model runs/sr/last.pt --prop lr --eps 0.01 \
        --param L=10 --points 5 --timeout 60 --out bench/results/export_marabou_lr.json
"""
from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from verify_common import DATA_DIR, emit, first_test_points, load_property


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, metavar="CHECKPOINT")
    ap.add_argument("--prop", default="lr")
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--points", type=int, default=5)
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--data-dir", default=DATA_DIR)
    ap.add_argument("--out", default=None, help="JSON file for the rows")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from maraboupy import Marabou

    from robustspec.runtime.export import export
    from robustspec.runtime.training import model_from_checkpoint
    from robustspec.runtime.verify import verify

    params = {k: float(v) for k, _, v in (p.partition("=") for p in args.param)}
    x, y = first_test_points(args.data_dir, args.points)
    model, _ck, _info = model_from_checkpoint(args.model)
    prop = load_property(args.prop)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = export(model, prop, x, y, tmp, fmt="vnnlib1", eps=args.eps, params=params,
                     timeout=args.timeout)
        export_s = time.perf_counter() - t0
        inline = verify(model, prop, x, y, eps=args.eps, params=params, verifier="milp",
                        timeout=args.timeout, progress=False)
        for k, row in enumerate(csv.reader(open(out["instances"]))):
            t0 = time.perf_counter()
            net = Marabou.read_onnx(str(Path(tmp) / row[0]))
            code, _vals, _stats = net.solve(verbose=False, propertyFilename=str(Path(tmp) / row[1]),
                                            options=Marabou.createOptions(
                                                verbosity=0, timeoutInSeconds=args.timeout))
            emit(rows, {"point": k, "prop": args.prop, "eps": args.eps, "params": params,
                        "marabou": code, "marabou_s": round(time.perf_counter() - t0, 2),
                        "in_process": inline.verdicts[k],
                        "onnx_mb": round(out["onnx"].stat().st_size / 2 ** 20, 2),
                        "export_s": round(export_s, 2)}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
