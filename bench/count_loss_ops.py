"""Count (not time) the work of one compiled training loss: torch calls and Python function
calls of `prop.loss(model, ...).backward()` for SR, SCR and LR (batch 128, PGD 10 steps).

Counts are deterministic, so two versions compare exactly even on a loaded machine: run it
under each (an older checkout laid out as a package `robustspec/` on PYTHONPATH wins over the
editable install), e.g.

    git archive 1a7effd | tar -x -C /tmp/old/robustspec
    PYTHONPATH=/tmp/old .venv/bin/python bench/count_loss_ops.py
    .venv/bin/python bench/count_loss_ops.py
"""
from __future__ import annotations

import cProfile
import collections
import pstats
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

import robustspec.compiler as compiler
from robustspec.compiler import PGD, compile_spec
from robustspec.runtime.models import PaperMLP

SPECS = (("sr", "standard_robustness.spec"), ("scr", "strong_classification_robustness.spec"),
         ("lr", "lipschitz_robustness.spec"))


class _Count(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls[getattr(func, "__name__", str(func))] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = Path(compiler.__file__).resolve().parents[1]
    model = PaperMLP(784)
    x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
    print(f"# code at {root}")
    for name, spec in SPECS:
        prop = compile_spec(root / "specs" / spec)[name]
        pgd = PGD(steps=10, step_size=0.01, early_stop=False)

        def one():
            prop.loss(model, x0=x, y=y, search=pgd,
                      generator=torch.Generator().manual_seed(0)).backward()
        one()  # warm: closures compiled, caches filled
        with _Count() as counted:
            one()
        profile = cProfile.Profile()
        profile.enable()
        one()
        profile.disable()
        print(f"{name}: torch calls {sum(counted.calls.values())}, Python function calls "
              f"{pstats.Stats(profile).total_calls}")


if __name__ == "__main__":
    main()
