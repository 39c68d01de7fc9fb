"""The runtime's commands: train, evaluate, attack, data, demo (registered into cli.py)."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from .cli import COMMANDS, UserError, _params, command, count


def _floats(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise UserError(f"--eps takes numbers >= 0 separated by commas, e.g. 0,0.05,0.1; "
                        f"got {text!r}")
    return values


def _load_property(spec: str | None, name: str | None, params: dict):
    from robustspec.compiler import compile_spec

    if spec is None:
        return None
    compiled = compile_spec(spec, params or None)
    if name is None:
        if len(compiled) != 1:
            raise UserError(f"{spec} has several properties ({', '.join(compiled.properties)}): "
                            "choose one with --property NAME")
        name = next(iter(compiled.properties))
    try:
        return compiled[name]
    except KeyError as e:
        raise UserError(e.args[0]) from None


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


@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .models import build_model
    from .training import Trainer, TrainConfig

    params = _params(args.param)
    if args.eps is not None:
        params["eps"] = args.eps
    prop = _load_property(args.spec, args.property, params)
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
    out = Path(args.out or f"runs/{args.dataset}-{args.regime}-seed{args.seed}")
    trainer = Trainer(model, cfg, prop, out, info, progress=None)
    print(f"training {args.model} on {len(data)} {args.dataset} images, regime {args.regime}"
          + (f" with {prop.name} from {prop.spec_name}" if prop else "") + f"; checkpoints in {out}")
    trainer.fit(data.x, data.y, resume=args.resume,  # TrainingError: cli.main prints it, exit 2
                on_epoch=lambda s: print(f"epoch {s.epoch}/{cfg.epochs}: loss {s.loss:.4f}, "
                                         f"accuracy {s.accuracy:.4f}, {s.examples_per_s:.0f} ex/s, "
                                         f"{s.seconds:.1f} s"))
    print(f"done: {trainer.checkpoint_path}")
    return 0


def _model_and_test_data(args):
    from .training import model_from_checkpoint

    model, _ckpt, info = model_from_checkpoint(args.checkpoint)
    dataset = info.get("dataset") or args.dataset
    if not dataset:
        raise UserError("the checkpoint does not name its dataset: pass --dataset")
    data = _load(dataset, "test", args, info.get("data_options") or {})
    return model, data


@command("evaluate")
def cmd_evaluate(args: argparse.Namespace) -> int:
    from .metrics import evaluate

    prop = _load_property(args.spec, args.property, _params(args.param))
    model, data = _model_and_test_data(args)
    eps = _floats(args.eps)
    result = evaluate(model, prop, data.x, data.y, eps=eps, steps=args.steps,
                      step_size=args.step_size, restarts=args.restarts, samples=args.samples,
                      batch_size=args.batch_size, logic=args.logic, seed=args.seed)
    print(result.table())
    stem = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval-{prop.name}"
    j, c = result.save(stem)
    print(f"saved {j} and {c}")
    return 0


@command("attack")
def cmd_attack(args: argparse.Namespace) -> int:
    from .attack import attack

    prop = _load_property(args.spec, args.property, _params(args.param))
    model, data = _model_and_test_data(args)
    result = attack(model, prop, data.x, data.y, eps=args.eps, steps=args.steps,
                    step_size=args.step_size, restarts=args.restarts, logic=args.logic, seed=args.seed)
    print(result.summary())
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"attack-{prop.name}"
    files = result.save(out, data.classes)
    print(f"saved {files['npz']} and {files['png']}")
    return 0


@command("data")
def cmd_data(args: argparse.Namespace) -> int:
    from .data import find_dataset_dir
    from .fetch import fetch

    if args.action == "fetch":
        path = fetch(args.name, data_dir=args.data_dir, base_url=args.mirror, verify=not args.no_verify)
        print(f"{args.name} is ready in {path}")
    else:
        print(find_dataset_dir(args.name, data_dir=args.data_dir))
    return 0


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    from .experiment import DemoConfig, run_demo

    cfg = DemoConfig(data_dir=args.data_dir, out=args.out, train_limit=args.train_limit,
                     test_limit=args.test_limit, epochs=args.epochs, seed=args.seed)
    run_demo(cfg)
    return 0


def add_parsers(sub) -> None:
    def data_args(p, limit_help="use only N examples (spread over the split)"):
        p.add_argument("--data-dir", metavar="DIR", help="where the datasets are (else $ROBUSTSPEC_DATA, "
                       "the user cache, /usr/share/datasets)")
        p.add_argument("--limit", type=int, metavar="N", help=limit_help)
        p.add_argument("--no-verify", action="store_true", help="skip checksum verification of the data")

    def attack_args(p):
        p.add_argument("checkpoint", metavar="CHECKPOINT")
        p.add_argument("--spec", required=True, metavar="FILE")
        p.add_argument("--property", metavar="NAME")
        p.add_argument("--steps", type=count(0), default=50, help="PGD steps (default 50)")
        p.add_argument("--step-size", type=float, default=None, help="default 2.5 * radius / steps per element, the radius "
                       "being half the domain's width there (eps, or less where [0, 1] clips)")
        p.add_argument("--restarts", type=count(1), default=1)
        p.add_argument("--logic", default="dl2")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--dataset", choices=["fashion-mnist", "gtsrb"], help="if the checkpoint lacks it")
        p.add_argument("--param", action="append", metavar="NAME=VALUE")
        p.add_argument("--out", metavar="PATH")
        data_args(p)

    t = sub.add_parser("train", help="train a network under a regime (baseline, augment-*, "
                       "adversarial, constraint)")
    t.add_argument("--dataset", choices=["fashion-mnist", "gtsrb"], default="fashion-mnist")
    t.add_argument("--regime", required=True,
                   choices=["baseline", "augment-uniform", "augment-fgsm", "adversarial", "constraint"])
    t.add_argument("--spec", metavar="FILE")
    t.add_argument("--property", metavar="NAME")
    t.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    t.add_argument("--epochs", type=count(1), default=10)
    t.add_argument("--batch-size", type=count(1), default=128)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--alpha", type=float, default=1.0, help="weight of cross-entropy (constraint)")
    t.add_argument("--beta", type=float, default=0.2, help="weight of the spec's loss (constraint)")
    t.add_argument("--logic", default="dl2")
    t.add_argument("--steps", type=count(0), default=50, help="PGD steps of the inner search")
    t.add_argument("--step-size", type=float, default=0.01)
    t.add_argument("--adversary", choices=["pgd", "fgsm"], default="pgd", help="adversarial regime")
    t.add_argument("--eps", type=float, help="shorthand for --param eps=VALUE")
    t.add_argument("--param", action="append", metavar="NAME=VALUE")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", metavar="DIR", help="checkpoint folder (default runs/DATASET-REGIME-seedN)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    t.add_argument("--size", type=int, default=32, help="GTSRB image side")
    t.add_argument("--rgb", action="store_true", help="GTSRB in colour (default grayscale)")
    t.add_argument("--classes", type=_classes, default=10, metavar="N|all|IDS",
                   help="GTSRB classes: the first N (default 10, as in the paper), all 43, or "
                        "ids like 1,2,13 (remapped to 0..k-1)")
    data_args(t)

    e = sub.add_parser("evaluate", help="clean accuracy, constraint security and accuracy per eps")
    attack_args(e)
    e.add_argument("--eps", default="0,0.02,0.04,0.06,0.08,0.1", help="comma-separated")
    e.add_argument("--samples", type=count(0), default=100, help="uniform samples for constraint accuracy")
    e.add_argument("--batch-size", type=count(1), default=1000)

    a = sub.add_parser("attack", help="search counterexamples of a property; save them with a PNG grid")
    attack_args(a)
    a.add_argument("--eps", type=float, default=None, help="override the spec's eps")

    d = sub.add_parser("data", help="get or locate datasets")
    d.add_argument("action", choices=["fetch", "where"])
    d.add_argument("name", choices=["fashion-mnist", "gtsrb"])
    d.add_argument("--data-dir", metavar="DIR")
    d.add_argument("--mirror", metavar="URL", help="base URL of a mirror of the official files")
    d.add_argument("--no-verify", action="store_true", help="skip checksum verification")

    m = sub.add_parser("demo", help="the README's main job: baseline vs SR-constraint training on "
                       "Fashion-MNIST, SR and SCR attacks, table and plot")
    m.add_argument("--data-dir", metavar="DIR")
    m.add_argument("--out", default="runs/demo")
    m.add_argument("--epochs", type=count(1), default=8)
    m.add_argument("--train-limit", type=int, default=None)
    m.add_argument("--test-limit", type=int, default=1000)
    m.add_argument("--seed", type=int, default=0)


__all__ = ["add_parsers", "COMMANDS"]
