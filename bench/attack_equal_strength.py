"""The PGD attack against torchattacks' at equal strength, measured by success (issue 10).

bench_training_speed.py compares the two at equal settings (radius, 50 steps, step size, one
uniform start), where robustspec's attack is the slightly stronger one: it keeps each input's
best point, torchattacks its last. Here strength is the share of inputs misclassified after
the attack, on 2048 inputs: robustspec with 50 steps (no early stop) against torchattacks
with 50, 100 and 200 steps, the step eps / 10 for both, at several radii; then the time per
batch of 128 of each, interleaved, one thread. The inputs and model are bench_training_speed's
synthetic ones (the paper's MLP fitted to a random linear teacher), so this runs anywhere.

    .venv/bin/python bench/attack_equal_strength.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_training_speed as bts  # noqa: E402

from robustspec.compiler import PGD, compile_spec  # noqa: E402

RADII = (0.002, 0.005, 0.01)
THEIR_STEPS = (50, 100, 200)
OUR_STEPS = 50


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torchattacks

    torch.set_num_threads(1)
    x, _ = bts.data(args.n)
    m, y = bts.attack_model(x)
    cr = compile_spec(str(bts.ROOT / "specs" / "classification_robustness.spec"))["cr"]
    with torch.no_grad():
        clean = m(x).argmax(1) == y

    def broken(points):
        with torch.no_grad():
            return float(((m(points).argmax(1) != y) | ~clean).float().mean())

    def ours(xb, yb, eps, gen):
        return cr.search(m, x0=xb, y=yb, params={"eps": eps}, generator=gen,
                         search=PGD(steps=OUR_STEPS, step_size=eps / 10, early_stop=False)).points["x"]

    def theirs(xb, yb, eps, steps):
        return torchattacks.PGD(m, eps=eps, alpha=eps / 10, steps=steps, random_start=True)(xb, yb)

    batches = [(x[i:i + bts.BATCH], y[i:i + bts.BATCH]) for i in range(0, args.n, bts.BATCH)]
    rows = []
    for eps in RADII:
        gen = torch.Generator().manual_seed(bts.SEED)
        row = {"eps": eps, "robustspec_50": broken(torch.cat([ours(a, b, eps, gen) for a, b in batches]))}
        torch.manual_seed(bts.SEED)  # torchattacks' random start draws from the global generator
        for s in THEIR_STEPS:
            row[f"torchattacks_{s}"] = broken(torch.cat([theirs(a, b, eps, s) for a, b in batches]))
        rows.append(row)
    xb, yb = batches[0]
    gen = torch.Generator().manual_seed(bts.SEED)
    fns = {"robustspec_50": lambda: ours(xb, yb, 0.1, gen)}
    for s in THEIR_STEPS:
        fns[f"torchattacks_{s}"] = (lambda s: lambda: theirs(xb, yb, 0.1, s))(s)
    times = bts.interleaved(fns, 10)
    print(f"clean accuracy {float(clean.float().mean()):.3f} on {args.n} inputs; misclassified "
          f"after the attack (step eps / 10):")
    print("| eps | robustspec, 50 steps | " + " | ".join(f"torchattacks, {s} steps" for s in THEIR_STEPS) + " |")
    print("|---:|---:|" + "---:|" * len(THEIR_STEPS))
    for r in rows:
        print(f"| {r['eps']} | {100 * r['robustspec_50']:.1f}% | "
              + " | ".join(f"{100 * r[f'torchattacks_{s}']:.1f}%" for s in THEIR_STEPS) + " |")
    print("\nms per batch of 128 (wall / thread CPU), interleaved:")
    for k, t in times.items():
        print(f"  {k}: {t['wall_ms']:.1f} / {t['cpu_ms']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"n": args.n, "clean_accuracy": float(clean.float().mean()),
                                               "rows": rows, "times": times}, indent=1))


if __name__ == "__main__":
    main()
