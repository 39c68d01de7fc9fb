"""CUDA against the CPU: the compiled SR, SCR and LR losses agree to 1e-5; constraint training
at batch 128 and 1024 and the PGD evaluation of 10,000 images, timed on both.

    .venv/bin/python bench/bench_cuda.py [--device cuda:0] [--n-train 8192] [--json F]

It needs a machine with a GPU and a CUDA build of torch; without one it says so and exits 2.
`--cpu-dry-run` runs every step with the CPU standing in for the GPU on small sizes: a check
that the script itself works (its numbers compare the CPU with itself and time nothing useful).

1. Agreement. The paper's PaperMLP(784) with the same weights on both devices, 256 images,
   TF32 off, parameters under which the untrained network violates each property (SR delta
   0.01, SCR's defaults, LR L 0.1). For each property: the per-example loss (DL2) at the same
   4 candidate points per example (drawn on the CPU, in the eps-ball), and the gradient of its
   mean with respect to the weights: PASS when |cuda - cpu| <= 1e-5 * (1 + |cpu|) everywhere.
   Then the loss after a 10-step PGD search whose random starts are drawn on the CPU generator
   on both devices (robustspec's runtime does this): reported, not judged, since one sign flip
   of a near-zero gradient element can move a PGD path.
2. Training. `Trainer` with the SR constraint regime (50 PGD steps of 0.01, Adam lr 1e-3) on
   --n-train images at batch 128 and 1024: examples/s of the second epoch (the first warms up).
3. Evaluation. `evaluate(model, sr, x, y, eps=[0.1], steps=50, samples=0)` on 10,000 images
   (Fashion-MNIST's test set where present, else noise): seconds and images/s.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/work/shared/data/fashion-mnist")
PROPS = {"SR": ("standard_robustness.spec", "sr"),
         "SCR": ("strong_classification_robustness.spec", "scr"),
         "LR": ("lipschitz_robustness.spec", "lr")}
TOL = 1e-5
# parameters under which the untrained network violates each property, so the compared losses
# and gradients are not all zero
PARAMS = {"SR": {"delta": 0.01}, "SCR": {}, "LR": {"L": 0.1}}


def images(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    stem = "t10k" if split == "test" else "train"
    imgs, labs = FMNIST / f"{stem}-images-idx3-ubyte.gz", FMNIST / f"{stem}-labels-idx1-ubyte.gz"
    if imgs.exists() and labs.exists():
        with gzip.open(imgs, "rb") as f:
            raw = f.read(16 + n * 784)
        with gzip.open(labs, "rb") as f:
            lab = f.read(8 + n)
        y = torch.from_numpy(np.frombuffer(lab[8:], dtype=np.uint8).copy()).long()
        if len(y) == n:
            x = torch.from_numpy(np.frombuffer(raw[16:], dtype=np.uint8).copy()).float() / 255
            return x.reshape(n, 1, 28, 28), y, f"Fashion-MNIST {split}"
    g = torch.Generator().manual_seed(1)
    return (torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g),
            "uniform noise")


def fresh_model():
    from robustspec.runtime.models import PaperMLP

    torch.manual_seed(0)
    return PaperMLP(784)


def agreement(device: torch.device, props: dict) -> tuple[list[dict], bool]:
    from robustspec.compiler import PGD
    from robustspec.runtime.distributed import ShardedSearch
    from robustspec.runtime.training import property_args

    x, y, _ = images("test", 256)
    g = torch.Generator().manual_seed(2)
    eps = 0.1
    cand = (x.unsqueeze(1) + eps * (2 * torch.rand((256, 4) + x.shape[1:], generator=g) - 1))
    cand = cand.clamp(0, 1)
    rows, ok = [], True
    for label, prop in props.items():
        out = {}
        for key, dev in (("cpu", torch.device("cpu")), ("dev", device)):
            model = fresh_model().to(dev)
            args = property_args(prop, x.to(dev), y.to(dev))
            loss = prop.loss(model, search="points", points=cand.to(dev), reduction="none",
                             params=PARAMS[label], **args)
            grads = torch.autograd.grad(loss.mean(), list(model.parameters()))
            gen = torch.Generator().manual_seed(3)
            pgd = prop.loss(model, search=ShardedSearch(PGD(steps=10, step_size=0.01)),
                            generator=gen, reduction="none", params=PARAMS[label], **args).detach()
            out[key] = (
                loss.detach().cpu(), [t.cpu() for t in grads], pgd.cpu())
        (lc, gc, pc), (ld, gd, pd) = out["cpu"], out["dev"]

        def worst(a, b):
            return float(((a - b).abs() / (1 + b.abs())).max())
        loss_err = worst(ld, lc)
        grad_err = max(worst(a, b) for a, b in zip(gd, gc))
        passed = loss_err <= TOL and grad_err <= TOL
        ok &= passed
        rows.append({"property": label, "params": PARAMS[label], "loss_mean_cpu": float(lc.mean()),
                     "loss_rel_err": loss_err, "grad_rel_err": grad_err,
                     "pgd_loss_max_abs_diff": float((pd - pc).abs().max()),
                     "pgd_loss_mean_cpu": float(pc.mean()), "pass": passed})
    return rows, ok


def training_rate(device: torch.device, prop, n: int, batch: int) -> float:
    from robustspec.runtime.training import TrainConfig, Trainer

    x, y, _ = images("train", n)
    cfg = TrainConfig(regime="constraint", epochs=2, batch_size=batch, lr=1e-3, search_steps=50,
                      step_size=0.01, seed=0)
    history = Trainer(fresh_model(), cfg, prop, progress=False, device=device).fit(x, y)
    return history[-1]["examples_per_s"]


def evaluation_time(device: torch.device, prop, n: int) -> tuple[float, str]:
    from robustspec.runtime.metrics import evaluate

    x, y, what = images("test", n)
    model = fresh_model()
    start = time.perf_counter()
    evaluate(model, prop, x, y, eps=[0.1], steps=50, samples=0, device=device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, what


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="the GPU to test (default cuda)")
    ap.add_argument("--n-train", type=int, default=8192)
    ap.add_argument("--n-eval", type=int, default=10000)
    ap.add_argument("--no-cpu-timing", action="store_true", help="time the GPU only")
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="no GPU: run every step on the CPU, small sizes (checks the script only)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from robustspec.compiler import compile_spec
    from robustspec.dsl.errors import InputError
    from robustspec.runtime.distributed import resolve_device

    if args.cpu_dry_run:
        device = torch.device("cpu")
        args.n_train, args.n_eval = min(args.n_train, 1024), min(args.n_eval, 1000)
        print("DRY RUN on the CPU: checks that this script works; no GPU is measured")
    else:
        try:
            device = resolve_device(args.device)
        except InputError as e:
            print(f"bench_cuda.py needs a GPU: {e}", file=sys.stderr)
            return 2
        if device.type != "cuda":
            print(f"bench_cuda.py needs a CUDA device, got {device}", file=sys.stderr)
            return 2
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA "
              f"{torch.version.cuda}")
    props = {k: compile_spec(ROOT / "specs" / f)[p] for k, (f, p) in PROPS.items()}
    results: dict = {"device": str(device), "dry_run": args.cpu_dry_run}

    rows, ok = agreement(device, props)
    results["agreement"] = rows
    print(f"\n1. agreement with the CPU (tolerance {TOL:g}, relative to 1 + |cpu|)")
    print("| property | params | mean loss (cpu) | loss at fixed points | weight gradient | "
          "after 10-step PGD (max abs) | |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['property']} | {r['params'] or 'defaults'} | {r['loss_mean_cpu']:.4g} | "
              f"{r['loss_rel_err']:.1e} | {r['grad_rel_err']:.1e} | "
              f"{r['pgd_loss_max_abs_diff']:.1e} | {'PASS' if r['pass'] else 'FAIL'} |")

    devices = [device] + ([] if args.no_cpu_timing or device.type == "cpu"
                          else [torch.device("cpu")])
    print(f"\n2. SR constraint training, 50 PGD steps, {args.n_train} images: examples/s")
    results["training"] = {}
    for dev in devices:
        for batch in (128, 1024):
            rate = training_rate(dev, props["SR"], args.n_train, batch)
            results["training"][f"{dev}/{batch}"] = rate
            print(f"  {str(dev):8s} batch {batch:5d}: {rate:8.0f} examples/s", flush=True)

    print(f"\n3. PGD evaluation (SR, eps 0.1, 50 steps) of {args.n_eval} images")
    results["evaluation"] = {}
    for dev in devices:
        secs, what = evaluation_time(dev, props["SR"], args.n_eval)
        results["evaluation"][str(dev)] = secs
        print(f"  {str(dev):8s}: {secs:7.2f} s, {args.n_eval / secs:8.0f} images/s ({what})",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
