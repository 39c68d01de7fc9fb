"""Any spec is an attack: search for counterexamples of a property and keep them.

A counterexample is a point of the property's domain where the exact checker says the body
is false; each comes with its score (the body's loss at the point under the logic).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robustspec.compiler import Property, SpecError
from robustspec.compiler.property import eval_mode
from robustspec.dsl.errors import InputError

from . import arguments, distributed
from .files import atomic_write
from .plots import plot_counterexamples
from .training import property_args


@dataclass
class AttackResult:
    property: str
    x0: torch.Tensor  # originals
    x: torch.Tensor  # the points found
    y: torch.Tensor
    pred_clean: torch.Tensor
    pred_found: torch.Tensor
    violated: torch.Tensor  # bool: the point is a counterexample
    score: torch.Tensor  # the body's loss at the point (> 0 where violated, under DL2)
    eps: float | None = None

    @property
    def success_rate(self) -> float:
        return float(self.violated.float().mean()) if len(self.violated) else 0.0

    def summary(self) -> str:
        n, k = len(self.violated), int(self.violated.sum())
        return (f"attack with property {self.property}" + (f" at eps {self.eps:g}" if self.eps is not None else "")
                + f": {k} of {n} inputs have a counterexample ({100 * k / max(n, 1):.1f}%)")

    def save(self, out_dir: str | Path, class_names: list[str] | None = None, grid: int = 8) -> dict:
        """counterexamples.npz (every counterexample) and counterexamples.png (the first few)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        v = self.violated
        npz = out / "counterexamples.npz"
        arrays = dict(x0=self.x0[v].numpy(), x=self.x[v].numpy(), y=self.y[v].numpy(),
                      pred_clean=self.pred_clean[v].numpy(), pred_found=self.pred_found[v].numpy(),
                      score=self.score[v].numpy(), index=torch.nonzero(v).flatten().numpy())
        atomic_write(npz, lambda f: np.savez_compressed(f, **arrays))
        idx = torch.nonzero(v).flatten()[:grid]

        def name(c):
            return class_names[c] if class_names and c < len(class_names) else str(c)
        top = [f"#{int(i)} y={name(int(self.y[i]))}\npred {name(int(self.pred_clean[i]))}" for i in idx]
        bottom = [f"pred {name(int(self.pred_found[i]))}" + (
            f"\nloss {float(self.score[i]):.3g}" if not torch.isnan(self.score[i]) else "")
            for i in idx]
        png = plot_counterexamples(self.x0[idx], self.x[idx], top, bottom, out / "counterexamples.png",
                                   title=self.summary())
        return {"npz": npz, "png": png}


def attack(model: torch.nn.Module, prop: Property, x: torch.Tensor, y: torch.Tensor, *,
           eps: float | None = None, eps_param: str = "eps", params: dict | None = None, steps: int = 50,
           step_size: float | None = None, restarts: int = 1, logic: str = "dl2", seed: int = 0,
           batch_size: int = 1000, device: str | torch.device | None = None,
           ranks: distributed.Ranks | None = None) -> AttackResult:
    """PGD on the property's counterexample objective, batched; returns every point found.

    Bad arguments (a negative or non-finite eps or parameter, a step size <= 0, inputs the
    model cannot take) are InputErrors before any search runs. device: where to run (None:
    where the model is); the result is on the CPU. ranks: each chunk of batch_size inputs is
    shared out over the data-parallel ranks (distributed.start()) and every rank gets the
    whole result; the points are those of one process."""
    arguments.batch(x, y, "attack")
    arguments.finite_inputs(x, "attack")
    batch_size = arguments.count(batch_size, "batch_size", 1)
    if eps is not None:
        eps = arguments.radius(eps, eps_param)
    params = arguments.params({**(params or {}), **({eps_param: eps} if eps is not None else {})})
    params = params or None
    search = arguments.pgd(steps, step_size, restarts)
    ranks = ranks if ranks is not None else distributed.SINGLE
    dev = distributed.place(model, device, ranks)
    x0, y0 = x, y
    x, y = x.to(dev), y.to(dev)  # once
    arguments.model_fits(model, x, y, "attack")
    with torch.no_grad():
        arguments.domains_not_empty(prop, model, x, y, params, "attack")
    gen = torch.Generator().manual_seed(seed)
    xs, viol, scores = [], [], []
    for i in range(0, len(x), batch_size):
        shard = distributed.batch_shard(len(x[i:i + batch_size]), ranks)
        rows = slice(i + shard.start, i + shard.stop)
        args = property_args(prop, x[rows], y[rows])
        found = prop.search(model, search=distributed.shard_search(search, shard, ranks),
                            logic=logic, params=params, generator=gen, **args)
        if len(found) != 1:
            raise InputError(f"property '{prop.name}' quantifies {list(found) or 'nothing'}; an "
                             "attack needs exactly one quantified input")
        verdict = prop.check(model, at=found, params=params, **args)
        try:
            with torch.no_grad(), eval_mode({"model": model}):
                s = prop.loss(model, logic=logic, search="points",
                              points={k: v.unsqueeze(1) for k, v in found.points.items()},
                              params=params, reduction="none", **args)
        except SpecError:  # a property without a loss (argmax): no score
            s = torch.full((len(verdict.holds),), float("nan"))
        xs.append(distributed.gather_rows(next(iter(found.points.values())), shard, ranks))
        viol.append(distributed.gather_rows(~verdict.holds, shard, ranks))
        scores.append(distributed.gather_rows(s, shard, ranks))
    with arguments.evaluating(model), torch.no_grad():
        xf = torch.cat(xs)
        pc = torch.cat([model(x[i:i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)])
        pf = torch.cat([model(xf[i:i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)])
    return AttackResult(prop.name, x0, xf.cpu(), y0, pc.cpu(), pf.cpu(), torch.cat(viol).cpu(),
                        torch.cat(scores).cpu(), eps)

