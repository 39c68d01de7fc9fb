"""The evaluation's time with the searches' uniform numbers from the native SplitMix64 kernel
against torch.rand (what the searches drew before 5 December 2026), side by side in one run.

`evaluate` (runtime/metrics.py) as `robustspec reproduce` calls it for one attack: constraint
security by a 50-step PGD and constraint accuracy by 100 uniform samples per input, at one
radius, on the paper's MLP (bench_training_speed's synthetic data and fitted model: runs
anywhere). The two ways alternate, `--reps` times each; one thread. The numbers differ between
the two (other random draws); the time is what this measures, and the counts are printed so a
reader sees they are alike.

    .venv/bin/python bench/eval_sampling.py [--n 2000] [--reps 3] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_training_speed as bts  # noqa: E402

from robustspec.compiler import compile_spec, native, search  # noqa: E402
from robustspec.runtime.metrics import evaluate  # noqa: E402


def torch_rand(shape, dtype, device, gen):
    """The searches' uniform numbers as they were: torch.rand from the generator."""
    return torch.rand(tuple(shape), generator=gen, dtype=dtype, device=device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if native.uniform() is None:
        sys.exit(f"the native kernels are unavailable here: {native.status()}")
    x, _ = bts.data(args.n)
    model, y = bts.attack_model(x)
    specs = {name: compile_spec(str(bts.ROOT / "specs" / f))[p] for name, (f, p) in bts.SPECS.items()}
    kernel_uniform = search.uniform
    ways = {"splitmix64 kernel": kernel_uniform, "torch.rand": torch_rand}
    times: dict[str, dict[str, list[float]]] = {w: {p: [] for p in specs} for w in ways}
    counts: dict[str, dict[str, list]] = {w: {} for w in ways}
    for _rep in range(args.reps):
        for way, fn in ways.items():
            search.uniform = fn
            try:
                for name, prop in specs.items():
                    start = time.perf_counter()
                    r = evaluate(model, prop, x, y, eps=[args.eps], steps=50, samples=100,
                                 progress=False)
                    times[way][name].append(time.perf_counter() - start)
                    row = r.rows[0]
                    counts[way][name] = [row.constraint_security, row.constraint_accuracy]
            finally:
                search.uniform = kernel_uniform
    print(f"evaluate, {args.n} inputs, eps {args.eps}, PGD 50 steps + 100 samples; "
          f"best of {args.reps} (s), one thread")
    print(f"{'attack':8s} {'torch.rand':>11s} {'kernel':>8s} {'ratio':>6s}   security / accuracy "
          "(torch.rand | kernel)")
    out = {"n": args.n, "eps": args.eps, "reps": args.reps, "rows": []}
    for name in specs:
        old, new = min(times["torch.rand"][name]), min(times["splitmix64 kernel"][name])
        print(f"{name:8s} {old:11.2f} {new:8.2f} {old / new:5.2f}x   "
              f"{counts['torch.rand'][name]} | {counts['splitmix64 kernel'][name]}")
        out["rows"].append({"attack": name, "torch_rand_s": times["torch.rand"][name],
                            "kernel_s": times["splitmix64 kernel"][name], "ratio": old / new,
                            "counts_torch_rand": counts["torch.rand"][name],
                            "counts_kernel": counts["splitmix64 kernel"][name]})
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
