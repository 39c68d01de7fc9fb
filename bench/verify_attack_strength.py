"""Are the points the verifier leaves open at eps 0.05 false but missed by the attack? The
attack stage's falsified count under stronger PGD (more steps, more restarts), bounds only (no
complete solver), on the first N test points of each checkpoint.

    .venv/bin/python bench/verify_attack_strength.py --model baseline=/tmp/h4runs/baseline/last.pt \
        --model sr=/tmp/h4runs/sr/last.pt --points 100 --eps 0.05 --out bench/results/verify_attack_strength.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SPECS = {"scr": "strong_classification_robustness", "cr_margin": "classification_robustness"}
STRENGTHS = ((50, 1), (200, 1), (200, 10), (1000, 5))  # (steps, restarts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT")
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from robustspec.compiler import compile_spec
    from robustspec.runtime.data import load_dataset
    from robustspec.runtime.training import model_from_checkpoint
    from robustspec.runtime.verify import verify

    data = load_dataset("fashion-mnist", "test", data_dir=args.data_dir)
    x, y = data.x[:args.points], data.y[:args.points]
    rows = []
    for item in args.model:
        name, _, path = item.partition("=")
        model, _, _ = model_from_checkpoint(path)
        for pname, spec in SPECS.items():
            prop = compile_spec(ROOT / "specs" / f"{spec}.spec")[pname]
            for steps, restarts in STRENGTHS:
                t0 = time.perf_counter()
                r = verify(model, prop, x, y, eps=args.eps, verifier="bounds", attack_steps=steps,
                           restarts=restarts, progress=False)
                row = {"model": name, "property": pname, "eps": args.eps, "steps": steps,
                       "restarts": restarts, **r.counts(), "seconds": round(time.perf_counter() - t0, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
