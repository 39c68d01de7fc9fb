"""Median time of one compiled training loss (PGD search + loss + backward), nothing else.

For comparing two versions of robustspec side by side: run it alternately under each, e.g.
with an older checkout laid out as a package on PYTHONPATH (PYTHONPATH wins over the editable
install). Prints the median in ms.

    .venv/bin/python bench/time_one_loss.py --property lr
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from robustspec.compiler import PGD, compile_spec
from robustspec.runtime.models import PaperMLP

SPECS = {"sr": "standard_robustness.spec", "scr": "strong_classification_robustness.spec",
         "lr": "lipschitz_robustness.spec"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--property", choices=sorted(SPECS), default="lr")
    ap.add_argument("--reps", type=int, default=150)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = PaperMLP(784)
    x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
    spec = Path(__file__).resolve().parents[1] / "specs" / SPECS[args.property]
    prop = compile_spec(spec)[args.property]
    pgd = PGD(steps=10, step_size=0.01, early_stop=False)

    def one() -> float:
        g = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        prop.loss(model, x0=x, y=y, search=pgd, generator=g).backward()
        return time.perf_counter() - start

    for _ in range(5):
        one()
    print(f"{statistics.median(one() for _ in range(args.reps)) * 1e3:.3f}")


if __name__ == "__main__":
    main()
