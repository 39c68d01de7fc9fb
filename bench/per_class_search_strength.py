"""How many counterexamples the SR search finds written per class and with norm_inf, per logic.

`forall j in classes . |f(x)[j] - f(x0)[j]| <= delta` and `norm_inf(f(x) - f(x0)) <= delta` are
one property, but their search objectives differ: the negated per-class body is an `exists`
over the classes, a product of the ten atoms' losses under DL2 and the product logic, a
maximum under Goedel. This runs both forms' PGD searches on the same inputs from the same
seed, with each logic, and counts the inputs where the exact checker finds SR violated at the
point found. The network is bench_compiled_vs_handwritten's: the paper's MLP at its random
initialisation with every weight x6, so that SR (delta 10) can be violated; the inputs are the
first Fashion-MNIST test images where the data is found (uniform noise otherwise).

    .venv/bin/python bench/per_class_search_strength.py [--n 512] [--steps 10,50]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_compiled_vs_handwritten as cvh  # noqa: E402
from bench_training_speed import PER_CLASS_SPEC  # noqa: E402

from robustspec.compiler import PGD, compile_spec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="inputs (default 512)")
    ap.add_argument("--steps", default="10,50", help="PGD step counts (default 10,50)")
    ap.add_argument("--logics", default="dl2,product,goedel,lukasiewicz")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(cvh.SEED)
    spec = compile_spec(PER_CLASS_SPEC, filename="<per-class SR>")
    model = cvh.scaled(cvh.paper_mlp().eval(), cvh.CHECK_SCALE)
    x0, y, data = cvh.load_batch(args.n)
    steps = [int(s) for s in args.steps.split(",")]
    print(f"# {data}; the paper's MLP at its random initialisation, weights x{cvh.CHECK_SCALE:g}; "
          f"PGD steps of {cvh.STEP_SIZE}, one uniform start, no early stop; eps 0.1, delta 10")
    print("| logic | PGD steps | norm_inf form: SR violated | per-class form: SR violated | "
          "per-class form: objective 0 at its point |")
    print("|---|---:|---:|---:|---:|")
    for logic in args.logics.split(","):
        for s in steps:
            share, zero = {}, 0.0
            for form in ("sr_norm", "sr_per_class"):
                gen = torch.Generator().manual_seed(cvh.SEED)
                found = spec[form].search(model, x0=x0, y=y, logic=logic, generator=gen,
                                          search=PGD(steps=s, step_size=cvh.STEP_SIZE,
                                                     early_stop=False))
                # the same exact check of SR at either form's points
                verdict = spec["sr_norm"].check(model, x0=x0, y=y, at=found)
                share[form] = 1 - verdict.holds.float().mean().item()
                # the search's own verdict (objective <= 0: "found"), which under a logic
                # that is not sound need not be the exact check's
                zero = (found.objective["x"] <= 0).float().mean().item()
            print(f"| {logic} | {s} | {share['sr_norm']:.1%} | {share['sr_per_class']:.1%} | "
                  f"{zero:.1%} |", flush=True)


if __name__ == "__main__":
    main()
