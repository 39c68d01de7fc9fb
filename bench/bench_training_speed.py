"""Training and attack speed, side by side in one run: robustspec against its floors and peers.

One thread, batch 128, the paper's MLP (`PaperMLP(784)`: 784-100-10, clamp), synthetic data
(uniform random images in [0, 1], random labels), so it runs anywhere. Three comparisons:

(a) step: one constraint-training step (alpha * cross-entropy + beta * the property's DL2 loss
    with a k-step PGD search, backward, Adam step (the trainer's fused one), as runtime/training.py's constraint regime
    does: the cross-entropy's model(x) handed to the loss as f(x0) with `outputs=`, and
    early_stop=False so all k steps run) for SR, SCR and LR, k = 10 and 50, against its
    floor: (k + 2) bare forward-backward passes of the network on the batch
    (`cross_entropy(model(x), y).backward()`, weight gradients, nothing else); and, side by
    side, the same step without `outputs=` (the loss runs f(x0) itself).
(b) attack: the PGD attack's throughput, robustspec (`prop.search` of classification
    robustness, specs/classification_robustness.spec `cr`, its argmax searched through the
    margin form) against torchattacks.PGD on cross-entropy, at equal strength: same eps, steps,
    step size, one uniform random start, no early stop; images/s and the ratio. Also the whole
    `runtime.attack.attack` (search + exact check + scores + predictions, early stop on), and
    the fraction of inputs each attack breaks, on a small trained model (see `attack_model`).
(c) quantifier: SR written per class (`forall j in classes . abs(f(x)[j] - f(x0)[j]) <= delta`)
    against SR written with norm_inf: the loss (10-step PGD + loss + backward) and the search.

Plus the grid projection: each of the 7 paper regimes' step (as runtime/training.py builds it,
the paper's 50-step PGD of 0.01, early stop off = the most work) timed, and the Fashion-MNIST grid
at the paper's budget (7 regimes x 100 epochs x 60,000 examples) projected for --jobs 1 and 2.

Timings are interleaved (A B A B ...) so other load hits both sides alike; each side's median
of `--reps` (after warm-up) is reported in wall-clock ms and in thread CPU ms (CPU time does not
count time the process waited for a core on a shared machine).

    .venv/bin/python bench/bench_training_speed.py [--reps N] [--json PATH]
                                                   [--only step,attack,quantifier,grid] [--profile]
"""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from robustspec.compiler import FGSM, PGD, RandomSampling, compile_spec
from robustspec.compiler import search
from robustspec.runtime.models import PaperMLP
from robustspec.runtime.training import adam  # the trainer's optimiser (fused Adam)

ROOT = Path(__file__).resolve().parents[1]
BATCH, SEED, STEP_SIZE, EPS = 128, 0, 0.01, 0.1
ALPHA, BETA, LR = 1.0, 0.2, 1e-4  # the paper's constraint-loss weights and Adam learning rate
SPECS = {"SR": ("standard_robustness.spec", "sr"),
         "SCR": ("strong_classification_robustness.spec", "scr"),
         "LR": ("lipschitz_robustness.spec", "lr")}
PER_CLASS_SPEC = """
network f : Tensor -> Tensor
param eps   : Real = 0.1
param delta : Real = 10
valid(x) = 0 <= x <= 1
property sr_norm(x0 : Tensor, y : Label) =
  forall x . norm_inf(x - x0) <= eps and valid(x) => norm_inf(f(x) - f(x0)) <= delta
property sr_per_class(x0 : Tensor, y : Label) =
  forall x . norm_inf(x - x0) <= eps and valid(x) =>
    forall j in classes . abs(f(x)[j] - f(x0)[j]) <= delta
"""
ADAM_KEY = "Adam step (the trainer's: fused, runtime.training.adam)"
GRID = {"regimes": 7, "epochs": 100, "examples": 60_000, "steps": 50}


# ---------------------------------------------------------------- timing
class Counter:
    """Counts the network's forward passes, to show the work each side does: the MLP's
    forward is one `addmm` per linear layer (its backward uses `mm`), counted by a dispatch
    mode, not a forward hook (a hook makes the network code the compiler knows nothing of,
    so it would stop `outputs=` from being used: compiler.quantifiers.mode_independent)."""

    def __init__(self, model):
        self.layers = sum(isinstance(m, torch.nn.Linear) for m in model.modules())

    def count(self, run) -> int:
        from torch.utils._python_dispatch import TorchDispatchMode

        class Count(TorchDispatchMode):
            n = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                Count.n += func.overloadpacket.__name__ == "addmm"
                return func(*args, **(kwargs or {}))

        with Count():
            run()
        return Count.n // self.layers


def interleaved(fns: dict, reps: int, warmup: int = 3) -> dict:
    """Run the functions round-robin; per function the median wall and thread-CPU ms."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for r in range(reps):
        names = list(fns)
        names = names[r % len(names):] + names[:r % len(names)]  # rotate the order every round
        for k in names:
            w0, c0 = time.perf_counter(), time.thread_time()
            fns[k]()
            cpu[k].append(time.thread_time() - c0)
            wall[k].append(time.perf_counter() - w0)
    return {k: {"wall_ms": 1e3 * statistics.median(wall[k]), "cpu_ms": 1e3 * statistics.median(cpu[k]),
                "wall_ms_iqr": [1e3 * q for q in _quartiles(wall[k])]} for k in fns}


def _quartiles(v):
    q = statistics.quantiles(v, n=4)
    return [q[0], q[2]]


# ---------------------------------------------------------------- data, models, properties
def data(n: int = BATCH, seed: int = SEED):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def model(seed: int = SEED) -> torch.nn.Module:
    torch.manual_seed(seed)
    return PaperMLP(784)


def props() -> dict:
    return {k: compile_spec(str(ROOT / "specs" / f))[p] for k, (f, p) in SPECS.items()}


def outputs(logits) -> dict:
    """`outputs=` for prop.loss, where this robustspec has it (not before commit 7323d03:
    a run of the old compiler for comparison then times the step as it was)."""
    from robustspec.compiler import Property
    return {"outputs": {"x0": logits}} if "outputs" in inspect.signature(Property.loss).parameters \
        else {}


def floor_pass(m, opt, x, y):
    """One bare forward-backward pass of the network on the batch (weight gradients)."""
    def run():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y).backward()
    return run


def constraint_step(m, opt, prop, x, y, steps: int, gen, early_stop: bool = False,
                    share: bool = True):
    """runtime/training.py's constraint regime, one batch (early stop off: all k steps run).
    share: hand the cross-entropy's model(x) to the loss as f(x0) (`outputs=`), as the
    trainer does; False: the step as it was before that."""
    search = PGD(steps=steps, step_size=STEP_SIZE, early_stop=early_stop)

    def run():
        logits = m(x)
        loss = ALPHA * F.cross_entropy(logits, y) + BETA * prop.loss(
            m, logic="dl2", search=search, generator=gen, x0=x, y=y,
            **(outputs(logits) if share else {}))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


# ---------------------------------------------------------------- (a) steps vs floor
def bench_steps(reps: int, ks=(10, 50)) -> list[dict]:
    x, y = data()
    rows = []
    for name, prop in props().items():
        for k in ks:
            m = model()
            opt = adam(m.parameters(), LR)
            fm = copy.deepcopy(m)
            fopt = adam(fm.parameters(), LR)
            om = copy.deepcopy(m)
            oopt = adam(om.parameters(), LR)
            gen = torch.Generator().manual_seed(SEED + 1)
            step = constraint_step(m, opt, prop, x, y, k, gen)
            # the step without `outputs=` (f(x0) run again by the loss), side by side
            old = constraint_step(om, oopt, prop, x, y, k, torch.Generator().manual_seed(SEED + 1),
                                  share=False)
            floor = floor_pass(fm, fopt, x, y)
            count = Counter(m)
            evals, evals_old = count.count(step), count.count(old)

            def forward():
                with torch.no_grad():
                    fm(x)
            t = interleaved({"step": step, "pass": floor, "forward": forward,
                             "step without outputs=": old}, max(10, reps * 10 // k))
            f_wall, f_cpu = (k + 2) * t["pass"]["wall_ms"], (k + 2) * t["pass"]["cpu_ms"]
            o = t["step without outputs="]
            rows.append({"property": name, "k": k, "step_ms": t["step"]["wall_ms"],
                         "old_step_ms": o["wall_ms"], "old_step_cpu_ms": o["cpu_ms"],
                         "old_ratio": o["wall_ms"] / f_wall, "old_ratio_cpu": o["cpu_ms"] / f_cpu,
                         "old_network_evals": evals_old,
                         "step_ms_iqr": t["step"]["wall_ms_iqr"], "step_cpu_ms": t["step"]["cpu_ms"],
                         "pass_ms": t["pass"]["wall_ms"], "floor_ms": f_wall, "floor_cpu_ms": f_cpu,
                         "forward_ms": t["forward"]["wall_ms"], "forward_cpu_ms": t["forward"]["cpu_ms"],
                         "pass_cpu_ms": t["pass"]["cpu_ms"],
                         "ratio": t["step"]["wall_ms"] / f_wall, "ratio_cpu": t["step"]["cpu_ms"] / f_cpu,
                         "examples_per_s": BATCH / t["step"]["wall_ms"] * 1e3,
                         "floor_examples_per_s": BATCH / f_wall * 1e3, "network_evals": evals})
    # the floor pass is the same computation in every row, yet a row's own loop can time it
    # 10-40% off the others' (a slow moment of the machine): also each step against the
    # median pass of all the rows
    median_pass = statistics.median(r["pass_ms"] for r in rows)
    for r in rows:
        r["ratio_median_floor"] = r["step_ms"] / ((r["k"] + 2) * median_pass)
    return rows


# ---------------------------------------------------------------- (b) attack throughput
def attack_model(x, steps: int = 400):
    """A model that is not trivially broken: the MLP fitted to a fixed random linear teacher's
    labels on uniform images, the attacked images among them (synthetic, runs anywhere).
    Returns the model and the teacher's labels of x."""
    m = model()
    g = torch.Generator().manual_seed(SEED + 7)
    teacher = torch.randn(784, 10, generator=g)
    xt = torch.cat([x, torch.rand(4096, 1, 28, 28, generator=g)])
    yt = ((xt.flatten(1) - 0.5) @ teacher).argmax(1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for i in range(steps):
        idx = torch.randint(0, len(xt), (BATCH,), generator=g)
        opt.zero_grad()
        F.cross_entropy(m(xt[idx]), yt[idx]).backward()
        opt.step()
    m.eval()
    return m, yt[: len(x)]


STRENGTH_EPS = (0.002, 0.005, 0.1)  # step size eps / 10, 50 steps, as the paper's 0.1 / 0.01


def ops_per_step(m, cr, x, y, torchattacks) -> dict:
    """Torch ops dispatched per PGD step (a 2-step run minus a 1-step run), both attacks."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    def count(run) -> int:
        Count.n = 0
        with Count():
            run()
        return Count.n

    gen = torch.Generator().manual_seed(SEED)
    ours = [count(lambda: cr.search(m, x0=x, y=y, generator=gen,
                                    search=PGD(steps=k, step_size=STEP_SIZE, early_stop=False)))
            for k in (1, 2)]
    theirs = [count(lambda: torchattacks.PGD(m, eps=EPS, alpha=STEP_SIZE, steps=k)(x, y))
              for k in (1, 2)]
    return {"robustspec": ours[1] - ours[0], "torchattacks": theirs[1] - theirs[0]}


def bench_attack(reps: int, steps: int = 50, batch: int = BATCH) -> dict:
    import torchattacks

    from robustspec.runtime.attack import attack as rs_attack

    x, _ = data(batch)
    m, y = attack_model(x)
    cr = compile_spec(str(ROOT / "specs" / "classification_robustness.spec"))["cr"]
    ta = torchattacks.PGD(m, eps=EPS, alpha=STEP_SIZE, steps=steps, random_start=True)
    search = PGD(steps=steps, step_size=STEP_SIZE, early_stop=False)
    gen = torch.Generator().manual_seed(SEED + 2)
    count = Counter(m)

    def ours():
        return cr.search(m, x0=x, y=y, search=search, generator=gen)

    def ours_early():  # the default: stop once every input is broken (looked at every 10 steps)
        return cr.search(m, x0=x, y=y, search=PGD(steps=steps, step_size=STEP_SIZE), generator=gen)

    def theirs():
        return ta(x, y)

    def whole():
        return rs_attack(m, cr, x, y, eps=EPS, steps=steps, step_size=STEP_SIZE, seed=SEED,
                         batch_size=batch)

    evals_ours, evals_theirs = count.count(ours), count.count(theirs)
    t = interleaved({"robustspec": ours, "torchattacks": theirs, "robustspec, early stop": ours_early,
                     "attack()": whole}, max(10, reps * 10 // steps))
    with torch.no_grad():
        clean = m(x).argmax(1) == y
    strength = {}
    for eps in STRENGTH_EPS:  # the share of the batch each attack breaks (misclassifies)
        p = {"eps": eps}
        xo = cr.search(m, x0=x, y=y, params=p, generator=torch.Generator().manual_seed(SEED + 2),
                       search=PGD(steps=steps, step_size=eps / 10, early_stop=False)).points["x"]
        xt = torchattacks.PGD(m, eps=eps, alpha=eps / 10, steps=steps, random_start=True)(x, y)
        with torch.no_grad():
            strength[eps] = {"robustspec": float(((m(xo).argmax(1) != y) | ~clean).float().mean()),
                             "torchattacks": float(((m(xt).argmax(1) != y) | ~clean).float().mean())}
    res = {"batch": batch, "steps": steps, "eps": EPS, "step_size": STEP_SIZE,
           "clean_accuracy": float(clean.float().mean()), "misclassified_after_attack": strength,
           "torch_ops_per_step": ops_per_step(m, cr, x, y, torchattacks),
           "network_evals_robustspec": evals_ours, "network_evals_torchattacks": evals_theirs}
    for k, v in t.items():
        res[k] = {**v, "images_per_s": batch / v["wall_ms"] * 1e3}
    res["ratio"] = res["robustspec"]["images_per_s"] / res["torchattacks"]["images_per_s"]
    res["ratio_cpu"] = t["torchattacks"]["cpu_ms"] / t["robustspec"]["cpu_ms"]
    res["ratio_attack()"] = res["attack()"]["images_per_s"] / res["torchattacks"]["images_per_s"]
    return res


# ---------------------------------------------------------------- (c) finite quantifier
def bench_quantifier(reps: int, steps: int = 10) -> dict:
    spec = compile_spec(PER_CLASS_SPEC, filename="<per-class SR>")
    x, y = data()
    m = model()
    search = PGD(steps=steps, step_size=STEP_SIZE, early_stop=False)
    fns = {}
    for name in ("sr_norm", "sr_per_class"):
        prop = spec[name]
        gen = torch.Generator().manual_seed(SEED + 3)
        fns[f"{name} loss"] = (lambda p, g: lambda: p.loss(m, x0=x, y=y, search=search,
                                                             generator=g).backward())(prop, gen)
        fns[f"{name} search"] = (lambda p, g: lambda: p.search(m, x0=x, y=y, search=search,
                                                                 generator=g))(prop, gen)
    t = interleaved(fns, max(10, reps * 10 // steps))
    return {"steps": steps, **t,
            "ratio_loss": t["sr_per_class loss"]["wall_ms"] / t["sr_norm loss"]["wall_ms"],
            "ratio_search": t["sr_per_class search"]["wall_ms"] / t["sr_norm search"]["wall_ms"],
            "ratio_loss_cpu": t["sr_per_class loss"]["cpu_ms"] / t["sr_norm loss"]["cpu_ms"],
            "ratio_search_cpu": t["sr_per_class search"]["cpu_ms"] / t["sr_norm search"]["cpu_ms"]}


# ---------------------------------------------------------------- the grid projection
def regime_steps(m, opt, pr: dict, x, y, gen, steps: int) -> dict:
    """One batch of each paper regime as runtime/training.py builds it (PGD early stop off)."""
    sr = pr["SR"]
    pgd = PGD(steps=steps, step_size=STEP_SIZE, early_stop=False)

    def train_on(loss_fn):
        def run():
            loss = loss_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    def point(search):
        return next(iter(sr.search(m, x0=x, y=y, search=search, generator=gen).points.values())).detach()

    def augment(searches):
        def loss():
            xs = torch.cat([x] + [point(s) for s in searches])
            return F.cross_entropy(m(xs), y.repeat(len(searches) + 1))
        return loss

    def adversarial():
        loss = F.cross_entropy(m(point(pgd)), y)
        with torch.no_grad():
            m(x)
        return loss

    def constraint(prop):
        def loss():
            logits = m(x)  # handed to the loss as f(x0), as runtime/training.py does
            return ALPHA * F.cross_entropy(logits, y) + BETA * prop.loss(
                m, logic="dl2", search=pgd, generator=gen, x0=x, y=y, **outputs(logits))
        return loss

    return {"baseline": train_on(lambda: F.cross_entropy(m(x), y)),
            "augment-uniform": train_on(augment([RandomSampling(samples=1)] * 2)),
            "augment-fgsm": train_on(augment([FGSM(random_start=True)] * 2)),
            "adversarial": train_on(adversarial),
            "constraint-SR": train_on(constraint(pr["SR"])),
            "constraint-SCR": train_on(constraint(pr["SCR"])),
            "constraint-LR": train_on(constraint(pr["LR"]))}


def _makespan(hours: list[float], jobs: int) -> float:
    """Longest-first greedy assignment of cells to `jobs` processes: the last one's finish."""
    loads = [0.0] * jobs
    for h in sorted(hours, reverse=True):
        loads[loads.index(min(loads))] += h
    return max(loads)


def bench_grid(reps: int, steps: int = GRID["steps"]) -> dict:
    x, y = data()
    m = model()
    opt = adam(m.parameters(), LR)
    gen = torch.Generator().manual_seed(SEED + 4)
    fns = regime_steps(m, opt, props(), x, y, gen, steps)
    t = interleaved(fns, max(10, reps * 10 // steps))
    per_epoch = GRID["examples"] / BATCH
    cells = {}
    for k, v in t.items():
        hours = v["wall_ms"] / 1e3 * per_epoch * GRID["epochs"] / 3600
        cells[k] = {"step_ms": v["wall_ms"], "step_cpu_ms": v["cpu_ms"],
                    "examples_per_s": BATCH / v["wall_ms"] * 1e3, "hours": hours}
    hours = [c["hours"] for c in cells.values()]
    return {"cells": cells, "jobs_1_hours": sum(hours), "jobs_2_hours": _makespan(hours, 2),
            "jobs_2_lower_bound_hours": max(sum(hours) / 2, max(hours)), **GRID}


def bench_trainer_check(steps: int = GRID["steps"], batches: int = 20) -> dict:
    """The real Trainer.fit on synthetic data (SR constraint regime), for the rate it reports:
    checks that the mirrored step above is what training runs (SR holds at the initial weights,
    so no early stop happens there either)."""
    from robustspec.runtime.training import TrainConfig, Trainer

    x, y = data(BATCH * batches, SEED + 5)
    tr = Trainer(model(), TrainConfig(regime="constraint", epochs=1, search_steps=steps,
                                      step_size=STEP_SIZE), props()["SR"], progress=False)
    start = time.perf_counter()
    tr.fit(x, y)
    secs = time.perf_counter() - start
    return {"examples": len(x), "seconds": secs, "examples_per_s": len(x) / secs,
            "reported_examples_per_s": tr.history[-1]["examples_per_s"]}


# ---------------------------------------------------------------- the pieces changed
def bench_micro(reps: int) -> dict:
    """Each piece the speed work changed, old way against new way on the batch's shapes (thread
    CPU, median), and two that were tried and not adopted (weights' requires_grad off during
    the search; Adam's foreach and fused kernels)."""
    from robustspec.compiler.search import RealDomain, _keep_rows_

    g = torch.Generator().manual_seed(SEED)
    x0, y = data()
    lo, hi = (x0 - EPS).clamp(0, 1), (x0 + EPS).clamp(0, 1)
    dom = RealDomain(lo, hi, None, x0)
    x = dom.sample(g)
    grad = torch.randn(x.shape, generator=g)
    keep, other = x.clone(), torch.rand(x.shape, generator=g)
    better = torch.rand(BATCH, generator=g) > 0.5
    m = model().eval()
    frozen = copy.deepcopy(m)
    for p in frozen.parameters():
        p.requires_grad_(False)
    ones = torch.ones(BATCH)

    def input_grad(net, outputs):
        def run():
            xx = x.clone().requires_grad_(True)
            o = net(xx).abs().amax(1)
            if outputs:
                return torch.autograd.grad((o,), (xx,), (ones,))
            return torch.autograd.grad(o.sum(), [xx])
        return run

    pairs = {
        "PGD step (sign, step, clamp)": (lambda: dom.step(x, grad, STEP_SIZE),
                                         lambda: dom.step_(x.clone(), grad.clone(), STEP_SIZE)),
        "best points: torch.where, new tensor vs in place": (
            lambda: torch.where(better[:, None, None, None], other, keep),
            lambda: torch.where(better[:, None, None, None], other, keep, out=keep)),
        "best points in place: torch.where(out=) vs the rows kept copied (CPU), half the rows "
        "(alone: the allocation of index_select's copy can cost more than in the PGD loop)": (
            lambda: torch.where(better[:, None, None, None], other, keep, out=keep),
            lambda: _keep_rows_(keep, better, other)),
        "finite check of x0: per example vs sum first": (
            lambda: bool(torch.isfinite(x0.reshape(BATCH, -1)).all(1).all()),
            lambda: bool(torch.isfinite(x0.sum()))),
        "empty domain: any(lo > hi) vs min(hi - lo)": (
            lambda: (lo > hi).flatten(1).any(1),
            lambda: (hi - lo).flatten(1).nan_to_num(nan=0.0).amin(1) < 0),
        "gradient: grad(sum(obj)) vs grad(obj, ones)": (input_grad(m, False), input_grad(m, True)),
        "for scale, not a change: rand (the uniform start) vs one forward pass": (
            lambda: torch.rand(x.shape, generator=g), lambda: m(x0).detach()),
        "uniform start: torch.rand vs search.uniform (the SplitMix64 kernel, CPU)": (
            lambda: torch.rand(x.shape, generator=g),
            lambda: search.uniform(x.shape, x.dtype, x.device, g)),
        "not adopted: search pass, weights requires_grad on vs off": (input_grad(m, True),
                                                                   input_grad(frozen, True)),
    }
    pairs.update(in_the_step())
    fns = {f"{k} | {side}": f for k, (a, b) in pairs.items() for side, f in (("old", a), ("new", b))}
    t = interleaved(fns, reps * 10)
    out = {k: {"old_us": 1e3 * t[f"{k} | old"]["cpu_ms"], "new_us": 1e3 * t[f"{k} | new"]["cpu_ms"]}
           for k in pairs}
    # Adam: the optimiser step alone, and whether the weights stay bit-identical after 20 steps
    adam = {}
    for kind in ("for-loop (default)", "foreach", "fused"):
        net = model()
        opt = torch.optim.Adam(net.parameters(), lr=LR, **({"foreach": True} if kind == "foreach"
                                                           else {"fused": True} if kind == "fused" else {}))
        times = []
        for _ in range(max(20, reps)):
            opt.zero_grad()
            F.cross_entropy(net(x0), y).backward()
            start = time.thread_time()
            opt.step()
            times.append(time.thread_time() - start)
        adam[kind] = {"step_us": 1e6 * statistics.median(times[5:]),
                      "weights": [p.detach().clone() for p in net.parameters()]}
    ref = adam["for-loop (default)"]["weights"]
    out[ADAM_KEY] = {k: {"step_us": v["step_us"], "bit_identical": all(
        torch.equal(a, b) for a, b in zip(ref, v["weights"]))} for k, v in adam.items()}
    return out


def in_the_step() -> dict:
    """Two changes measured inside whole steps (old way, new way), where they run: the best
    points' update (torch.where(out=) vs the rows kept copied) in an SR step and the PGD
    attack, and norm_inf's gradient (torch's abs().amax() vs the fused Function) in an LR
    step, k = 50. Where this robustspec lacks a piece (a run of the old compiler), none."""
    from robustspec.compiler import lower, search as search_mod
    if not hasattr(lower, "_norm_inf") or not hasattr(search_mod, "_keep_rows_"):
        return {}
    new_keep, new_norm = search_mod._keep_rows_, lower._norm_inf

    def old_keep(dst, better, src):
        return torch.where(better.reshape((-1,) + (1,) * (dst.ndim - 1)), src, dst, out=dst)

    def with_keep(fn, keep):
        def run():
            search_mod._keep_rows_ = keep
            try:
                return fn()
            finally:
                search_mod._keep_rows_ = new_keep
        return run

    x, y = data()
    steps = {}
    for name in ("SR", "LR"):
        for side in ("old", "new"):
            torch.manual_seed(SEED)
            m = model()
            opt = torch.optim.Adam(m.parameters(), lr=LR)
            if side == "old" and name == "LR":  # compiled with torch's norm_inf
                lower._norm_inf = lambda v, d: v.abs().amax(d)
                try:  # the lowering compiles on the first call: one step on a copy
                    prop = props()[name]
                    spare = copy.deepcopy(m)
                    constraint_step(spare, torch.optim.Adam(spare.parameters(), lr=LR), prop, x,
                                    y, 1, torch.Generator().manual_seed(SEED + 1))()
                finally:
                    lower._norm_inf = new_norm
            else:
                prop = props()[name]
            steps[name, side] = constraint_step(m, opt, prop, x, y, 50,
                                                torch.Generator().manual_seed(SEED + 1))
    xa, _ = data()
    ma, ya = attack_model(xa, steps=100)
    cr = compile_spec(str(ROOT / "specs" / "classification_robustness.spec"))["cr"]
    pgd = PGD(steps=50, step_size=STEP_SIZE, early_stop=False)

    def attack():
        return cr.search(ma, x0=xa, y=ya, search=pgd, generator=torch.Generator().manual_seed(SEED))
    return {"in the step: best points, SR step k = 50": (with_keep(steps["SR", "new"], old_keep),
                                                         steps["SR", "new"]),
            "in the attack: best points, 50-step PGD": (with_keep(attack, old_keep), attack),
            "in the step: norm_inf's gradient, LR step k = 50": (steps["LR", "old"],
                                                                 steps["LR", "new"])}


# ---------------------------------------------------------------- profile
def breakdown(steps: int, reps: int = 15) -> dict:
    """Where one SR constraint-training step's CPU time goes: the network's matrix products
    (addmm, mm), full-size passes (ops whose result has >= 100k elements: the batch of
    inputs), small ops (everything else), and the rest (Python, dispatch). Each op is timed
    inside a dispatch mode (thread CPU); the rest is the step's median thread-CPU time
    without the mode minus the ops' time (noisy: timing inside the mode slows each op a
    little, so the ops can add up to a little more than the step)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Timer(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ns, self.n = Counter(), Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            start = time.thread_time_ns()
            out = func(*args, **(kwargs or {}))
            took = time.thread_time_ns() - start
            name = func.overloadpacket.__name__
            kind = "gemm" if name in ("addmm", "mm") else (
                "full-size" if isinstance(out, torch.Tensor) and out.numel() >= 100_000 else "small")
            self.ns[kind] += took
            self.n[kind] += 1
            return out

    x, y = data()
    m = model()
    opt = torch.optim.Adam(m.parameters(), lr=LR)
    step = constraint_step(m, opt, props()["SR"], x, y, steps, torch.Generator().manual_seed(1))
    for _ in range(3):
        step()
    timer = Timer()
    with timer:
        for _ in range(reps):
            step()
    plain = []
    for _ in range(reps):
        start = time.thread_time()
        step()
        plain.append(time.thread_time() - start)
    total = 1e3 * statistics.median(plain)
    parts = {k: {"ms": timer.ns[k] / reps / 1e6, "ops": timer.n[k] // reps}
             for k in ("gemm", "full-size", "small")}
    return {"k": steps, "step_cpu_ms": total, **parts,
            "rest_ms": total - sum(v["ms"] for v in parts.values())}


def profile() -> str:
    rows = [breakdown(k) for k in (10, 50)]
    return "\n".join(
        f"SR step, k = {r['k']}: {r['step_cpu_ms']:.1f} ms CPU = " + ", ".join(
            f"{k} {r[k]['ms']:.1f} ms ({r[k]['ops']} ops)" for k in ("gemm", "full-size", "small"))
        + f"; the ops add up to {100 * (r['step_cpu_ms'] - r['rest_ms']) / r['step_cpu_ms']:.0f}% "
          "of the step (the rest: Python and dispatch outside ops)" for r in rows), rows


# ---------------------------------------------------------------- report
def machine() -> dict:
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                     "compiler", "runtime"], capture_output=True, text=True).stdout)
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "nproc": os.cpu_count(),
            "load_average": os.getloadavg(), "commit": commit, "compiler_or_runtime_modified": dirty,
            "robustspec": str(Path(sys.modules["robustspec.compiler"].__file__).parents[1]),
            "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}


def tables(res: dict) -> str:
    out = []
    if "step" in res:
        out += ["(a) constraint-training step (CE + 0.2 * DL2 loss with k-step PGD, backward, Adam) "
                "vs (k + 2) bare forward-backward passes",
                "| property | k | step ms | floor ms | step / floor | step / median floor | "
                "CPU step / floor | ex/s | floor ex/s | net evals | without outputs=: step / floor "
                "| CPU | net evals |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["step"]:
            median = r.get("ratio_median_floor")  # absent in runs saved before it
            out.append(f"| {r['property']} | {r['k']} | {r['step_ms']:.1f} | {r['floor_ms']:.1f} | "
                       f"{r['ratio']:.2f} | {'-' if median is None else f'{median:.2f}'} | "
                       f"{r['ratio_cpu']:.2f} | {r['examples_per_s']:.0f} | "
                       f"{r['floor_examples_per_s']:.0f} | {r['network_evals']} | "
                       f"{r['old_ratio']:.2f} | {r['old_ratio_cpu']:.2f} | {r['old_network_evals']} |")
        out.append("")
    if "attack" in res:
        a = res["attack"]
        out += [f"(b) PGD attack, batch {a['batch']}, {a['steps']} steps of {a['step_size']}, eps "
                f"{a['eps']}, one uniform random start (clean accuracy of the attacked model "
                f"{100 * a['clean_accuracy']:.1f}%)",
                "| attack | ms per batch | images/s | vs torchattacks | net evals |",
                "|---|---:|---:|---:|---:|"]
        for k, ev in (("robustspec", a["network_evals_robustspec"]),
                      ("torchattacks", a["network_evals_torchattacks"]),
                      ("robustspec, early stop", None), ("attack()", None)):
            v = a[k]
            out.append(f"| {k} | {v['wall_ms']:.1f} | {v['images_per_s']:.0f} | "
                       f"{v['images_per_s'] / a['torchattacks']['images_per_s']:.2f} | "
                       f"{'' if ev is None else ev} |")
        out.append(f"CPU-time ratio (torchattacks / robustspec): {a['ratio_cpu']:.2f}; torch ops per "
                   f"step: robustspec {a['torch_ops_per_step']['robustspec']}, torchattacks "
                   f"{a['torch_ops_per_step']['torchattacks']}")
        out.append("misclassified after the attack (robustspec / torchattacks): " + ", ".join(
            f"eps {e:g}: {100 * v['robustspec']:.1f}% / {100 * v['torchattacks']:.1f}%"
            for e, v in a["misclassified_after_attack"].items()))
        out.append("")
    if "quantifier" in res:
        q = res["quantifier"]
        out += [f"(c) SR per class (forall j in classes) vs norm_inf, {q['steps']}-step PGD",
                "| what | norm_inf ms | per class ms | per class / norm_inf | CPU ratio |",
                "|---|---:|---:|---:|---:|"]
        for what in ("loss", "search"):
            out.append(f"| {what} | {q[f'sr_norm {what}']['wall_ms']:.2f} | "
                       f"{q[f'sr_per_class {what}']['wall_ms']:.2f} | {q[f'ratio_{what}']:.2f} | "
                       f"{q[f'ratio_{what}_cpu']:.2f} |")
        out.append("")
    if "grid" in res:
        g = res["grid"]
        out += [f"Grid projection: {g['regimes']} regimes x {g['epochs']} epochs x {g['examples']:,} "
                f"examples, {g['steps']}-step PGD, one thread per process",
                "| regime | step ms | ex/s | hours |", "|---|---:|---:|---:|"]
        for k, c in g["cells"].items():
            out.append(f"| {k} | {c['step_ms']:.1f} | {c['examples_per_s']:.0f} | {c['hours']:.2f} |")
        out.append(f"| all, --jobs 1 | | | {g['jobs_1_hours']:.2f} |")
        out.append(f"| all, --jobs 2 (longest first) | | | {g['jobs_2_hours']:.2f} |")
        if "evaluation_hours_jobs_1" in g:
            out.append(f"| + evaluation (3 attacks x 5 radii x 10,000 images x 7 networks), "
                       f"--jobs 1 / 2 | | | {g['evaluation_hours_jobs_1']:.2f} / "
                       f"{g['evaluation_hours_jobs_1'] / 2:.2f} |")
        out.append("")
    if "micro" in res:
        out += ["The pieces changed, old way vs new way (thread CPU, median)",
                "| piece | old us | new us |", "|---|---:|---:|"]
        for k, v in res["micro"].items():
            if "old_us" in v:
                out.append(f"| {k} | {v['old_us']:.1f} | {v['new_us']:.1f} |")
        for k, v in res["micro"][ADAM_KEY].items():
            out.append(f"| Adam step, {k} | | {v['step_us']:.0f} "
                       f"({'bit-identical' if v['bit_identical'] else 'NOT bit-identical'}) |")
        out.append("")
    if "trainer" in res:
        t = res["trainer"]
        out.append(f"Trainer.fit, SR constraint, {t['examples']} synthetic examples: "
                   f"{t['examples_per_s']:.0f} examples/s wall ({t['reported_examples_per_s']:.0f} reported)")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=40, help="repetitions per side at k = 10 "
                    "(scaled down for longer steps)")
    ap.add_argument("--only", default="step,attack,quantifier,grid,trainer,micro")
    ap.add_argument("--json", default=None, help="write every number here")
    ap.add_argument("--profile", action="store_true", help="also say where the SR step's time "
                    "goes (k = 10 and 50)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    parts = set(args.only.split(","))
    res: dict = {"machine": machine(), "settings": {"batch": BATCH, "step_size": STEP_SIZE,
                                                    "eps": EPS, "reps": args.reps, "seed": SEED}}
    if "step" in parts:
        res["step"] = bench_steps(args.reps)
    if "attack" in parts:
        res["attack"] = bench_attack(args.reps)
    if "quantifier" in parts:
        res["quantifier"] = bench_quantifier(args.reps)
    if "grid" in parts:
        res["grid"] = bench_grid(args.reps)
    if "trainer" in parts:
        res["trainer"] = bench_trainer_check()
    if "micro" in parts:
        res["micro"] = bench_micro(args.reps)
    if "grid" in res and "attack" in res:
        # evaluation of the 7 networks: SR, SCR and LR attacks (50-step PGD, no early stop: the
        # most work) at 5 radii > 0 on the 10,000 test images, at the attack rate measured above
        n = 7 * 3 * 5 * 10_000
        res["grid"]["evaluation_hours_jobs_1"] = n / res["attack"]["robustspec"]["images_per_s"] / 3600
    res["machine"]["load_average_end"] = os.getloadavg()
    m = res["machine"]
    print(f"{m['time_utc']} UTC, commit {m['commit']}{' (+ uncommitted compiler/runtime changes)' if m['compiler_or_runtime_modified'] else ''}, "
          f"torch {m['torch']}, {m['threads']} thread, load {m['load_average'][0]:.2f} -> "
          f"{m['load_average_end'][0]:.2f}")
    print(tables(res))
    if args.profile:
        text, res["profile"] = profile()
        print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
