"""E4's CNN evaluation with its network passes split (evaluate's forward_rows) against whole chunks.

The evaluation lays its random starts and samples out by chunks of 1000 inputs; a convolution on
the CPU costs more per image at 1000 rows than at a few hundred (bench/eval_batch_size.py).
`evaluate(..., forward_rows=N)` runs the network on N rows at a time (metrics.RowChunks) and
keeps the chunks. This times one evaluation (the SR attack and the sampling at one eps) of the
trained E4 network committed in docs/reproduction/ on Fashion-MNIST test images, both ways in
turn, one thread, and prints each one's counts: the same draws, so they differ only where
float rounding moves a sign step.

    .venv/bin/python bench/eval_forward_rows.py [--data-dir ../shared/data] [--n 1000]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from robustspec.runtime.data import load_dataset
from robustspec.runtime.metrics import evaluate
from robustspec.runtime.reproduce import attack_properties
from robustspec.runtime.training import model_from_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = (ROOT / "docs/reproduction/paper-units/cells/fashion-mnist/cnn-augment-uniform"
              / "train/last.pt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--n", type=int, default=1000, help="test images (default 1000: one chunk)")
    ap.add_argument("--eps", type=float, default=0.04)
    ap.add_argument("--rows", default="250", help="forward_rows values to time beside whole chunks")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, _, _ = model_from_checkpoint(CHECKPOINT)
    test = load_dataset("fashion-mnist", "test", data_dir=args.data_dir, limit=args.n)
    prop = attack_properties(["SR"])["SR"]
    settings = [None] + [int(r) for r in args.rows.split(",")]
    times = {s: [] for s in settings}
    counts = {}
    for _ in range(args.rounds):
        for s in settings:
            t = time.perf_counter()
            r = evaluate(model, prop, test.x, test.y, eps=(args.eps,), steps=50, samples=100,
                         seed=0, progress=False, forward_rows=s)
            times[s].append(time.perf_counter() - t)
            row = r.rows[0]
            counts[s] = (row.clean_accuracy, row.constraint_security, row.constraint_accuracy)
    print(f"# E4 CNN ({CHECKPOINT.parent.parent.name}), SR at eps {args.eps:g}, {args.n} test "
          f"images in chunks of 1000, PGD 50 steps, 100 samples, one thread, {args.rounds} rounds")
    print("| forward_rows | seconds (min, median) | x whole chunks | clean | security | accuracy |")
    print("|---|---:|---:|---:|---:|---:|")
    base = min(times[None])
    for s in settings:
        c = counts[s]
        print(f"| {s or 'whole chunk'} | {min(times[s]):.1f}, {statistics.median(times[s]):.1f} | "
              f"{base / min(times[s]):.2f} | {c[0]:.4f} | {c[1]:.4f} | {c[2]:.4f} |")


if __name__ == "__main__":
    main()
