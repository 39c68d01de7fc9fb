"""The README's main job: a short, honest version of the paper's experiment on Fashion-MNIST.

Trains a baseline and an SR-constraint network with the same seed and budget, attacks both
with the SR and SCR properties over several eps, prints the table and plots constraint
security against eps. The budget is small (about a minute on 2 cores), so it trains 8 epochs
with lr 1e-3 instead of the paper's 100 at 1e-4, and the constraint's PGD takes 10 steps of
0.025 instead of 50 of 0.01.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robustspec.compiler import compile_spec

from .data import load_dataset
from .files import atomic_write_text
from .metrics import evaluate
from .models import PaperMLP
from .plots import plot_security
from .training import Trainer, TrainConfig

SPECS = Path(__file__).resolve().parent.parent / "specs"


def spec_path(name: str) -> Path:
    path = SPECS / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the demo uses the specs shipped in the "
                                "repository's specs/ folder; run it from a checkout")
    return path


@dataclass
class DemoConfig:
    data_dir: str | None = None
    out: str = "runs/demo"
    train_limit: int | None = None  # None: all 60000 training images
    test_limit: int = 1000
    epochs: int = 8
    lr: float = 1e-3
    train_steps: int = 10
    eval_steps: int = 50
    samples: int = 100
    eps: tuple[float, ...] = (0.0, 0.025, 0.05, 0.075, 0.1)
    seed: int = 0
    progress: bool | None = None
    regimes: tuple[str, ...] = ("baseline", "constraint")
    extra: dict = field(default_factory=dict)


def run_demo(cfg: DemoConfig, log=print) -> dict:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train = load_dataset("fashion-mnist", "train", data_dir=cfg.data_dir, limit=cfg.train_limit)
    test = load_dataset("fashion-mnist", "test", data_dir=cfg.data_dir, limit=cfg.test_limit)
    log(f"Fashion-MNIST: {len(train)} training and {len(test)} test images")
    sr = compile_spec(spec_path("standard_robustness.spec"))["sr"]
    scr = compile_spec(spec_path("strong_classification_robustness.spec"))["scr"]
    attacks = {"SR": sr, "SCR": scr}
    labels = {"baseline": "Baseline", "constraint": "Constraint loss (SR)"}
    results: dict = {"config": {k: v for k, v in vars(cfg).items() if k != "extra"}, "models": {}}
    curves: dict = {a: {} for a in attacks}
    for regime in cfg.regimes:
        torch.manual_seed(cfg.seed)
        model = PaperMLP(784)
        tc = TrainConfig(regime=regime, epochs=cfg.epochs, lr=cfg.lr, search_steps=cfg.train_steps,
                         step_size=2.5 * 0.1 / cfg.train_steps, seed=cfg.seed)
        trainer = Trainer(model, tc, sr if regime != "baseline" else None, out / regime,
                          {"name": "mlp", "input_shape": [1, 28, 28], "classes": 10,
                           "dataset": "fashion-mnist"}, cfg.progress)
        start = time.perf_counter()
        # resume: a rerun of the demo reuses (or completes) its own checkpoints, exactly; other
        # settings in the same --out are refused with a message rather than overwritten
        trainer.fit(train.x, train.y, resume=True,
                    on_epoch=lambda s: log(f"  {labels[regime]}: epoch {s.epoch}: loss {s.loss:.4f}, "
                                           f"train accuracy {s.accuracy:.3f}, {s.examples_per_s:.0f} ex/s"))
        train_s = time.perf_counter() - start
        entry = {"train_seconds": train_s, "history": trainer.history, "attacks": {}}
        for name, prop in attacks.items():
            r = evaluate(model, prop, test.x, test.y, eps=cfg.eps, steps=cfg.eval_steps,
                         samples=cfg.samples, seed=cfg.seed, progress=cfg.progress)
            r.save(out / regime / f"eval-{name.lower()}")
            entry["attacks"][name] = r.to_dict()
            curves[name][labels[regime]] = [(row.eps, row.constraint_security) for row in r.rows]
        results["models"][regime] = entry
    log("")
    log(table(results, labels))
    if {"baseline", "constraint"} <= set(results["models"]):
        def sec(regime):
            return results["models"][regime]["attacks"]["SR"]["rows"][-1]["constraint_security"]
        log(f"\nSR constraint training moved SR security at eps {cfg.eps[-1]:g} from "
            f"{100 * sec('baseline'):.1f}% (baseline) to {100 * sec('constraint'):.1f}% with the same "
            "seed and budget")
    png = plot_security(curves, out / "security.png",
                        title=f"Fashion-MNIST, {len(test)} test images, PGD {cfg.eval_steps} steps")
    results["plot"] = str(png)
    results["seconds"] = time.perf_counter() - t0
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    log(f"\nplot: {png}\nresults: {out / 'results.json'} (and eval-*.csv per model)"
        f"\ntotal time {results['seconds']:.0f} s")
    return results


def table(results: dict, labels: dict) -> str:
    """Constraint security (and clean accuracy) per model, attack and eps."""
    models = results["models"]
    first = next(iter(models.values()))
    eps = [row["eps"] for row in next(iter(first["attacks"].values()))["rows"]]
    head = f"{'model':<22} {'attack':<6} {'clean':>6} " + " ".join(f"{'eps ' + format(e, 'g'):>9}" for e in eps)
    lines = ["constraint security (% of test inputs where PGD finds no violation)", head, "-" * len(head)]
    for regime, entry in models.items():
        for attack, r in entry["attacks"].items():
            rows = r["rows"]
            lines.append(f"{labels.get(regime, regime):<22} {attack:<6} {100 * rows[0]['clean_accuracy']:5.1f}% "
                         + " ".join(f"{100 * row['constraint_security']:8.1f}%" for row in rows))
    return "\n".join(lines)
