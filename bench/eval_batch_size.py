"""Per-image cost of the evaluation's network passes by chunk size (E4's CNN on the CPU).

The evaluation (runtime/metrics.evaluate, batch_size 1000 by default; reproduce uses the
default) runs the PGD attack's input-gradient passes and the sampling's forward passes on
chunks of rows. This times both passes per image for the paper's MLP and E4's SmallCNN at
several chunk sizes, interleaved (each size in turn, 5 rounds; min and median of the rounds),
one thread, random weights and inputs (the cost does not depend on them).

    .venv/bin/python bench/eval_batch_size.py [--sizes 64,128,250,500,1000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustspec.runtime.models import PaperMLP, SmallCNN


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,128,250,500,1000")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    nets = {"MLP": PaperMLP(784), "SmallCNN": SmallCNN(1, 28)}
    xs = {b: torch.rand(b, 1, 28, 28) for b in sizes}

    def gradient(net, b):
        x = xs[b].clone().requires_grad_(True)
        torch.autograd.grad(net(x).sum(), x)

    def forward(net, b):
        with torch.no_grad():
            net(xs[b])
    passes = {"input gradient": gradient, "forward": forward}
    us: dict = {}
    for _ in range(args.rounds):
        for name, net in nets.items():
            for b in sizes:
                for what, fn in passes.items():
                    n = max(1, 1000 // b)
                    fn(net, b)
                    t = time.perf_counter()
                    for _ in range(n):
                        fn(net, b)
                    us.setdefault((name, what, b), []).append((time.perf_counter() - t) / n / b * 1e6)
    print("| network | pass | " + " | ".join(f"{b} rows" for b in sizes) + " |")
    print("|---|---|" + "---:|" * len(sizes))
    for name in nets:
        for what in passes:
            cells = [f"{min(us[(name, what, b)]):.1f} ({statistics.median(us[(name, what, b)]):.1f})"
                     for b in sizes]
            print(f"| {name} | {what} | " + " | ".join(cells) + " |")
    print("us per image, min (median) of the rounds")


if __name__ == "__main__":
    main()
