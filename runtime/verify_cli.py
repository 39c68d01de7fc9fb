"""`robustspec verify` and `robustspec export`: constraint satisfaction from the command line,
and the VNN-COMP benchmark layout for other verifiers.

    robustspec verify CHECKPOINT --spec F --property P --eps 0.01,0.05,0.1 [--limit 100]
                      [--timeout 30] [--verifier auto|bounds|marabou|milp] [--out DIR]
    robustspec export CHECKPOINT --spec F --property P --eps E [--index 0:100]
                      --format vnnlib1|vnnlib2 --out DIR

Both are registered in the CLI's command registry (runtime/options.py) below.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from robustspec.dsl.errors import InputError

from .options import (add_data_options, add_param_option, command, count, load_property,
                      parse_params, radii)


def _index(text: str | None, size: int) -> list[int]:
    if text is None:
        return list(range(size))
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            start, end = int(a or 0), (int(b) if b else size)
            idx = None
        else:
            idx = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--index takes START:END or ids like 0,5,9; got {text!r}") from None
    if idx is None:
        if end > size:
            raise InputError(f"--index {text!r} ends at {end}, but the test set has {size} "
                             f"examples (0..{size - 1})")
        idx = list(range(start, end))
    bad = [i for i in idx if not 0 <= i < size]
    if bad or not idx:
        raise InputError(f"--index {text!r} selects {'nothing' if not idx else f'{bad[0]}'}; the "
                         f"test set has {size} examples (0..{size - 1})")
    return idx


def _model_and_data(args, limit: int | None):
    from .data import load_dataset
    from .training import model_from_checkpoint

    model, _ckpt, info = model_from_checkpoint(args.checkpoint)
    dataset = info.get("dataset") or args.dataset
    if not dataset:
        raise InputError("the checkpoint does not name its dataset: pass --dataset")
    data = load_dataset(dataset, "test", data_dir=args.data_dir, limit=limit,
                        verify=not args.no_verify, **(info.get("data_options") or {}))
    return model, data


def cmd_verify(args: argparse.Namespace) -> int:
    import torch

    from .verify import save, table, verify

    torch.set_num_threads(max(1, args.threads))
    params = parse_params(args.param)
    prop = load_property(args.spec, args.property)
    eps_values = radii(args.eps)
    model, data = _model_and_data(args, args.limit)
    results = []
    for eps in eps_values:
        r = verify(model, prop, data.x, data.y, eps=eps, verifier=args.verifier,
                   timeout=args.timeout, limit=args.limit, progress=not args.quiet, params=params,
                   bounds=args.bounds, attack_steps=args.steps, seed=args.seed, jobs=args.jobs,
                   device=args.device)
        results.append(r)
        for note in r.notes:
            print(f"note (eps {eps:g}): {note}")
    print(f"{prop.name}: {len(results[0].verdicts)} points, verifier {results[0].verifier}, "
          f"timeout {args.timeout:g} s per point")
    print(table(results))
    stem = Path(args.out) / f"verify-{prop.name}" if args.out else \
        Path(args.checkpoint).parent / f"verify-{prop.name}"
    files = save(results, stem)
    print(f"saved {files['json']}, {files['csv']} and {files['counterexamples']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    params = parse_params(args.param)
    prop = load_property(args.spec, args.property)
    eps = radii(args.eps)
    if len(eps) != 1:
        raise InputError("export takes one --eps value (run it once per eps)")
    model, data = _model_and_data(args, args.limit)
    idx = _index(args.index, len(data.y))
    out = export(model, prop, data.x[idx], data.y[idx], args.out, fmt=args.format, eps=eps[0],
                 params=params, timeout=args.timeout, indices=idx)
    print(f"wrote {out['onnx']}, {len(out['vnnlib'])} VNN-LIB files and {out['instances']}")
    return 0


def _common(p: argparse.ArgumentParser, limit_help: str) -> None:
    from .data import DATASETS

    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--spec", required=True, metavar="FILE")
    p.add_argument("--property", metavar="NAME")
    add_param_option(p)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per point (default 30)")
    p.add_argument("--dataset", choices=list(DATASETS), help="if the checkpoint lacks it")
    add_data_options(p, limit_help)


def verify_arguments(p: argparse.ArgumentParser) -> None:
    from .verify import VERIFIERS

    _common(p, "the first N test points")
    p.add_argument("--eps", default="0.01,0.05,0.1", help="comma-separated (default 0.01,0.05,0.1)")
    p.add_argument("--verifier", choices=list(VERIFIERS), default="auto",
                   help="auto (bounds, then MILP), bounds (no complete solver), milp, marabou")
    p.add_argument("--bounds", choices=["crown", "interval"], default="crown")
    p.add_argument("--steps", type=int, default=50, help="PGD steps of the attack stage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--jobs", type=count(1), default=max(1, os.cpu_count() or 1), metavar="N",
                   help="points given to the complete solver at once (default: the cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", metavar="DIR", help="results folder (default: the checkpoint's)")
    p.add_argument("--device", default=None, metavar="auto|cpu|cuda|cuda:N",
                   help="where the attack stage runs (bounds and solvers always on the CPU)")


def export_arguments(p: argparse.ArgumentParser) -> None:
    from .export import FORMATS

    _common(p, "load only the first N test points (then --index picks among them)")
    p.add_argument("--eps", required=True, help="the eps of the exported queries")
    p.add_argument("--index", metavar="START:END|IDS", help="test points (default all)")
    p.add_argument("--format", choices=list(FORMATS), default="vnnlib1")
    p.add_argument("--out", required=True, metavar="DIR")


command("verify", help="constraint satisfaction: attack, bound propagation, then a complete "
        "solver, per point", arguments=verify_arguments)(cmd_verify)
command("export", help="the network as ONNX and one VNN-LIB file per point (VNN-COMP layout)",
        arguments=export_arguments)(cmd_export)
