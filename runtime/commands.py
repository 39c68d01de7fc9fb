"""The runtime's commands: train, evaluate, attack, data, demo.

Each is one `@command(name, help=..., arguments=...)` registration (runtime/options.py); the
choices come from the registries (regimes, models, datasets, adversaries) and train's defaults
from TrainConfig, so nothing here is a second list kept by hand.
"""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import fields
from pathlib import Path

from .options import (COMMANDS, UserError, add_data_options, add_logic_option, add_param_option,
                      command, count, load_property, parse_params, radii, radius, step)



def _classes(text: str):
    """--classes: 'all', a count N (classes 0..N-1), or ids separated by commas."""
    if text == "all":
        return None
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give 'all', a count, or ids like 1,2,13") from None
    return ids[0] if len(ids) == 1 and "," not in text else ids


def _data_options(args) -> dict:
    if args.dataset == "gtsrb":
        return {"size": args.size, "grayscale": not args.rgb, "classes": args.classes}
    return {}


def _load(dataset: str, split: str, args, options: dict):
    from .data import load_dataset

    return load_dataset(dataset, split, data_dir=args.data_dir, limit=args.limit,
                        verify=not args.no_verify, **options)


@contextlib.contextmanager
def _placed(args):
    """(device, ranks) of a command: --device resolved; with --ddp, torchrun's process group
    joined for the command and left after it."""
    from . import distributed

    ranks = distributed.env_ranks()
    device = distributed.resolve_device(args.device, ranks.local_rank)
    if not args.ddp:
        if ranks.distributed:
            raise UserError(f"this is one of {ranks.world} processes (torchrun's WORLD_SIZE) but "
                            "--ddp is not given: each would do the whole job and write the same "
                            "files; add --ddp, or run one process")
        yield device, distributed.SINGLE
        return
    ranks = distributed.start(device)
    try:
        yield device, ranks
    finally:
        distributed.stop()


def _speaker(ranks):
    """print on rank 0, which speaks for the run; nothing on the other ranks."""
    return print if ranks.is_main else (lambda *a, **k: None)


@command("train", help="train a network under a regime (the choices: train --help)",
         arguments=lambda p: _train_options(p))
def cmd_train(args: argparse.Namespace) -> int:
    with _placed(args) as (device, ranks):
        return _train(args, device, ranks)


def _train(args: argparse.Namespace, device, ranks) -> int:
    import torch

    from .models import build_model
    from .training import Trainer, TrainConfig, refuse_overwrite

    out = Path(args.out or f"runs/{args.dataset}-{args.regime}-seed{args.seed}")
    refuse_overwrite(out / "last.pt", args.resume, args.overwrite)  # before loading any data
    params = parse_params(args.param)
    if args.eps is not None:
        params["eps"] = args.eps
    prop = load_property(args.spec, args.property, params)
    if args.regime != "baseline" and prop is None:
        raise UserError(f"--regime {args.regime} needs a property: add --spec FILE --property NAME "
                        "(e.g. --spec specs/standard_robustness.spec --property sr)")
    options = _data_options(args)
    data = _load(args.dataset, "train", args, options)
    torch.manual_seed(args.seed)
    model = build_model(args.model, data.input_shape, data.num_classes)
    try:
        cfg = TrainConfig(regime=args.regime, epochs=args.epochs, batch_size=args.batch_size,
                          lr=args.lr, alpha=args.alpha, beta=args.beta, logic=args.logic,
                          search_steps=args.steps, step_size=args.step_size, adversary=args.adversary,
                          seed=args.seed, params=params)
    except ValueError as e:
        raise UserError(str(e)) from None
    info = {"name": args.model, "input_shape": list(data.input_shape), "classes": data.num_classes,
            "dataset": args.dataset, "data_options": options}
    trainer = Trainer(model, cfg, prop, out, info, progress=None, device=device, ranks=ranks)
    say = _speaker(ranks)
    say(f"training {args.model} on {len(data)} {args.dataset} images, regime {args.regime}"
        + (f" with {prop.name} from {prop.spec_name}" if prop else "") + f"; checkpoints in {out}"
        + f"; device {trainer.device}" + (f", {ranks.world} DDP ranks" if ranks.distributed else ""))
    trainer.fit(data.x, data.y, resume=args.resume, overwrite=args.overwrite,  # errors: exit 2
                on_epoch=lambda s: say(f"epoch {s.epoch}/{cfg.epochs}: loss {s.loss:.4f}, "
                                       f"accuracy {s.accuracy:.4f}, {s.examples_per_s:.0f} ex/s, "
                                       f"{s.seconds:.1f} s"))
    say(f"done: {trainer.checkpoint_path}")
    return 0


def _model_and_test_data(args):
    from .training import model_from_checkpoint

    model, _ckpt, info = model_from_checkpoint(args.checkpoint)
    dataset = info.get("dataset") or args.dataset
    if not dataset:
        raise UserError("the checkpoint does not name its dataset: pass --dataset")
    data = _load(dataset, "test", args, info.get("data_options") or {})
    return model, data


@command("evaluate", help="clean accuracy, constraint security and accuracy per eps",
         arguments=lambda p: _evaluate_options(p))
def cmd_evaluate(args: argparse.Namespace) -> int:
    with _placed(args) as (device, ranks):
        return _evaluate(args, device, ranks)


def _evaluate(args: argparse.Namespace, device, ranks) -> int:
    from .metrics import evaluate

    eps = radii(args.eps)  # every option is checked before anything is loaded
    prop = load_property(args.spec, args.property, parse_params(args.param))
    model, data = _model_and_test_data(args)
    result = evaluate(model, prop, data.x, data.y, eps=eps, steps=args.steps,
                      step_size=args.step_size, restarts=args.restarts, samples=args.samples,
                      batch_size=args.batch_size, logic=args.logic, seed=args.seed,
                      device=device, ranks=ranks, verify_limit=args.verify_limit,
                      verifier=args.verifier, verify_timeout=args.verify_timeout,
                      forward_rows=args.forward_rows)
    if not ranks.is_main:  # rank 0 holds the same counts and writes them
        return 0
    print(result.table())
    stem = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval-{prop.name}"
    j, c = result.save(stem)
    print(f"saved {j} and {c}")
    return 0


@command("attack", help="search counterexamples of a property; save them with a PNG grid",
         arguments=lambda p: _attack_command_options(p))
def cmd_attack(args: argparse.Namespace) -> int:
    with _placed(args) as (device, ranks):
        return _attack(args, device, ranks)


def _attack(args: argparse.Namespace, device, ranks) -> int:
    from .attack import attack

    prop = load_property(args.spec, args.property, parse_params(args.param))
    model, data = _model_and_test_data(args)
    result = attack(model, prop, data.x, data.y, eps=args.eps, steps=args.steps,
                    step_size=args.step_size, restarts=args.restarts, logic=args.logic, seed=args.seed,
                    device=device, ranks=ranks)
    if not ranks.is_main:  # rank 0 holds every point found and writes them
        return 0
    print(result.summary())
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"attack-{prop.name}"
    files = result.save(out, data.classes)
    print(f"saved {files['npz']} and {files['png']}")
    return 0


@command("data", help="get or locate datasets", arguments=lambda p: _data_command_options(p))
def cmd_data(args: argparse.Namespace) -> int:
    from .data import find_dataset_dir
    from .fetch import fetch

    if args.action == "fetch":
        path = fetch(args.name, data_dir=args.data_dir, base_url=args.mirror, verify=not args.no_verify)
        print(f"{args.name} is ready in {path}")
    else:
        print(find_dataset_dir(args.name, data_dir=args.data_dir))
    return 0


@command("demo", help="the README's main job: baseline vs SR-constraint training on "
         "Fashion-MNIST, SR and SCR attacks, table and plot", arguments=lambda p: _demo_options(p))
def cmd_demo(args: argparse.Namespace) -> int:
    from .experiment import DemoConfig, run_demo

    cfg = DemoConfig(data_dir=args.data_dir, out=args.out, train_limit=args.train_limit,
                     test_limit=args.test_limit, epochs=args.epochs, seed=args.seed)
    run_demo(cfg)
    return 0


# ------------------------------------------------------------------ options of each command

def _config_defaults() -> dict:
    """TrainConfig's field defaults: the one source of train's defaults."""
    from .training import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig) if f.default is not f.default_factory}


def _dataset_option(p, **kw) -> None:
    from .data import DATASET_LOADERS

    p.add_argument("--dataset", choices=list(DATASET_LOADERS), **kw)


def device_options(p) -> None:
    """--device and --ddp (runtime/distributed.py; docs/distributed.md)."""
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="where to run (default auto: a GPU where there is one, else the CPU; "
                        "under torchrun, auto and cuda mean cuda:LOCAL_RANK)")
    p.add_argument("--ddp", action="store_true",
                   help="data parallel over the processes torchrun starts: torchrun "
                        "--nproc_per_node N -m robustspec.runtime.cli COMMAND --ddp ...")


def _attack_options(p) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--spec", required=True, metavar="FILE")
    p.add_argument("--property", metavar="NAME")
    p.add_argument("--steps", type=count(0), default=50, help="PGD steps (default 50)")
    p.add_argument("--step-size", type=step, default=None, help="default 2.5 * radius / steps per "
                   "element, the radius being half the domain's width there (eps, or less where "
                   "[0, 1] clips)")
    p.add_argument("--restarts", type=count(1), default=1)
    add_logic_option(p)
    p.add_argument("--seed", type=int, default=0)
    _dataset_option(p, help="if the checkpoint lacks it")
    add_param_option(p)
    p.add_argument("--out", metavar="PATH")
    add_data_options(p)
    device_options(p)


def _train_options(t) -> None:
    from .models import MODEL_BUILDERS
    from .training import ADVERSARIES, TRAINING_REGIMES

    d = _config_defaults()
    _dataset_option(t, default="fashion-mnist")
    t.add_argument("--regime", required=True, choices=list(TRAINING_REGIMES),
                   help=TRAINING_REGIMES.help_text())
    t.add_argument("--spec", metavar="FILE")
    t.add_argument("--property", metavar="NAME")
    t.add_argument("--model", default="mlp", choices=list(MODEL_BUILDERS),
                   help=MODEL_BUILDERS.help_text())
    t.add_argument("--epochs", type=count(1), default=d["epochs"],
                   help=f"default {d['epochs']}")
    t.add_argument("--batch-size", type=count(1), default=d["batch_size"],
                   help=f"default {d['batch_size']}")
    t.add_argument("--lr", type=step, default=d["lr"], help=f"Adam's learning rate (default {d['lr']:g})")
    t.add_argument("--alpha", type=radius, default=d["alpha"],
                   help=f"weight of cross-entropy (constraint; default {d['alpha']:g})")
    t.add_argument("--beta", type=radius, default=d["beta"],
                   help=f"weight of the spec's loss (constraint; default {d['beta']:g})")
    t.add_argument("--logic", default=d["logic"], help="the logic of the constraint's loss "
                   f"(default {d['logic']}; see `robustspec explain --help`)")
    t.add_argument("--steps", type=count(0), default=d["search_steps"],
                   help=f"PGD steps of the inner search (default {d['search_steps']})")
    t.add_argument("--step-size", type=step, default=d["step_size"],
                   help=f"PGD step size (default {d['step_size']:g})")
    t.add_argument("--adversary", choices=list(ADVERSARIES), default=d["adversary"],
                   help="the adversarial regime's search")
    t.add_argument("--eps", type=radius, help="shorthand for --param eps=VALUE (>= 0)")
    add_param_option(t)
    t.add_argument("--seed", type=int, default=d["seed"])
    t.add_argument("--out", metavar="DIR", help="checkpoint folder (default runs/DATASET-REGIME-seedN)")
    what = t.add_mutually_exclusive_group()
    what.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    what.add_argument("--overwrite", action="store_true",
                      help="replace another run's checkpoint in --out (refused without it)")
    t.add_argument("--size", type=count(4), default=32, help="GTSRB image side")
    t.add_argument("--rgb", action="store_true", help="GTSRB in colour (default grayscale)")
    t.add_argument("--classes", type=_classes, default=10, metavar="N|all|IDS",
                   help="GTSRB classes: the first N (default 10, as in the paper), all 43, or "
                        "ids like 1,2,13 (remapped to 0..k-1)")
    add_data_options(t)
    device_options(t)


def _evaluate_options(e) -> None:
    from .verify import VERIFIERS

    _attack_options(e)
    e.add_argument("--eps", default="0,0.02,0.04,0.06,0.08,0.1", help="comma-separated, each >= 0")
    e.add_argument("--samples", type=count(0), default=100, help="uniform samples for constraint accuracy")
    e.add_argument("--batch-size", type=count(1), default=1000,
                   help="inputs per chunk, which the random starts and samples are laid out by "
                        "(default 1000)")
    e.add_argument("--forward-rows", type=count(1), default=None, metavar="N",
                   help="run the network on at most N rows at a time: the same numbers up to "
                        "rounding, faster for a convolutional network on the CPU (250 there)")
    e.add_argument("--verify-limit", type=count(0), default=0, metavar="N",
                   help="also constraint satisfaction: prove the property on the first N inputs "
                        "(attack, bounds, a complete solver; default 0: off)")
    e.add_argument("--verifier", choices=list(VERIFIERS), default="auto",
                   help="the verifier for --verify-limit (default auto: bounds, then MILP)")
    e.add_argument("--verify-timeout", type=step, default=30.0, metavar="S",
                   help="seconds per input for --verify-limit (default 30)")


def _attack_command_options(a) -> None:
    _attack_options(a)
    a.add_argument("--eps", type=radius, default=None, help="override the spec's eps (>= 0)")


def _data_command_options(d) -> None:
    from .data import DATASET_LOADERS

    d.add_argument("action", choices=["fetch", "where"])
    d.add_argument("name", choices=list(DATASET_LOADERS))
    d.add_argument("--data-dir", metavar="DIR")
    d.add_argument("--mirror", metavar="URL", help="base URL of a mirror of the official files")
    d.add_argument("--no-verify", action="store_true", help="skip checksum verification")


def _demo_options(m) -> None:
    m.add_argument("--data-dir", metavar="DIR")
    m.add_argument("--out", default="runs/demo")
    m.add_argument("--epochs", type=count(1), default=8)
    m.add_argument("--train-limit", type=count(1), default=None)
    m.add_argument("--test-limit", type=count(1), default=1000)
    m.add_argument("--seed", type=int, default=0)


__all__ = ["COMMANDS"]
