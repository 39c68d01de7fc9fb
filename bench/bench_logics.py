"""The cost of each logic in training: one constraint-loss step, relative to DL2.

One step is what the constraint regime does per batch: `prop.loss(model, x0=x, y=y,
logic=L, search=PGD(steps=10, step_size=0.01, early_stop=False))` (a 10-step PGD search for the
worst point of each example, then the loss there), `backward()`, and an Adam step, on a batch of
128 through the paper's network (`PaperMLP(784)`: 784-100-10 MLP with the output clamp), one
thread. Every logic gets its own copy of the same initial model and optimiser; the steps are
timed interleaved (dl2, goedel, ..., stl, dl2, ... with the order rotated every round) in one
run, so drift and other load hit all logics alike. The table reports the median per logic and
property, and the ratio of medians to DL2's.

    .venv/bin/python bench/bench_logics.py [--reps N] [--markdown]
"""
from __future__ import annotations

import argparse
import copy
import gzip
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from robustspec.compiler import PGD, compile_spec
from robustspec.compiler.logics import BUILTIN_LOGICS, get_logic
from robustspec.runtime.models import PaperMLP

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/work/shared/data/fashion-mnist")
BATCH, STEPS, STEP_SIZE, SEED = 128, 10, 0.01, 0
PROPS = {
    "SR": ("standard_robustness.spec", "sr"),
    "SCR": ("strong_classification_robustness.spec", "scr"),
    "LR": ("lipschitz_robustness.spec", "lr"),
}


def load_batch(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first n Fashion-MNIST test images in [0, 1] with labels, or uniform noise."""
    images, labels = FMNIST / "t10k-images-idx3-ubyte.gz", FMNIST / "t10k-labels-idx1-ubyte.gz"
    if images.exists() and labels.exists():
        with gzip.open(images, "rb") as f:
            raw = f.read(16 + n * 784)
        with gzip.open(labels, "rb") as f:
            lab = f.read(8 + n)
        x = torch.from_numpy(np.frombuffer(raw[16:], dtype=np.uint8).copy()).float() / 255
        y = torch.from_numpy(np.frombuffer(lab[8:], dtype=np.uint8).copy()).long()
        return x.reshape(n, 1, 28, 28), y, "Fashion-MNIST test images"
    g = torch.Generator().manual_seed(SEED)
    return (torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g),
            "uniform noise (Fashion-MNIST not found)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=40, help="timed steps per logic and property")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--markdown", action="store_true", help="print the docs section")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    x, y, source = load_batch(BATCH)
    torch.manual_seed(SEED)
    base = PaperMLP(784)
    logics = list(BUILTIN_LOGICS)
    search = PGD(steps=STEPS, step_size=STEP_SIZE, early_stop=False)
    times: dict[tuple[str, str], list[float]] = {}
    losses: dict[tuple[str, str], float] = {}
    for pname, (file, name) in PROPS.items():
        prop = compile_spec(ROOT / "specs" / file)[name]
        state = {}
        for lg in logics:
            model = copy.deepcopy(base).train()
            state[lg] = (model, torch.optim.Adam(model.parameters(), lr=1e-4), get_logic(lg))

        def step(lg: str) -> float:
            model, opt, logic = state[lg]
            gen = torch.Generator().manual_seed(SEED)
            t0 = time.perf_counter()
            loss = prop.loss(model, x0=x, y=y, logic=logic, search=search, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            dt = time.perf_counter() - t0
            if not torch.isfinite(loss):
                raise SystemExit(f"{pname} under {lg}: the loss is {float(loss)}")
            losses[(pname, lg)] = float(loss.detach())
            return dt

        for _ in range(args.warmup):
            for lg in logics:
                step(lg)
        for r in range(args.reps):
            order = logics[r % len(logics):] + logics[:r % len(logics)]
            for lg in order:
                times.setdefault((pname, lg), []).append(step(lg))

    med = {k: statistics.median(v) for k, v in times.items()}
    header = ("| logic | " + " | ".join(f"{p} ms | {p} / DL2" for p in PROPS) + " |")
    rule = "|---|" + "---:|---:|" * len(PROPS)
    rows = []
    for lg in logics:
        cells = []
        for p in PROPS:
            cells += [f"{med[(p, lg)] * 1e3:.1f}", f"{med[(p, lg)] / med[(p, 'dl2')]:.2f}"]
        rows.append(f"| {lg} | " + " | ".join(cells) + " |")
    table = "\n".join([header, rule] + rows)
    machine = (f"{platform.machine()}, {platform.processor() or platform.platform()}, torch "
               f"{torch.__version__}, Python {platform.python_version()}, 1 thread")
    if args.markdown:
        print(SECTION.format(table=table, reps=args.reps, source=source, machine=machine,
                             warmup=args.warmup))
    else:
        print(f"{source}; {machine}; median of {args.reps} steps each\n")
        print(table)
        print("\nlast loss per logic:", {f"{p}/{lg}": round(v, 4) for (p, lg), v in losses.items()})
    return 0


SECTION = """## Logics: one constraint-loss training step, relative to DL2

**Question.** What does the choice of logic cost in training? One step of the constraint
regime under each built-in logic, relative to DL2.

**What is measured.** One training step: `prop.loss(model, x0=x, y=y, logic=L,
search=PGD(steps=10, step_size=0.01, early_stop=False))` (the 10-step PGD search for each
example's worst point, under the logic's loss, then the loss at the points found), `backward()`
and an Adam step (lr 1e-4), on a batch of 128 ({source}) through the paper's network
(`PaperMLP(784)`: 784-100-10, output clamp), one thread. Each logic trains its own copy of the
same initial model; the specs' default parameters (SR eps 0.1 delta 10, SCR eta 0.52, LR L 10);
default logic options (xi = 1; Yager p = 2; STL nu = 1). All logics are timed in one run,
interleaved (one step per logic per round, the order rotated every round), {warmup} warm-up
rounds, then the median of {reps} steps each. At the initial weights SR and LR hold for the
whole batch (loss 0) and SCR does not; with `early_stop=False` the search does the same work
either way.

```sh
.venv/bin/python bench/bench_logics.py --markdown      # this section
```

**Result** ({machine}):

{table}

**Reading it.** The network's forward and backward passes (14 network evaluations per step
for SR and LR, 12 for SCR, the same under every logic) dominate the step. A logic changes only
the few elementwise operations on `[128]`-sized tensors that turn the atoms into a value and the
value into a loss, at each of the 11 evaluations of the search objective and in the final loss:
the fuzzy logics add `1 / (1 + v)` to every atom and `1 - v` for the loss (a handful of extra
small kernels forward and backward, each a few microseconds), STL's atom `b - a` is as cheap as
DL2's `relu(a - b)`. So the spread between logics is a few percent, of the order of the
run-to-run noise on this shared 2-CPU machine; re-run the script to see it.
"""


if __name__ == "__main__":
    sys.exit(main())
