"""The paper's whole experiment as one resumable command: `robustspec reproduce`.

The grid is one cell per (dataset, training regime, network): the 7 regimes of the paper (plus
SCR training under the authors' code's definition) for the paper's MLP on Fashion-MNIST and
GTSRB, and E4's comparison for a convolutional network on Fashion-MNIST. A cell trains (a
checkpoint per epoch, resumed when killed), then evaluates the network against every attack
property (each attack's result saved on its own, so a kill during evaluation loses one attack
at most) and writes DIR/cells/<id>/result.json atomically; a cell with a result is skipped.
With `--jobs N` the cells are split into units (a cell's training, each attack's evaluation
and verification, the assembly of its result) run in N processes, longest first, so the short
attack units fill the time the long trainings leave; `--cells` picks a subset, so a grid can be
spread over machines and assembled with `--report-only` (runtime/report.py writes the report).
"""
from __future__ import annotations

import argparse
import fnmatch
import functools
import heapq
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

from robustspec.dsl.errors import InputError

from .files import atomic_write_text

SPECS = Path(__file__).resolve().parent.parent / "specs"

# attack name -> (spec file in specs/, property). "SCR-authors" is the authors' code's SCR
# (raw score of y >= log 0.3, eta ignored), evaluated beside the paper's so E2 can be read
# under both definitions.
ATTACKS: dict[str, tuple[str, str]] = {
    "SR": ("standard_robustness.spec", "sr"),
    "SCR": ("strong_classification_robustness.spec", "scr"),
    "LR": ("lipschitz_robustness.spec", "lr"),
    "SCR-authors": ("strong_classification_robustness_authors.spec", "scr_authors"),
}


@dataclass(frozen=True)
class Regime:
    trainer: str            # runtime.training regime
    prop: str | None        # attack name whose property drives training (None: baseline)
    label: str              # the paper's name


# The augmentations take their ball (and FGSM its gradient) from SR's domain and loss;
# adversarial training takes cross-entropy at the point the SR constraint's own PGD finds, as
# the authors' code did (GUIDE section 8).
REGIMES: dict[str, Regime] = {
    "baseline": Regime("baseline", None, "Baseline"),
    "augment-uniform": Regime("augment-uniform", "SR", "Data augmentation (RU)"),
    "augment-fgsm": Regime("augment-fgsm", "SR", "Data augmentation (FGSM)"),
    "adversarial": Regime("adversarial", "SR", "Adversarial training"),
    "constraint-sr": Regime("constraint", "SR", "Constraint loss (SR)"),
    "constraint-scr": Regime("constraint", "SCR", "Constraint loss (SCR)"),
    "constraint-lr": Regime("constraint", "LR", "Constraint loss (LR)"),
    "constraint-scr-authors": Regime("constraint", "SCR-authors",
                                     "Constraint loss (SCR, authors' code)"),
}
E4_REGIMES = ("baseline", "augment-uniform", "augment-fgsm", "constraint-sr")
DATASETS = ("fashion-mnist", "gtsrb")
GTSRB_CLASSES = list(range(10))  # the loader's default: ids 0-9 (8 speed limits, end of 80, no passing)


# E4's CNN evaluated on the CPU runs its passes on this many rows at a time (metrics.RowChunks:
# an evaluation 1.60x faster than with the chunks of 1000 whole, bench/eval_forward_rows.py;
# the random draws stay laid out by the chunks, so only float rounding differs, as with
# --device, and it is not in settings(); each eval-*.json records it). In docs/reproduction/
# paper-units/, cnn-baseline and cnn-augment-uniform's SR and SCR evaluations ran whole.
CNN_FORWARD_ROWS = 250


@dataclass(frozen=True)
class Budget:
    """Training and evaluation settings of one budget; the cnn_* fields are E4's network."""

    name: str
    epochs: int
    lr: float
    train_steps: int
    step_size: float
    train_limit: int | None        # training images (None: the whole split)
    test_limit: int | None         # test images evaluated (None: the whole split)
    cnn_epochs: int
    cnn_train_limit: int | None
    cnn_test_limit: int | None
    batch_size: int = 128
    alpha: float = 1.0
    beta: float = 0.2
    eval_steps: int = 50
    samples: int = 100
    eps: tuple[float, ...] = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1)
    seed: int = 0
    # constraint satisfaction (Definition 5) by the verifier (runtime/verify.py) on the first
    # verify_points test images of the evaluated ones, each attack property, at verify_eps,
    # verify_timeout seconds per point for the complete solver; 0 points: not measured
    verify_points: int = 0
    verify_timeout: float = 10.0
    verify_eps: tuple[float, ...] = (0.02, 0.06, 0.1)

    def describe(self) -> str:
        def n(v):
            return "all" if v is None else str(v)
        limits = (self.train_limit, self.test_limit, self.cnn_train_limit, self.cnn_test_limit)
        subset = (" (subsets are fixed, spread evenly over the split, the same for every cell)"
                  if any(v is not None for v in limits) else "")
        return (f"{self.epochs} epochs, Adam lr {self.lr:g}, batch {self.batch_size}, alpha "
                f"{self.alpha:g}, beta {self.beta:g}; training PGD {self.train_steps} signed steps "
                f"of {self.step_size:g} from one uniform start; {n(self.train_limit)} training and "
                f"{n(self.test_limit)} test images{subset}; evaluation PGD {self.eval_steps} steps, "
                f"{self.samples} uniform samples, eps {', '.join(f'{e:g}' for e in self.eps)}; "
                f"E4 network: {self.cnn_epochs} epochs on {n(self.cnn_train_limit)} training "
                f"images, {n(self.cnn_test_limit)} test images"
                + (f"; constraint satisfaction verified on {self.verify_points} test images at "
                   f"eps {', '.join(f'{e:g}' for e in self.verify_eps)} (MILP, "
                   f"{self.verify_timeout:g} s per point)" if self.verify_points else ""))


BUDGETS: dict[str, Budget] = {
    # exactly the paper's settings (section 4, GUIDE section 3)
    "paper": Budget("paper", epochs=100, lr=1e-4, train_steps=50, step_size=0.01,
                    train_limit=None, test_limit=None, cnn_epochs=100, cnn_train_limit=None,
                    cnn_test_limit=None, verify_points=50, verify_timeout=2.0),
    # the same grid scaled down so that the Fashion-MNIST grid fits 30 minutes on 2 cores:
    # 10x fewer epochs at a 10x larger lr, 10 training PGD steps of 0.025 (a path of 2.5 eps
    # where the paper's 50 steps of 0.01 walk 5 eps), evaluation on a fixed 1000-image subset
    # (spread evenly over the test set, the same for every cell); E4's CNN costs ~15x the MLP
    # per example, so it trains on 10000 images for 8 epochs and is evaluated on 250 test images
    "quick": Budget("quick", epochs=10, lr=1e-3, train_steps=10, step_size=0.025,
                    train_limit=None, test_limit=1000, cnn_epochs=8, cnn_train_limit=10000,
                    cnn_test_limit=250, verify_points=25, verify_timeout=2.0),
    # seconds per cell: for tests and CI, numbers mean nothing
    "smoke": Budget("smoke", epochs=2, lr=1e-3, train_steps=2, step_size=0.05,
                    train_limit=256, test_limit=64, cnn_epochs=1, cnn_train_limit=128,
                    cnn_test_limit=16, eval_steps=3, samples=4, verify_points=3,
                    verify_timeout=1.0, verify_eps=(0.05,)),
}


@dataclass(frozen=True)
class Cell:
    dataset: str
    regime: str
    model: str = "mlp"   # "mlp" (the paper's) or "cnn" (E4's stand-in: models.SmallCNN)

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.regime}" if self.model == "mlp" else \
            f"{self.dataset}/cnn-{self.regime}"

    @property
    def label(self) -> str:
        return REGIMES[self.regime].label + (" [CNN]" if self.model == "cnn" else "")


def grid(datasets=DATASETS) -> list[Cell]:
    """Every cell for `datasets`, cheapest regimes first (so a short run finishes some)."""
    cells = [Cell(d, r) for d in datasets for r in REGIMES]
    if "fashion-mnist" in datasets:
        cells += [Cell("fashion-mnist", r, "cnn") for r in E4_REGIMES]
    return cells


def select(cells: list[Cell], patterns: list[str] | None) -> list[Cell]:
    """Cells whose id matches one of `patterns` (ids or shell globs); a pattern matching
    nothing is an error listing the ids."""
    if not patterns:
        return cells
    chosen, unmatched = [], []
    for pat in patterns:
        hits = [c for c in cells if fnmatch.fnmatchcase(c.id, pat)]
        if not hits:
            unmatched.append(pat)
        chosen += [c for c in hits if c not in chosen]
    if unmatched:
        raise InputError(f"--cells {', '.join(unmatched)} matches no cell of this grid; cells: "
                         + ", ".join(c.id for c in cells))
    return [c for c in cells if c in chosen]  # grid order


@dataclass
class Plan:
    """Everything a cell needs, picklable (sent to worker processes) and recorded."""

    budget: Budget
    out: str
    data_dir: str | None = None
    gtsrb_size: int = 48
    threads: int = 1
    datasets: tuple[str, ...] = DATASETS
    device: str = "cpu"  # --device: where each cell trains and evaluates (not in settings():
    # results do not depend on it beyond float rounding, docs/distributed.md)

    def settings(self) -> dict:
        """What fixes the numbers: a folder's results are only comparable under one of these."""
        return {"budget": asdict(self.budget), "gtsrb": {"size": self.gtsrb_size, "grayscale": True,
                                                         "classes": GTSRB_CLASSES},
                "attacks": {k: f"{v[0]}:{v[1]}" for k, v in ATTACKS.items()}}


# ------------------------------------------------------------------ one cell

def data_options(dataset: str, plan: Plan) -> dict:
    if dataset == "gtsrb":
        return {"size": plan.gtsrb_size, "grayscale": True, "classes": GTSRB_CLASSES}
    return {}


def load_data(cell: Cell, plan: Plan):
    from .data import load_dataset

    b = plan.budget
    train_limit, test_limit = ((b.cnn_train_limit, b.cnn_test_limit) if cell.model == "cnn"
                               else (b.train_limit, b.test_limit))
    opts = data_options(cell.dataset, plan)
    train = load_dataset(cell.dataset, "train", data_dir=plan.data_dir, limit=train_limit, **opts)
    test = load_dataset(cell.dataset, "test", data_dir=plan.data_dir, limit=test_limit, **opts)
    return train, test


def attack_properties(names=None) -> dict:
    """The attack properties compiled from the shipped specs (only `names`, when given)."""
    from robustspec.compiler import compile_spec

    props = {}
    for name, (spec, prop) in ATTACKS.items():
        if names is not None and name not in names:
            continue
        path = SPECS / spec
        if not path.exists():
            raise InputError(f"{path} is missing: reproduce uses the specs shipped in the "
                             "repository's specs/ folder; run it from a checkout")
        props[name] = compile_spec(path)[prop]
    return props


def cell_dir(out: str | Path, cell: Cell) -> Path:
    return Path(out) / "cells" / cell.id


# the status file a process writes: one per cell when a process runs whole cells, one per
# unit (status-<unit>.json) when the grid splits cells into units (see `run_unit`)
_STATUS_NAME = ["status.json"]


def _status(folder: Path, **fields) -> None:
    """What a cell is doing, for the progress display of the process that runs the grid."""
    atomic_write_text(folder / _STATUS_NAME[0], json.dumps({**fields, "time": time.time()}))


def _epochs_saved(folder: Path) -> int:
    """Epochs a cell's folder holds (train/history.json, written after each checkpoint)."""
    try:
        history = json.loads((folder / "train" / "history.json").read_text())
    except (OSError, ValueError):
        return 0
    return len(history) if isinstance(history, list) else 0


def train_cell(cell: Cell, plan: Plan, log=None):
    """Train one cell (resuming from its checkpoint); returns (trainer, train data, test data)."""
    import torch

    from .models import build_model
    from .training import Trainer, TrainConfig

    folder = cell_dir(plan.out, cell)
    b = plan.budget
    regime = REGIMES[cell.regime]
    prop = attack_properties([regime.prop])[regime.prop] if regime.prop else None
    train, test = load_data(cell, plan)
    torch.manual_seed(b.seed)
    model = build_model(cell.model, train.input_shape, train.num_classes)
    epochs = b.cnn_epochs if cell.model == "cnn" else b.epochs
    cfg = TrainConfig(regime=regime.trainer, epochs=epochs, batch_size=b.batch_size, lr=b.lr,
                      alpha=b.alpha, beta=b.beta, search_steps=b.train_steps,
                      step_size=b.step_size, adversary="pgd", seed=b.seed)
    info = {"name": cell.model, "input_shape": list(train.input_shape),
            "classes": train.num_classes, "dataset": cell.dataset,
            "data_options": data_options(cell.dataset, plan)}
    trainer = Trainer(model, cfg, prop, folder / "train", info, progress=False,
                      device=plan.device)

    started = time.time()
    first: list[int] = []  # the first epoch this run trained (a resumed cell starts late)

    def on_epoch(s):
        first[:] = first or [s.epoch]
        _status(folder, phase="train", epoch=s.epoch, epochs=epochs, started=started,
                from_epoch=first[0] - 1)
        if log:
            log(f"  {cell.id}: epoch {s.epoch}/{epochs}, loss {s.loss:.4f}, train accuracy "
                f"{s.accuracy:.3f}, {s.examples_per_s:.0f} ex/s")

    done = _epochs_saved(folder)  # a resumed cell shows its epochs done from the start
    _status(folder, phase="train", epoch=done, epochs=epochs, started=started, from_epoch=done)
    trainer.fit(train.x, train.y, resume=True, on_epoch=on_epoch)
    return trainer, train, test


def evaluate_attack(cell: Cell, plan: Plan, name: str, prop, model, test, log=None,
                    started: float | None = None) -> dict:
    """One attack's evaluation of a trained cell (read back when a run before saved it)."""
    from .distributed import resolve_device
    from .metrics import EvalResult, EvalRow, evaluate

    b = plan.budget
    folder = cell_dir(plan.out, cell)
    stem = folder / f"eval-{name.lower()}"
    saved = stem.with_name(stem.name + ".json")
    if saved.exists():  # evaluated before a kill
        d = json.loads(saved.read_text())
        return EvalResult(d["property"], [EvalRow(**r) for r in d["rows"]], d["settings"]).to_dict()
    _status(folder, phase="evaluate", attack=name, started=started or time.time())
    r = evaluate(model, prop, test.x, test.y, eps=b.eps, steps=b.eval_steps,
                 samples=b.samples, seed=b.seed, progress=False, device=plan.device,
                 forward_rows=CNN_FORWARD_ROWS if cell.model == "cnn"
                 and resolve_device(plan.device).type == "cpu" else None)
    r.save(stem)
    if log:
        log(f"  {cell.id}: {name} attack: security "
            + " ".join(f"{100 * row.constraint_security:.1f}" for row in r.rows) + " %")
    return r.to_dict()


def run_cell(cell: Cell, plan: Plan, log=None, seconds_before: float = 0.0) -> dict:
    """Train (resuming) and evaluate one cell; returns its result (also in result.json). Parts
    a run before saved (a trained network, an attack's evaluation or verification) are read
    back, not redone, so the grid's units (`run_unit`) end with a run_cell that only
    assembles. seconds_before: the cell's time in this run before the call (its other units),
    counted in result.json's seconds_this_run."""
    import torch

    folder = cell_dir(plan.out, cell)
    done = folder / "result.json"
    if done.exists():  # trained and evaluated; verified too, unless the budget asks for it now
        result = json.loads(done.read_text())
        if cell_complete(plan, cell):
            return result
        from .training import model_from_checkpoint
        model, _ck, _info = model_from_checkpoint(folder / "train" / "last.pt")
        _train, test = load_data(cell, plan)
        result["verification"] = verify_cell(model, attack_properties(), test, plan, folder,
                                             cell, log)
        atomic_write_text(done, json.dumps(result, indent=1))
        (folder / _STATUS_NAME[0]).unlink(missing_ok=True)
        return result
    t0 = time.perf_counter()
    b = plan.budget
    props = attack_properties()
    started = time.time()
    trainer, train, test = train_cell(cell, plan, log)
    model = trainer.model
    attacks = {name: evaluate_attack(cell, plan, name, prop, model, test, log, started)
               for name, prop in props.items()}
    result = {"cell": cell.id, "dataset": cell.dataset, "regime": cell.regime, "model": cell.model,
              "label": cell.label, "train_property": REGIMES[cell.regime].prop,
              "n_train": len(train), "n_test": len(test),
              "clean_accuracy": next(iter(attacks.values()))["rows"][0]["clean_accuracy"],
              "train_seconds": sum(h["seconds"] for h in trainer.history),
              "history": trainer.history, "attacks": attacks, "config": asdict(trainer.cfg),
              "settings": plan.settings(), "threads": torch.get_num_threads(),
              "uniform": _uniform_numbers(),
              "seconds_this_run": seconds_before + time.perf_counter() - t0}
    # written before verification: a verification that fails leaves the training and the
    # evaluation in the report, and the next run verifies the cell (see the top of this function)
    atomic_write_text(done, json.dumps(result, indent=1))
    if b.verify_points:
        result["verification"] = verify_cell(model, props, test, plan, folder, cell, log)
        atomic_write_text(done, json.dumps(result, indent=1))
    (folder / _STATUS_NAME[0]).unlink(missing_ok=True)
    return result


def cell_complete(plan: Plan, cell: Cell) -> bool:
    """Has the cell everything its budget asks for? (A folder made before verification was
    part of the budget has results without it: those cells are verified on the next run.)"""
    path = cell_dir(plan.out, cell) / "result.json"
    if not path.exists():
        return False
    if not plan.budget.verify_points:
        return True
    try:
        verification = json.loads(path.read_text()).get("verification")
    except (OSError, ValueError, AttributeError):
        return False
    # a network refused by an earlier version (the CNN's max-pooling before bounds took it) is
    # tried again, so a folder made then gets its satisfaction numbers on the next run
    return verification is not None and not any(
        _refused(rows) for rows in verification.get("attacks", {}).values())


_PER_EXAMPLE = ("verdicts", "decided_by", "times")


def _refused(rows) -> bool:
    """A saved verification that the verifier refused (a network it did not take)."""
    return isinstance(rows, dict) and "refused" in rows


def verify_cell(model, props: dict, test, plan: Plan, folder: Path, cell: Cell, log=None) -> dict:
    """Constraint satisfaction (Definition 5) of every attack property on the first
    verify_points test images, at each verify_eps: runtime/verify.py's attack, bounds and MILP
    stages; each attack's result saved on its own (verify-<attack>.json, .csv, counterexamples),
    so a kill loses one attack at most. A network the bound propagation does not take (the
    CNN's max-pooling once was) is recorded as refused, with the reason, and tried again on
    the next run."""
    from robustspec.dsl.errors import MissingExtra, RobustspecError

    from .verify import save, verify

    b = plan.budget
    n = min(b.verify_points, len(test))
    x, y = test.x[:n], test.y[:n]
    out = {"points": n, "timeout": b.verify_timeout, "eps": list(b.verify_eps),
           "attack_steps": b.eval_steps, "attacks": {}}
    started = time.time()
    for name, prop in props.items():
        stem = folder / f"verify-{name.lower()}"
        saved = stem.with_suffix(".json")
        rows = json.loads(saved.read_text()) if saved.exists() else None
        if rows is not None and not _refused(rows):  # a refusal is tried again: a later
            out["attacks"][name] = rows if isinstance(rows, dict) else \
                [{k: v for k, v in r.items() if k not in _PER_EXAMPLE} for r in rows]
            continue  # version may verify the network (it costs nothing when it still refuses)
        _status(folder, phase="verify", attack=name, started=started)
        t0 = time.perf_counter()
        try:
            results = [verify(model, prop, x, y, eps=e, timeout=b.verify_timeout,
                              attack_steps=b.eval_steps, seed=b.seed, progress=False,
                              device=plan.device)
                       for e in b.verify_eps]
        except MissingExtra:  # not a property of the network: never recorded as a refusal
            raise
        except RobustspecError as e:  # not verifiable (a layer the bounds do not take)
            out["attacks"][name] = {"refused": str(e)}
            atomic_write_text(saved, json.dumps(out["attacks"][name]))
            if log:
                log(f"  {cell.id}: {name} not verified: {e}")
            continue
        save(results, stem)
        rows = [{**r.row(), "notes": r.notes} for r in results]
        out["attacks"][name] = rows
        if log:
            log(f"  {cell.id}: {name} verified: satisfaction "
                + " ".join(f"{100 * r['satisfaction']:.0f}" for r in rows)
                + f" % at eps {', '.join(f'{e:g}' for e in b.verify_eps)} "
                f"({time.perf_counter() - t0:.0f} s)")
    out["seconds"] = sum(r["points"] * (r["attack_s_per_point"] + r["bounds_s_per_point"]
                                        + r["complete_s_per_point"])
                         for rows in out["attacks"].values() if isinstance(rows, list) for r in rows)
    return out


@dataclass(frozen=True)
class Unit:
    """A piece of a cell that one worker process runs: its training ("train"), one attack's
    evaluation and verification (the attack's name), or the assembly of result.json ("result":
    run_cell, which reads the saved parts back; it redoes only a part an attack unit failed
    to save). With several jobs the grid schedules units, not cells, so a cell's attacks fill
    the gaps the long trainings leave."""
    cell: Cell
    part: str

    @property
    def id(self) -> str:
        return f"{self.cell.id}:{self.part}"

    @property
    def status_name(self) -> str:
        return f"status-{self.part.lower()}.json"


def cell_trained(plan: Plan, cell: Cell) -> bool:
    """Has the cell finished its training? (history.json is written after each epoch's
    checkpoint, so it may lag a kill by one epoch: then the train unit resumes and ends.)"""
    folder = cell_dir(plan.out, cell)
    if (folder / "result.json").exists():
        return True
    return _epochs_saved(folder) >= _epochs(plan, cell)


def _epochs(plan: Plan, cell: Cell) -> int:
    return plan.budget.cnn_epochs if cell.model == "cnn" else plan.budget.epochs


def attack_evaluated(plan: Plan, cell: Cell, name: str) -> bool:
    """Is one attack's evaluation saved (evaluate_attack's eval-<attack>.json)?"""
    return (cell_dir(plan.out, cell) / f"eval-{name.lower()}.json").exists()


def attack_done(plan: Plan, cell: Cell, name: str) -> bool:
    """Are one attack's evaluation (and, where the budget verifies, verification) saved?"""
    return attack_evaluated(plan, cell, name) and (
        not plan.budget.verify_points
        or (cell_dir(plan.out, cell) / f"verify-{name.lower()}.json").exists())


def run_unit(unit: Unit, plan: Plan, seconds_before: float = 0.0) -> dict:
    """Entry of a worker process: pin the threads, run one unit, return a short summary
    (with the cell's clean accuracy from its result unit). seconds_before: the cell's other
    units' seconds in this run, for result.json's seconds_this_run."""
    import torch

    torch.set_num_threads(plan.threads)
    _STATUS_NAME[0] = unit.status_name
    start = time.time()
    cell, folder = unit.cell, cell_dir(plan.out, unit.cell)
    summary = {"unit": unit.id}
    try:
        if unit.part == "train":
            train_cell(cell, plan)
        elif unit.part == "result":
            r = run_cell(cell, plan, seconds_before=seconds_before)
            summary["clean_accuracy"] = r["clean_accuracy"]
        else:
            from .training import model_from_checkpoint

            model, _ck, _info = model_from_checkpoint(folder / "train" / "last.pt")
            _train, test = load_data(cell, plan)
            prop = attack_properties([unit.part])[unit.part]
            evaluate_attack(cell, plan, unit.part, prop, model, test)
            if plan.budget.verify_points:
                verify_cell(model, {unit.part: prop}, test, plan, folder, cell)
    finally:
        (folder / unit.status_name).unlink(missing_ok=True)
    return {**summary, "seconds": time.time() - start}


def units_of(cell: Cell, plan: Plan) -> list[Unit]:
    """The units a cell still needs, in order: training, each attack not saved, the result."""
    return (([] if cell_trained(plan, cell) else [Unit(cell, "train")])
            + [Unit(cell, name) for name in ATTACKS if not attack_done(plan, cell, name)]
            + [Unit(cell, "result")])


def unit_estimate(unit: Unit, parts: dict[str, float], evaluated: bool = False) -> float:
    """Rough seconds of one unit from its cell's estimate_parts. evaluated: an attack unit
    whose evaluation a run before saved (a resumed run), so only its verification is left."""
    if unit.part == "train":
        return parts["train"]
    if unit.part == "result":  # it assembles; in a cell evaluated before (estimate_parts gave
        # no evaluation) it also verifies what a run before did not (run_cell)
        return 5.0 + (0.0 if parts["evaluate"] else parts["verify"])
    return ((0.0 if evaluated else parts["evaluate"]) + parts["verify"]) / len(ATTACKS)


def unit_time_left(status: dict | None, estimate: float, scale: float, started: float,
                   now: float) -> float:
    """Seconds a running unit has left: a training at its own epoch rate in this run, any
    other unit by its scaled estimate less the time it has run."""
    if status and status.get("phase") == "train":
        trained = status.get("epoch", 0) - status.get("from_epoch", 0)
        if trained > 0:
            per_epoch = (status["time"] - status["started"]) / trained
            return max(per_epoch * (status["epochs"] - status["epoch"]) - (now - status["time"]),
                       0.0)
    return max(scale * estimate - (now - started), 0.0)


# ------------------------------------------------------------------ the grid

# rough seconds per cell on one core, measured on this 2-core machine (two cells at a time,
# one thread each; docs/reproduction/README.md, 4-5 December 2026): examples/s of the
# Fashion-MNIST MLP with 10 PGD steps where a regime searches (scaled by 12 / (steps + 2)
# for other step counts); GTSRB 48x48 ~2.4x and the CNN ~24x slower; evaluation ~0.016 s per
# test image for the 4 attacks; verification ~0.15 of the timeout per query. Only the first
# estimate: a run then scales it by its own cells' rates.
_RATE = {"baseline": 95000, "augment-uniform": 22000, "augment-fgsm": 15000,
         "adversarial": 10000, "constraint": 9500}
# LR's objective adds norm_inf(x - x0) over the input at every search step: its cells trained
# at 1/1.14 (quick) and 1/1.20 (paper) of SR's rate on torch's ops; its 50-step training step
# is 1.12x SR's with the native kernels and 1.25x without (bench/bench_training_speed.py,
# 5 December)
_SLOWER = {"constraint-lr": (1.12, 1.25)}  # (with the native kernels, without)


def _native():
    from robustspec.compiler import native  # (the compiler is imported where it is used)

    return native


def _uniform_numbers() -> str:
    """The searches' uniform numbers (recorded with each cell and run: they changed from
    torch.rand to SplitMix64 on 5 December 2026, so a folder resumed across that mixes them)."""
    from robustspec.compiler.search import UNIFORM_NUMBERS

    return UNIFORM_NUMBERS


@functools.lru_cache(maxsize=None)
def _native_built() -> bool:
    return _native().cached()


def estimate_parts(cell: Cell, plan: Plan) -> dict[str, float]:
    """Rough seconds of the cell's training, evaluation and verification on one free core."""
    b = plan.budget
    # the MLP's points are mostly decided before the MILP's timeout; the CNN's bounds take about
    # 0.5 s a point and its MILP runs to the timeout (measured on the quick grid's CNN cells)
    per_point = 0.6 + 0.9 * b.verify_timeout if cell.model == "cnn" else 0.15 * b.verify_timeout
    verify_s = len(ATTACKS) * len(b.verify_eps) * b.verify_points * per_point
    if (cell_dir(plan.out, cell) / "result.json").exists():  # trained and evaluated: verify only
        return {"train": 0.0, "evaluate": 0.0, "verify": verify_s}
    slow = (24.0 if cell.model == "cnn" else 1.0) * (2.4 if cell.dataset == "gtsrb" else 1.0)
    n_train = {"fashion-mnist": 60000, "gtsrb": 14670}[cell.dataset]
    n_test = {"fashion-mnist": 10000, "gtsrb": 4770}[cell.dataset]
    limit = b.cnn_train_limit if cell.model == "cnn" else b.train_limit
    test = b.cnn_test_limit if cell.model == "cnn" else b.test_limit
    n_train, n_test = min(n_train, limit or n_train), min(n_test, test or n_test)
    epochs = b.cnn_epochs if cell.model == "cnn" else b.epochs
    trainer = REGIMES[cell.regime].trainer
    rate = _RATE[trainer] * (12 / (b.train_steps + 2) if trainer in ("adversarial", "constraint")
                             else 1.0)
    slower = _SLOWER.get(cell.regime, (1.0, 1.0))[0 if _native_built() else 1]
    train_s = epochs * n_train * slow * slower / rate
    eval_s = 0.016 * n_test * slow * (b.eval_steps + b.samples / 2) / 100 * len(b.eps) / 6
    return {"train": train_s, "evaluate": eval_s, "verify": verify_s}


def estimate_seconds(cell: Cell, plan: Plan) -> float:
    return sum(estimate_parts(cell, plan).values())


def training_left(cell: Cell, plan: Plan, parts: dict[str, float]) -> float:
    """Seconds of the cell's training left: its estimate by the epochs its folder lacks."""
    if cell_trained(plan, cell):
        return 0.0
    epochs = _epochs(plan, cell)
    done = _epochs_saved(cell_dir(plan.out, cell))
    return parts["train"] * max(epochs - done, 0) / max(epochs, 1)


def work_left(cell: Cell, plan: Plan, parts: dict[str, float]) -> float:
    """Seconds of the cell's work that its folder does not hold yet: the training's epochs
    left (history.json), the attacks not evaluated, the verifications not saved; so that a
    resumed cell's estimate is what it still has to do (estimate_parts is the whole cell)."""
    folder = cell_dir(plan.out, cell)
    if (folder / "result.json").exists():  # estimate_parts already counts what is left
        return sum(parts.values())
    train = training_left(cell, plan, parts)
    names = list(ATTACKS)
    evaluate = parts["evaluate"] * sum(not attack_evaluated(plan, cell, n) for n in names)
    verify = parts["verify"] * sum(not (folder / f"verify-{n.lower()}.json").exists()
                                   for n in names)
    return train + (evaluate + verify) / len(names)


def cell_time_left(status: dict | None, parts: dict[str, float], scale: float,
                   now: float) -> float:
    """Seconds a running cell has left: its training at its own epoch rate in this run, its
    evaluation and verification from the (scaled) estimates, by the share of attacks left."""
    if not status:
        return scale * sum(parts.values())
    names = list(ATTACKS)
    i = names.index(status["attack"]) if status.get("attack") in names else 0
    left = (len(names) - i) / len(names)
    if status.get("phase") == "verify":
        return scale * parts["verify"] * left
    if status.get("phase") == "evaluate":
        return scale * (parts["evaluate"] * left + parts["verify"])
    after = scale * (parts["evaluate"] + parts["verify"])
    trained = status.get("epoch", 0) - status.get("from_epoch", 0)  # epochs done in this run
    if trained > 0:
        per_epoch = (status["time"] - status["started"]) / trained
        return max(per_epoch * (status["epochs"] - status["epoch"]) - (now - status["time"]),
                   0.0) + after
    # no epoch yet in this run: the estimate of the epochs left (a resumed cell's status
    # starts at the epochs it holds), less the time spent
    epochs = status.get("epochs") or 1
    left = max(epochs - status.get("epoch", 0), 0) / epochs
    return max(scale * parts["train"] * left - (now - status.get("started", now)), 0.0) + after


def grid_time_left(running: list[float], queued: list[float], jobs: int) -> float:
    """When the grid ends: each running cell holds a worker for its time left, and the queued
    cells go, in their order, to whichever worker frees first."""
    workers = sorted(running)[-jobs:] if running else []
    workers += [0.0] * (jobs - len(workers))
    heapq.heapify(workers)
    for s in queued:
        heapq.heappush(workers, heapq.heappop(workers) + s)
    return max(workers)


def longest_first(cells: list[Cell], estimate: dict[Cell, float]) -> list[Cell]:
    """The order cells start in when several run at once: longest first, so the long cells
    overlap and the short ones fill the gaps at the end (equal estimates keep their order)."""
    return sorted(cells, key=lambda c: -estimate[c])


def check_folder(plan: Plan) -> None:
    """A folder holds one budget's results: refuse to mix settings, record them otherwise."""
    path = Path(plan.out) / "settings.json"
    mine = plan.settings()
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise InputError(f"{path} is not readable JSON; move it away") from None
        mine = json.loads(json.dumps(mine))
        if _older_folder(saved, mine):  # made before verification joined the budget
            atomic_write_text(path, json.dumps(mine, indent=1))
            return
        if saved != mine:
            diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
            raise InputError(f"{plan.out} holds results made with other settings ({', '.join(diff)}"
                             f"; budget {saved.get('budget', {}).get('name')} there, "
                             f"{plan.budget.name} now): use another --out or the same options")
    else:
        atomic_write_text(path, json.dumps(mine, indent=1))


def _older_folder(saved: dict, mine: dict) -> bool:
    """Settings saved before the budget had the verify_* fields, equal in everything else: the
    cells' training and evaluation stand, and verification is added to them."""
    sb, mb = saved.get("budget", {}), mine.get("budget", {})
    added = {k for k in mb if k.startswith("verify_")}
    if not added or added & set(sb):
        return False
    return ({**saved, "budget": sb} ==
            {**mine, "budget": {k: v for k, v in mb.items() if k not in added}})


def _fmt(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def _reported_since(s: dict | None, t: float) -> bool:
    """Has the cell reported since time t (a status older than the grid is stale)?"""
    try:
        return float(s["time"]) >= t
    except (KeyError, TypeError, ValueError):
        return False


def _training_scale(status: dict, parts: dict, before: float = 1.0) -> float:
    """Measured / estimated seconds per epoch of the cells training now (`before` when none
    has trained an epoch in this run)."""
    ratios = []
    for c, s in status.items():
        trained = (s or {}).get("epoch", 0) - (s or {}).get("from_epoch", 0)
        if s and s.get("phase") == "train" and trained > 0 and parts[c]["train"] > 0:
            ratios.append((s["time"] - s["started"]) / trained / (parts[c]["train"] / s["epochs"]))
    return sum(ratios) / len(ratios) if ratios else before


def _running_line(cell: Cell, s: dict | None) -> str:
    try:
        what = (f"epoch {s['epoch']}/{s['epochs']}" if s["phase"] == "train"
                else f"{'verifying' if s['phase'] == 'verify' else 'evaluating'} {s['attack']}"
                ) + f", {_fmt(time.time() - s['started'])}"
    except (KeyError, TypeError):
        what = "starting"
    return f"{cell.id} ({what})"


def run_grid(cells: list[Cell], plan: Plan, jobs: int = 1, log=print,
             poll_s: float = 30.0) -> dict:
    """Run the cells not done yet, `jobs` at a time; returns {"done", "skipped", "failed"}."""
    out = Path(plan.out)
    out.mkdir(parents=True, exist_ok=True)
    check_folder(plan)
    todo = [c for c in cells if not cell_complete(plan, c)]
    if todo and plan.budget.verify_points:  # before hours of training, not after
        from .verify import pick_solver
        pick_solver("auto")  # MissingExtra naming the `verify` extra when no solver is there
    skipped = [c.id for c in cells if c not in todo]
    if skipped:
        log(f"{len(skipped)} cell(s) already done, skipped: {', '.join(skipped)}")
    if not todo:
        return {"done": [], "skipped": skipped, "failed": {}}
    # load (and cache) every dataset once before the workers start, so two processes never
    # decode the same GTSRB archive at the same time
    for ds in sorted({c.dataset for c in todo}):
        for model in sorted({c.model for c in todo if c.dataset == ds}):
            load_data(Cell(ds, "baseline", model), plan)
    parts = {c: estimate_parts(c, plan) for c in todo}
    estimate = {c: work_left(c, plan, parts[c]) for c in todo}
    if jobs > 1:
        todo = longest_first(todo, estimate)
    log(f"{len(todo)} cell(s) to run with {jobs} job(s) x {plan.threads} thread(s), budget "
        f"{plan.budget.name}; first estimate "
        f"{_fmt(grid_time_left([], [estimate[c] for c in todo], jobs))}")
    done, failed = [], {}
    spent, predicted = 0.0, 0.0  # calibration: measured / estimated over finished cells
    trained_scale = [1.0]  # the last scale the running cells' training gave

    def eta(remaining, status=None):
        """Time left: running cells by their own progress (cell_time_left), queued ones by the
        first estimates scaled by measured / estimated seconds of the finished cells (each
        timed on its own), or before any finished, by the running cells' training rate (the
        last one seen, while none is training)."""
        now = time.time()
        status = status or {}  # running cell -> its status.json
        trained_scale[0] = _training_scale(status, parts, trained_scale[0])
        scale = spent / predicted if predicted else trained_scale[0]
        left = [cell_time_left(s, parts[c], scale, now) for c, s in status.items()]
        queued = [scale * estimate[c] for c in remaining if c not in status]
        return _fmt(grid_time_left(left, queued, jobs))

    t_grid = time.time()
    if jobs == 1:
        import torch

        threads_before = torch.get_num_threads()
        torch.set_num_threads(plan.threads)  # what a worker process does
        try:
            for i, cell in enumerate(todo):
                log(f"[{i + 1}/{len(todo)}] {cell.id}: {cell.label} (time left about "
                    f"{eta(todo[i:])})")
                start = time.time()
                try:
                    r = run_cell(cell, plan, log=log)
                except Exception as e:  # noqa: BLE001 - one failed cell must not stop the grid
                    failed[cell.id] = f"{type(e).__name__}: {e}"
                    log(f"  {cell.id} FAILED: {failed[cell.id]}")
                    continue
                spent += time.time() - start
                predicted += estimate[cell]
                done.append(cell.id)
                log(f"  {cell.id} done in {_fmt(time.time() - start)}: clean accuracy "
                    f"{100 * r['clean_accuracy']:.1f}%")
        finally:
            torch.set_num_threads(threads_before)
    else:
        done, failed = _run_units(todo, plan, jobs, parts, log, poll_s, t_grid)
    log(f"grid finished in {_fmt(time.time() - t_grid)}: {len(done)} done, {len(failed)} failed")
    record_run(out, {"started": t_grid, "seconds": time.time() - t_grid, "jobs": jobs,
                     "threads": plan.threads, "budget": plan.budget.name, "done": done,
                     "failed": sorted(failed), "native": _native().cached_status(),
                     "uniform": _uniform_numbers()})
    return {"done": done, "skipped": skipped, "failed": failed}


def startable(blocked: dict[Cell, list[Unit]], running: list[Unit],
              estimate: dict[Unit, float]) -> list[Unit]:
    """The units that may start now, in the order to start them: a cell's attacks once its
    training has ended, its result once nothing of it runs and no attack is left; each cell's
    result first (short, and it ends the cell), then the longest first. blocked: per cell, the
    units not yet started, in units_of's order."""
    busy = {u.cell for u in running}
    training = {u.cell for u in running if u.part == "train"}
    ready = []
    for c, us in blocked.items():
        if not us:
            continue
        if us[0].part == "train":  # (a cell is never busy before its training)
            ready.append(us[0])
        elif us[0].part == "result":  # every attack has started, and ended unless busy
            ready += [] if c in busy else [us[0]]
        elif c not in training:
            ready += [u for u in us if u.part != "result"]
    return sorted(ready, key=lambda u: (u.part != "result", -estimate[u]))


def _run_units(cells: list[Cell], plan: Plan, jobs: int, parts: dict, log, poll_s: float,
               t_grid: float) -> tuple[list[str], dict[str, str]]:
    """Run the cells' units in `jobs` processes. A unit starts when its cell's earlier units
    have ended (the attacks after the training, the result after the attacks); of those that
    may start, the longest first (each cell's result first: it is short and ends the cell), so
    the long trainings overlap and the attacks fill the end. Returns (done cell ids, failed
    cell id -> why)."""
    import multiprocessing as mp

    out = Path(plan.out)
    blocked = {c: units_of(c, plan) for c in cells}  # per cell, the units not yet started
    est = {u: training_left(c, plan, parts[c]) if u.part == "train" else
           unit_estimate(u, parts[c], u.part in ATTACKS and attack_evaluated(plan, c, u.part))
           for c, us in blocked.items() for u in us}
    running: dict = {}  # future -> (unit, start time)
    cell_seconds = {c: 0.0 for c in cells}  # its units' seconds in this run
    done, failed = [], {}
    spent, predicted = 0.0, 0.0  # calibration: measured / estimated over finished units
    trained_scale = [1.0]

    def eta(now: float, status: dict) -> str:
        train_status = {u.cell: s for u, s in status.items() if u.part == "train"}
        train_parts = {u.cell: parts[u.cell] for u in status if u.part == "train"}
        trained_scale[0] = _training_scale(train_status, train_parts, trained_scale[0])
        scale = spent / predicted if predicted else trained_scale[0]
        left = [unit_time_left(status.get(u), est[u], scale, t, now)
                for u, t in running.values()]
        queued = [scale * est[u] for us in blocked.values() for u in us]
        return _fmt(grid_time_left(left, queued, jobs))

    crashes: dict[Unit, int] = {}  # unit -> times a worker died while it ran

    def settle(f) -> bool:
        """Take one finished unit's outcome; False when its worker process died (the pool is
        then broken: the unit goes back in the queue once, and fails the second time)."""
        nonlocal spent, predicted
        u, _t = running.pop(f)
        try:
            r = f.result()
        except BrokenProcessPool:
            crashes[u] = crashes.get(u, 0) + 1
            if crashes[u] < 2:
                blocked[u.cell].insert(len(blocked[u.cell]) if u.part == "result" else 0, u)
                log(f"  {u.cell.id}: a worker process died during its {u.part} (killed, out "
                    "of memory or crashed); it runs again in a new process")
                return False
            fail(u, "a worker process died twice while it ran (killed, out of memory or "
                    "crashed)")
            return False
        except Exception as e:  # noqa: BLE001 - one failed cell must not stop the grid
            fail(u, f"{type(e).__name__}: {e}")
            return True
        cell_seconds[u.cell] += r["seconds"]
        if u.part != "result":
            spent += r["seconds"]
            predicted += est[u]
        if u.part == "train":
            log(f"  {u.cell.id} trained in {_fmt(r['seconds'])}")
        elif u.part == "result":
            done.append(u.cell.id)
            log(f"  {u.cell.id} done ({_fmt(cell_seconds[u.cell])} of work in this "
                f"run): clean accuracy {100 * r['clean_accuracy']:.1f}%")
        return True

    def fail(u: Unit, why: str) -> None:
        if u.part in ("train", "result"):
            failed[u.cell.id] = why
            blocked[u.cell] = []  # nothing of the cell can follow
            log(f"  {u.cell.id} FAILED ({u.part}): {why}")
        else:  # the result unit tries the attack again and records what it can
            log(f"  {u.cell.id}: {u.part} failed ({why}); tried again with the cell's result")

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"))

    def show() -> None:
        """The progress line: what runs (each unit's status file) and the time left."""
        status = {u: _read_unit_status(out, u) for u, _t in running.values()}
        status = {u: s for u, s in status.items() if _reported_since(s, t_grid)}
        log(f"[{len(done) + len(failed)}/{len(cells)} cells finished, "
            f"{_fmt(time.time() - t_grid)}] running: "
            + ", ".join(_running_line(u.cell, status.get(u)) for u, _t in running.values())
            + f"; time left about {eta(time.time(), status)}")

    def recover(pool: ProcessPoolExecutor) -> ProcessPoolExecutor:
        """A worker died, so the pool is broken: settle the units it was running (they failed
        with it; each goes back in the queue once) and start a new pool."""
        rest, _ = wait(list(running))
        for f in rest:
            settle(f)
        pool.shutdown(wait=False, cancel_futures=True)
        return new_pool()

    pool = new_pool()
    try:
        polled = False
        while True:
            for u in startable(blocked, [u for u, _t in running.values()], est)[:jobs - len(running)]:
                try:
                    f = pool.submit(run_unit, u, plan, cell_seconds[u.cell])
                except BrokenProcessPool:  # a worker died since the last wait
                    pool = recover(pool)
                    f = pool.submit(run_unit, u, plan, cell_seconds[u.cell])
                blocked[u.cell].remove(u)
                running[f] = (u, time.time())
            if not running:
                break
            if polled:  # after the units that could start have started
                show()
            finished, _ = wait(list(running), timeout=poll_s, return_when=FIRST_COMPLETED)
            polled = True
            if not all([settle(f) for f in finished]):  # a worker died: the pool is broken
                pool = recover(pool)
    except BaseException:  # an interrupt, or a bug here: no worker left running
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return done, failed


def _read_unit_status(out, unit: Unit) -> dict | None:
    try:
        s = json.loads((cell_dir(out, unit.cell) / unit.status_name).read_text())
        return s if isinstance(s, dict) else None
    except (OSError, ValueError):
        return None


def record_run(out: Path, run: dict) -> None:
    """Append one grid run (when, how long, jobs x threads, the cells it finished) to
    DIR/runs.json, so the report can say what each run of the folder took."""
    path = out / "runs.json"
    try:
        runs = json.loads(path.read_text())
        runs = runs if isinstance(runs, list) else []
    except (OSError, ValueError):
        runs = []
    atomic_write_text(path, json.dumps(runs + [run], indent=1))


# ------------------------------------------------------------------ the command

def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .options import count

    import textwrap

    p.description = textwrap.fill(
        "Train and evaluate the paper's grid (7 regimes per dataset, SCR training also under "
        "the authors' code's definition, and E4's CNN on Fashion-MNIST), each network attacked "
        "with SR, SCR, LR and the authors' SCR; each cell is resumable and skipped when done; "
        "writes DIR/report.md, figures and DIR/results.json.", 78)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = "budgets:\n" + "\n".join(textwrap.fill(f"{k}: {v.describe()}", 78,
                                                        initial_indent="  ",
                                                        subsequent_indent="    ")
                                          for k, v in BUDGETS.items())
    p.add_argument("--out", required=True, metavar="DIR", help="results folder (resumable)")
    p.add_argument("--dataset", default=",".join(DATASETS), metavar="NAMES",
                   help="comma-separated: fashion-mnist, gtsrb (default both)")
    p.add_argument("--budget", default="quick", choices=list(BUDGETS),
                   help="paper: the paper's settings; quick: scaled down (see below); smoke: "
                        "seconds, for tests")
    p.add_argument("--jobs", type=count(1), default=None,
                   help="processes at once (default: the number of cores, at most one a "
                        "cell); with 2 or more, each cell's training, attacks and result are "
                        "separate units, longest first, so one cell's attacks run side by side")
    p.add_argument("--threads", type=count(1), default=None,
                   help="torch threads per job (default max(1, cores // jobs))")
    p.add_argument("--cells", metavar="IDS", help="comma-separated ids or globs, e.g. "
                   "fashion-mnist/baseline,'gtsrb/*' (default: every cell)")
    p.add_argument("--list", action="store_true", help="list the cells (and which are done); run none")
    p.add_argument("--report-only", action="store_true",
                   help="assemble the report from the cells in --out; train nothing")
    p.add_argument("--gtsrb-size", type=int, default=48, choices=[32, 48],
                   help="GTSRB image side (default 48, the authors'; the shared copy is 32x32 "
                        "upsampled)")
    p.add_argument("--data-dir", metavar="DIR", help="where the datasets are")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="where the cells train and evaluate (default auto: a GPU where there "
                        "is one, else the CPU; the jobs share it)")


def plan_from_args(args) -> tuple[Plan, list[Cell], int]:
    datasets = _list(args.dataset)
    bad = [d for d in datasets if d not in DATASETS]
    if bad or not datasets:
        raise InputError(f"--dataset {args.dataset!r}: choose from {', '.join(DATASETS)}, "
                         "separated by commas")
    cells = select(grid(tuple(datasets)), _list(args.cells) if args.cells else None)
    cores = os.cpu_count() or 1
    # no idle processes: by default one a cell (its training has the cores to itself); a --jobs
    # asked for is kept up to the units that can run at once (a cell's attacks run side by side)
    jobs = max(1, min(args.jobs, len(cells) * len(ATTACKS)) if args.jobs
               else min(cores, len(cells)))
    threads = args.threads or max(1, cores // jobs)
    from .distributed import resolve_device

    plan = Plan(BUDGETS[args.budget], str(args.out), args.data_dir, args.gtsrb_size, threads,
                tuple(datasets), str(resolve_device(args.device)))
    return plan, cells, jobs


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .report import write_report

    if args.report_only:
        if not Path(args.out).is_dir():
            raise InputError(f"--report-only: {args.out} is not a folder of reproduce results")
        paths = write_report(args.out)
        print(f"report: {paths['report']}\nresults: {paths['results']}")
        return 0
    plan, cells, jobs = plan_from_args(args)
    if args.list:
        for c in cells:
            state = "done" if (cell_dir(plan.out, c) / "result.json").exists() else "todo"
            print(f"{c.id:<40} {state:<5} {c.label}  (~{_fmt(estimate_seconds(c, plan))} on one core)")
        return 0
    print(f"budget {plan.budget.name}: {plan.budget.describe()}", flush=True)
    t0 = time.time()

    def log(msg):
        print(msg, flush=True)

    status = run_grid(cells, plan, jobs=jobs, log=log)
    paths = write_report(plan.out)
    print(f"report: {paths['report']}\nresults: {paths['results']}\nwall time {_fmt(time.time() - t0)}")
    if status["failed"]:
        print("failed cells (rerun the same command to retry them):\n" + "\n".join(
            f"  {k}: {v}" for k, v in status["failed"].items()), file=sys.stderr)
        return 1
    return 0


def _register() -> None:
    from .options import command

    command("reproduce", help="the paper's whole experiment: train and evaluate the grid, "
            "resumable, then write the report", arguments=add_arguments)(cmd_reproduce)


_register()

__all__ = ["ATTACKS", "REGIMES", "E4_REGIMES", "BUDGETS", "Budget", "Cell", "Plan", "grid",
           "select", "run_cell", "run_grid", "cmd_reproduce", "add_arguments"]
