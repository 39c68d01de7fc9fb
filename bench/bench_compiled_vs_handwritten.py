"""Compiled robustspec losses vs the same loss written by hand in batched PyTorch.

For SR, SCR and LR (the paper's defaults: eps 0.1, delta 10, eta 0.52, L 10) this times one
training-loss evaluation -- a 10-step PGD search for the worst point of each example, then the
DL2 loss at the points found, forward and `loss.backward()` w.r.t. the weights -- on a batch of
128 through the paper's 784-100-10 MLP, once through `compile_spec(...)[name].loss(...)` and once
through a hand-written function doing exactly the same work (same domain, same random start
from the same generator, same objective and tie-break, same best-point rule, same number of
network evaluations). The two are first checked to give the same loss and the same weight
gradients, then timed interleaved (A B A B ...) on one thread.

    .venv/bin/python bench/bench_compiled_vs_handwritten.py [--reps N] [--markdown] [--profile]
"""
from __future__ import annotations

import argparse
import copy
import cProfile
import gzip
import io
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robustspec.compiler import PGD, compile_spec
from robustspec.compiler.search import uniform

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/work/shared/data/fashion-mnist")
BATCH, STEPS, STEP_SIZE, XI, SEED = 128, 10, 0.01, 1.0, 0
TARGET = 1.15
CHECK_SCALE = 6.0  # the second equality check runs on the model with weights x6

# name -> (spec file, property name, parameters as in the spec's defaults)
PROPS = {
    "SR": ("standard_robustness.spec", "sr", {"eps": 0.1, "delta": 10.0}),
    "SCR": ("strong_classification_robustness.spec", "scr", {"eps": 0.1, "eta": 0.52}),
    "LR": ("lipschitz_robustness.spec", "lr", {"eps": 0.1, "L": 10.0}),
    # SR with its output bound written per class, `forall j in classes . abs(f(x)[j] - f(x0)[j])
    # <= delta` (bench_training_speed.py's spec): the finite quantifier against the same DL2
    # loss written as tensor reductions over the class axis (a sum, and the search's product)
    "SR per class": (None, "sr_per_class", {"eps": 0.1, "delta": 10.0}),
}


# ---------------------------------------------------------------- data and model
def paper_mlp() -> nn.Module:
    """Flatten -> Linear(784, 100) -> ReLU -> Linear(100, 10) -> clamp(-100, 100)."""
    class Clamp(nn.Module):
        def forward(self, v):
            return v.clamp(-100.0, 100.0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10), Clamp())


def _idx(path: Path, offset: int, count: int, item: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read(offset + count * item)
    return np.frombuffer(raw, dtype=np.uint8, offset=offset, count=count * item)


def load_batch(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first n Fashion-MNIST test images in [0, 1] ([n, 1, 28, 28]), else uniform noise."""
    images, labels = FMNIST / "t10k-images-idx3-ubyte.gz", FMNIST / "t10k-labels-idx1-ubyte.gz"
    try:
        x = _idx(images, 16, n, 784).reshape(n, 1, 28, 28).astype(np.float32) / 255.0
        y = _idx(labels, 8, n, 1).astype(np.int64)
        return torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), \
            f"first {n} Fashion-MNIST test images"
    except (OSError, ValueError, EOFError):
        g = torch.Generator().manual_seed(SEED)
        return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), \
            f"{n} uniform random images (Fashion-MNIST not found)"


# ---------------------------------------------------------------- hand-written losses
# Per property: (objective, tie) = DL2 loss of the negated body and of the body, per example,
# for the search; body = DL2 loss of the body for training. fx = f(x), fx0 = f(x0).
def sr_terms(fx, fx0, x, x0, y, p):
    n = (fx - fx0).abs().amax(1)
    delta = p["delta"]
    return torch.relu(delta - n) + XI * (n == delta).to(n.dtype), torch.relu(n - delta)


def lr_terms(fx, fx0, x, x0, y, p):
    n = (fx - fx0).abs().amax(1)
    bound = p["L"] * (x - x0).abs().flatten(1).amax(1)
    return torch.relu(bound - n) + XI * (n == bound).to(n.dtype), torch.relu(n - bound)


def scr_terms(fx, fx0, x, x0, y, p):
    s = torch.softmax(fx, -1).gather(1, y[:, None]).squeeze(1)
    eta = p["eta"]
    return torch.relu(s - eta) + XI * (s == eta).to(s.dtype), torch.relu(eta - s)


def sr_per_class_terms(fx, fx0, x, x0, y, p):
    # the negated body `exists j . |d_j| > delta` is DL2's product over j of the strict atom;
    # the body `forall j . |d_j| <= delta` its sum over j of the atom
    d = (fx - fx0).abs()
    delta = p["delta"]
    return (torch.relu(delta - d) + XI * (d == delta).to(d.dtype)).prod(1), \
        torch.relu(d - delta).sum(1)


TERMS = {"SR": (sr_terms, True), "LR": (lr_terms, True), "SCR": (scr_terms, False),
         "SR per class": (sr_per_class_terms, True)}


def handwritten_loss(name: str, model: nn.Module, x0: torch.Tensor, y: torch.Tensor,
                     gen: torch.Generator, reduction: str = "mean") -> torch.Tensor:
    terms, uses_fx0 = TERMS[name]
    p = PROPS[name][2]
    eps = p["eps"]
    was_training = model.training
    model.eval()
    try:
        lo = (x0 - eps).clamp(0.0, 1.0)
        hi = (x0 + eps).clamp(0.0, 1.0)
        # uniform start; addcmul (lo + width * u in one rounding) as RealDomain.sample does,
        # from the searches' uniform numbers (SplitMix64: compiler/search.py's uniform)
        x = torch.addcmul(lo, hi - lo, uniform(x0.shape, x0.dtype, x0.device, gen))
        with torch.no_grad():
            fx0 = model(x0) if uses_fx0 else None
        best_x = best_obj = best_tie = None
        for i in range(STEPS + 1):
            last = i == STEPS
            with torch.set_grad_enabled(not last):
                if not last:
                    x.requires_grad_(True)
                obj, tie = terms(model(x), fx0, x, x0, y, p)
                g = None if last else torch.autograd.grad(obj.sum(), x)[0]
            x, obj, tie = x.detach(), obj.detach(), tie.detach()
            if best_x is None:
                best_x, best_obj, best_tie = x, obj, tie
            else:
                better = (obj < best_obj) | ((obj == best_obj) & (tie > best_tie))
                best_obj = torch.where(better, obj, best_obj)
                best_tie = torch.where(better, tie, best_tie)
                best_x = torch.where(better[:, None, None, None], x, best_x)
            if not last:
                x = torch.clamp(x - STEP_SIZE * g.sign(), lo, hi)
    finally:
        model.train(was_training)
    fx0 = model(x0) if uses_fx0 else None
    per_example = terms(model(best_x), fx0, best_x, x0, y, p)[1]
    return per_example.mean() if reduction == "mean" else per_example


# ---------------------------------------------------------------- compiled losses
def compiled_props() -> dict:
    out = {}
    for name, (spec, prop, params) in PROPS.items():
        if spec is None:  # the per-class SR: its spec as the training-speed bench has it
            sys.path.insert(0, str(ROOT / "bench"))
            from bench_training_speed import PER_CLASS_SPEC
            out[name] = compile_spec(PER_CLASS_SPEC, filename="<per-class SR>")[prop]
        else:
            out[name] = compile_spec(str(ROOT / "specs" / spec))[prop]
        assert out[name].params == params, (name, out[name].params, params)
    return out


SEARCH = PGD(steps=STEPS, step_size=STEP_SIZE, restarts=1, early_stop=False)


def compiled_loss(prop, model, x0, y, gen, reduction="mean"):
    return prop.loss(model, x0=x0, y=y, logic="dl2", search=SEARCH, generator=gen,
                     reduction=reduction)


# ---------------------------------------------------------------- check and timing
def one_step(fn, model, x0, y) -> tuple[float, torch.Tensor]:
    """One timed loss evaluation + backward; the generator and zeroed grads are set up untimed."""
    gen = torch.Generator().manual_seed(SEED)
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    loss = fn(model, x0, y, gen)
    loss.backward()
    return time.perf_counter() - t0, loss.detach()


def check(comp, hand, model, x0, y) -> dict:
    """Same loss per example, same weight gradients, same number of network evaluations?"""
    # one untimed call first: a spec that quantifies over `classes` of an undeclared output
    # size runs the network once, on its first call, to learn that size
    fn_warm = comp(model, x0, y, torch.Generator().manual_seed(SEED))
    del fn_warm
    calls = [0]
    hook = model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    out = {}
    try:
        for label, fn in (("compiled", comp), ("hand", hand)):
            calls[0] = 0
            gen = torch.Generator().manual_seed(SEED)
            model.zero_grad(set_to_none=True)
            per_example = fn(model, x0, y, gen, reduction="none")
            per_example.mean().backward()
            grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                     for p in model.parameters()]
            out[label] = (per_example.detach(), grads, calls[0])
    finally:
        hook.remove()
        model.zero_grad(set_to_none=True)
    (lc, gc, nc), (lh, gh, nh) = out["compiled"], out["hand"]
    ok = torch.allclose(lc, lh) and torch.allclose(lc.mean(), lh.mean()) \
        and all(torch.allclose(a, b) for a, b in zip(gc, gh)) and nc == nh
    return {"ok": ok, "loss_c": lc.mean().item(), "loss_h": lh.mean().item(),
            "diff": (lc - lh).abs().max().item(), "violated": (lh > 0).float().mean().item(),
            "gdiff": max((a - b).abs().max().item() for a, b in zip(gc, gh)),
            "evals_c": nc, "evals_h": nh}


def scaled(model: nn.Module, factor: float) -> nn.Module:
    """A copy with every weight and bias times `factor` (so SR and LR get violated too)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(factor)
    return m


def quartiles(ts: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(ts, n=4, method="inclusive")
    return q[0] * 1e3, statistics.median(ts) * 1e3, q[2] * 1e3


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, nproc={os.cpu_count()}, torch {torch.__version__}, "
            f"Python {platform.python_version()}, {torch.get_num_threads()} thread")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=60, help="timed repetitions of each (default 60)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed repetitions of each first")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile the compiled loss of each property (top functions)")
    ap.add_argument("--only", choices=list(PROPS), nargs="*", help="properties to run")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    load0 = os.getloadavg()[0]
    model = paper_mlp().train()
    x0, y, data = load_batch(BATCH)
    props = compiled_props()
    names = args.only or list(PROPS)

    rows = []
    all_ok = True
    for name in names:
        prop = props[name]

        def comp(m, x, t, g, reduction="mean", prop=prop):
            return compiled_loss(prop, m, x, t, g, reduction)

        def hand(m, x, t, g, reduction="mean", name=name):
            return handwritten_loss(name, m, x, t, g, reduction)

        stressed = scaled(model, CHECK_SCALE)
        for label, m in (("random init", model), (f"weights x{CHECK_SCALE:g}", stressed)):
            r = check(comp, hand, m, x0, y)
            if m is model:  # network evaluations per loss, reported for the timed model
                evals = r["evals_c"]
            all_ok &= r["ok"]
            print(f"check {name} ({label}): loss compiled {r['loss_c']:.6g} / hand-written "
                  f"{r['loss_h']:.6g}, violated {r['violated']:.0%} of examples, max |per-example "
                  f"diff| {r['diff']:.2g}, max |weight-grad diff| {r['gdiff']:.2g}, network "
                  f"evaluations {r['evals_c']} / {r['evals_h']} -> "
                  f"{'allclose OK' if r['ok'] else 'MISMATCH'}", flush=True)
        for _ in range(args.warmup):
            one_step(comp, model, x0, y)
            one_step(hand, model, x0, y)
        tc, th = [], []
        for _ in range(args.reps):
            tc.append(one_step(comp, model, x0, y)[0])
            th.append(one_step(hand, model, x0, y)[0])
        qc, qh = quartiles(tc), quartiles(th)
        ratio = qc[1] / qh[1]
        # the ratio's spread from pairing rep i of each (they ran back to back)
        pr = sorted(a / b for a, b in zip(tc, th))
        rq = statistics.quantiles(pr, n=4, method="inclusive")
        rows.append((name, qc, qh, ratio, rq, min(tc) / min(th), evals))
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(10):
                one_step(comp, model, x0, y)
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18)
            print(f"--- cProfile of 10 compiled {name} losses (sorted by own time)\n{s.getvalue()}",
                  file=sys.stderr)

    header = ("property", "compiled ms median [IQR]", "hand-written ms median [IQR]",
              "ratio of medians", "paired ratio IQR", "ratio of minima", "net evals",
              f"median ratio <= {TARGET}")
    fmt = [(n, f"{c[1]:.2f} [{c[0]:.2f}, {c[2]:.2f}]", f"{h[1]:.2f} [{h[0]:.2f}, {h[2]:.2f}]",
            f"{r:.3f}", f"[{rq[0]:.3f}, {rq[2]:.3f}]", f"{rmin:.3f}", str(e),
            "yes" if r <= TARGET else "NO")
           for n, c, h, r, rq, rmin, e in rows]
    print(f"# {machine()}; batch {BATCH}, PGD {STEPS} steps of {STEP_SIZE}, {data}, "
          f"{args.reps} interleaved reps after {args.warmup} warm-up; load average "
          f"{load0:.2f} before, {os.getloadavg()[0]:.2f} after")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for r in fmt:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in fmt)) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for r in fmt:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    busy = max(load0, os.getloadavg()[0])
    if busy > 1.5:
        print(f"# note: load average {busy:.2f} on {os.cpu_count()} CPUs -- other processes shared "
              "the machine; the interleaving keeps the ratio fair, but expect wider IQRs")
    if not all_ok:
        print("numerical check FAILED: the timings compare different computations", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
