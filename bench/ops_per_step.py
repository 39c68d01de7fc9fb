"""Torch ops dispatched per PGD step, by property (issue 10, where the time goes).

On the paper's MLP with a batch of 128 an op on a [128, 10] tensor costs a few microseconds of
dispatch whatever it computes, and a pass over the [128, 784] batch of inputs 5-15 us, so the
count of each is what separates a step from its floor. The ops of one step are those of a
3-step search less those of a 2-step one (same seed); full-size = a result with >= 100k
elements; views (view, detach, t, expand, squeeze, ...) move no data and are counted apart. A
native kernel's call (compiler/native.py) counts as one op, named `native:<kernel>`, sized by
its largest tensor argument (its own allocations are dispatched ops and counted too; a
kernel's backward, called by autograd, shows only as its output's allocation, `empty_like`).

    .venv/bin/python bench/ops_per_step.py [--list LR]
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).parent))
import bench_training_speed as bts  # noqa: E402  (the same data, model and specs)

from robustspec.compiler import PGD, compile_spec, native  # noqa: E402

_ACTIVE: list["Record"] = []  # the recorder native kernel calls are counted in


def _count_native_calls() -> None:
    """Wrap each native kernel accessor so that a call is recorded as one op (a C++ kernel does
    not pass through torch's dispatcher as one op)."""
    for name in ("norm_inf", "norm_inf_of_difference", "norm_inf_split", "norm_inf_fold",
                 "prod_last", "better", "keep_step", "keep_fold_step", "relu_sub", "abs_sub"):
        accessor = getattr(native, name)

        def wrapped(accessor=accessor, name=name):
            fn = accessor()
            if fn is None:
                return None

            def call(*args):
                if _ACTIVE:
                    size = max((a.numel() for a in args if isinstance(a, torch.Tensor)), default=0)
                    _ACTIVE[-1].ops.append((f"native:{name}", size))
                return fn(*args)
            return call
        setattr(native, name, wrapped)


class Record(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, int]] = []

    def __enter__(self):
        _ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        _ACTIVE.remove(self)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append((func.overloadpacket.__name__,
                         out.numel() if isinstance(out, torch.Tensor) else 0))
        return out


VIEWS = {"view", "_unsafe_view", "detach", "t", "transpose", "expand", "squeeze", "unsqueeze",
         "slice", "as_strided", "permute", "alias", "select", "_reshape_alias"}


def one_step(run) -> list[tuple[str, int]]:
    def ops(k):
        rec = Record()
        with rec:
            run(k)
        return rec.ops
    two, three = ops(2), ops(3)
    n = len(three) - len(two)
    return three[len(two) - n:len(two)]  # the third step's place in the 3-step run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", default="", help="also list one step's ops of this row")
    args = ap.parse_args()
    torch.set_num_threads(1)
    _count_native_calls()
    x, y = bts.data()
    m = bts.model()
    props = bts.props()
    per_class = compile_spec(bts.PER_CLASS_SPEC, filename="<per-class SR>")
    rows = {name: props[name] for name in ("SR", "SCR", "LR")}
    rows["SR, norm_inf (bench)"] = per_class["sr_norm"]
    rows["SR, per class (bench)"] = per_class["sr_per_class"]
    am, ay = bts.attack_model(x, steps=50)
    cr = compile_spec(str(bts.ROOT / "specs" / "classification_robustness.spec"))["cr"]

    def search(prop, model, labels):
        return lambda k: prop.search(model, x0=x, y=labels, generator=torch.Generator().manual_seed(0),
                                     search=PGD(steps=k, step_size=bts.STEP_SIZE, early_stop=False))
    runs = {name: search(p, m, y) for name, p in rows.items()}
    runs["CR attack"] = search(cr, am, ay)
    try:
        import torchattacks
        runs["torchattacks.PGD"] = lambda k: torchattacks.PGD(am, eps=0.1, alpha=bts.STEP_SIZE,
                                                              steps=k)(x, ay)
    except ImportError:
        pass
    print("| search | ops per step | views | full-size passes | small ops | the full-size passes |")
    print("|---|---:|---:|---:|---:|---|")
    for name, run in runs.items():
        ops = one_step(run)
        views = [op for op, _ in ops if op in VIEWS]
        full = [op for op, n in ops if n >= 100_000 and op not in VIEWS]
        counts = Counter(full)
        print(f"| {name} | {len(ops)} | {len(views)} | {len(full)} | "
              f"{len(ops) - len(views) - len(full)} | "
              + ", ".join(f"{op}" + (f" x{c}" if c > 1 else "") for op, c in counts.items()) + " |")
        if args.list and args.list == name:
            for op, n in ops:
                print(f"    {op} ({n})")


if __name__ == "__main__":
    main()
