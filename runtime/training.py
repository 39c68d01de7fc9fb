"""Training regimes, all driven by a compiled property: the paper's whole menu in one loop.

    baseline          cross-entropy
    augment-uniform   cross-entropy on each image plus 2 uniform samples from the spec's domain
    augment-fgsm      ... plus 2 FGSM points of the spec (each from a uniform random start)
    adversarial       cross-entropy at the worst point the spec's search finds (PGD or FGSM)
    constraint        alpha * cross-entropy + beta * the spec's loss under a logic

Checkpoints are written atomically at the end of every epoch with every random state, so a
killed run resumed with `resume=True` reaches the same final weights as an uninterrupted one.
They hold CPU tensors and load on any device. `device=` places the model and the data (once);
`ranks=` (runtime/distributed.py) trains one model with DistributedDataParallel: each rank
takes its shard of every global batch, and the weights are those of one process on the same
batches, up to float rounding (docs/distributed.md).
The regimes are entries of TRAINING_REGIMES (see the end of this module); a new regime is one
registered function of the Trainer.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from robustspec.compiler import FGSM, Property, RandomSampling
from robustspec.compiler.registry import Registry
from robustspec.dsl.errors import CheckpointError, InputError, TrainingError

from . import arguments, distributed
from .arguments import property_args  # noqa: F401  (public here too, as before)
from .files import atomic_write, atomic_write_text, remove_stale_temps
from .registries import Names

# name -> a function of the Trainer returning its step (x, y) -> (loss, logits on x)
TRAINING_REGIMES: Registry = Registry(
    "regime", lambda message: InputError(message.replace("(available:", "(regimes:")))
REGIMES = Names(TRAINING_REGIMES)  # the names, in order; a live view of the registry


ADVERSARIES = ("pgd", "fgsm")  # adversarial training's searches


@dataclass
class TrainConfig:
    """Defaults are the paper's (Adam, lr 1e-4, batch 128, alpha 1, beta 0.2, 50 PGD steps of 0.01)."""

    regime: str = "baseline"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-4
    alpha: float = 1.0
    beta: float = 0.2
    logic: str = "dl2"
    search_steps: int = 50
    step_size: float = 0.01
    adversary: str = "pgd"  # adversarial training: "pgd" or "fgsm"
    seed: int = 0
    params: dict = field(default_factory=dict)  # spec parameter overrides, e.g. {"eps": 0.1}

    def __post_init__(self):
        """Checks every field with the runtime's shared argument checks (InputError)."""
        self.regime = TRAINING_REGIMES.resolve(self.regime)
        if self.adversary not in ADVERSARIES:
            raise InputError(f"adversary must be one of {', '.join(ADVERSARIES)}, not "
                             f"{self.adversary!r}")
        whole = all(isinstance(v, int) and not isinstance(v, bool)
                    for v in (self.epochs, self.batch_size, self.search_steps))
        lr_ok = isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0
        if not whole or not lr_ok or self.epochs < 1 or self.batch_size < 1 \
                or self.search_steps < 0:
            raise InputError("epochs and batch_size must be >= 1, lr > 0 and steps >= 0 "
                             f"(got epochs={self.epochs!r}, batch_size={self.batch_size!r}, "
                             f"lr={self.lr!r}, search_steps={self.search_steps!r})")
        arguments.step_size(self.step_size, "step_size")
        arguments.radius(self.alpha, "alpha")  # weights: finite and >= 0
        arguments.radius(self.beta, "beta")
        self.params = arguments.params(self.params)
        if self.regime == "constraint":
            from robustspec.compiler.logics import get_logic
            if not get_logic(self.logic).differentiable:
                raise InputError(f"the logic '{self.logic}' is the exact checker: its values have "
                                 "no gradient, so it cannot train; pick a differentiable logic "
                                 "(dl2, goedel, lukasiewicz, product, yager, stl)")


def atomic_save(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename: never a torn checkpoint."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint's contents, loaded with weights_only (no pickled code is ever run)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn or foreign file
        raise CheckpointError(f"{path} is not a robustspec checkpoint ({_load_failure(e)})") from None


def _load_failure(e: Exception) -> str:
    """Why torch.load refused a file, without torch's advice to load it unsafely."""
    import pickle

    text = str(e)
    if isinstance(e, pickle.UnpicklingError) or "weights_only" in text:
        what = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        return ("it holds pickled Python objects" + (f" ({what[1]})" if what else "")
                + ", which robustspec never loads because loading them can run arbitrary code")
    return f"{type(e).__name__}: {text}"


@dataclass
class EpochStats:
    epoch: int
    loss: float
    accuracy: float
    examples_per_s: float
    seconds: float


class Trainer:
    """Trains `model` under one regime. `prop` is required for every regime but baseline.

    device: "auto", "cpu", "cuda", "cuda:N" or a torch.device (None: where the model is).
    ranks: this process's place among data-parallel ranks (distributed.start()); None: alone.
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, prop: Property | None = None,
                 checkpoint_dir: str | Path | None = None, model_info: dict | None = None,
                 progress: bool | None = None, device: str | torch.device | None = None,
                 ranks: distributed.Ranks | None = None):
        if config.regime != "baseline" and prop is None:
            raise TrainingError(f"regime '{config.regime}' needs a spec: pass --spec FILE --property NAME")
        if not isinstance(model, torch.nn.Module):
            raise InputError(f"train: the model must be a torch.nn.Module, not {type(model).__name__}")
        if not any(p.requires_grad for p in model.parameters()):
            raise InputError(f"train: the model ({type(model).__name__}) has no trainable "
                             "parameters; nothing to train")
        self.ranks = ranks if ranks is not None else distributed.SINGLE
        self.device = distributed.place(model, device, self.ranks)
        self.model = model
        # the forward pass whose loss is back-propagated (DDP's: gradients all-reduced)
        self.net = distributed.data_parallel(model, self.device, self.ranks)
        self._shard: distributed.Shard | None = None  # this rank's rows of the current batch
        self.cfg = config
        self.prop = prop
        self.dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.model_info = model_info or {}
        self.data_id: dict | None = None  # set by fit(): which training set this run uses
        self.progress = progress
        self.opt = adam(model.parameters(), config.lr)
        self.shuffle_rng = torch.Generator().manual_seed(config.seed)
        self.search_rng = torch.Generator().manual_seed(config.seed + 1)
        self.history: list[dict] = []
        self.epoch = 0
        self._step = self._regime_step()

    # ------------------------------------------------------------ regimes
    def _regime_step(self) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        return TRAINING_REGIMES.get(self.cfg.regime)(self)

    def cross_entropy(self, x: torch.Tensor, y: torch.Tensor):
        logits = self.net(x)
        return F.cross_entropy(logits, y), logits

    def points(self, x: torch.Tensor, y: torch.Tensor, search) -> torch.Tensor:
        """The point the property's search finds for each example (one quantified input)."""
        prop = self.prop
        found = prop.search(self.model, search=self.sharded(search), params=self.cfg.params or None,
                            logic=self.cfg.logic, generator=self.search_rng,
                            **property_args(prop, x, y))
        if len(found) != 1:
            raise TrainingError(f"property '{prop.name}' quantifies {list(found)}; data "
                                "augmentation and adversarial training need exactly one "
                                "quantified input")
        return next(iter(found.points.values())).detach()

    def sharded(self, search):
        """`search` on this rank's rows of the batch, its random starts drawn for the global
        batch on the CPU generator: the same points on any device and any number of ranks."""
        return distributed.shard_search(search, self._shard, self.ranks)

    # ------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path | None:
        return self.dir / "last.pt" if self.dir else None

    def state(self) -> dict:
        return {"format": "robustspec-checkpoint-1",
                "model": distributed.to_cpu(self.model.state_dict()),
                "optimizer": distributed.to_cpu(self.opt.state_dict()), "epoch": self.epoch,
                "shuffle_rng": self.shuffle_rng.get_state(), "search_rng": self.search_rng.get_state(),
                "torch_rng": torch.get_rng_state(), "history": self.history,
                "config": json.dumps(asdict(self.cfg)), "model_info": json.dumps(self.model_info),
                "property": json.dumps(self._property_id()), "data": json.dumps(self.data_id)}

    def _property_id(self) -> dict | None:
        if self.prop is None:
            return None
        return {"spec": self.prop.spec_name, "name": self.prop.name,
                "fingerprint": self.prop.fingerprint()}

    def save(self) -> None:
        """Write last.pt and history.json (rank 0 only: the ranks hold the same state)."""
        if self.checkpoint_path is not None and self.ranks.is_main:
            atomic_save(self.state(), self.checkpoint_path)
            atomic_write_text(self.dir / "history.json", json.dumps(self.history, indent=1))

    def restore(self, ckpt: dict) -> None:
        try:
            self._restore(ckpt)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            raise CheckpointError(f"{self.checkpoint_path} is not a robustspec training checkpoint "
                                f"({type(e).__name__}: {e}); move it away or start a new --out "
                                "folder") from None

    def _restore(self, ckpt: dict) -> None:
        if not isinstance(ckpt, dict) or ckpt.get("format") != "robustspec-checkpoint-1":
            raise ValueError("no format marker")
        saved = json.loads(ckpt["config"])
        mine = asdict(self.cfg)
        differ = {k for k in mine if k not in ("epochs",) and saved.get(k) != mine[k]}
        if differ:
            what = ", ".join(f"{k}: {saved.get(k)} then, {mine[k]} now" for k in sorted(differ))
            raise TrainingError(f"the checkpoint was made with other settings ({what}); resume "
                                "with the same options or start a new --out folder")
        saved_prop, mine_prop = json.loads(ckpt["property"]), self._property_id()
        same = (saved_prop is None) == (mine_prop is None) and (
            saved_prop is None or (saved_prop["name"] == mine_prop["name"] and
                                   saved_prop.get("fingerprint") == mine_prop["fingerprint"]))
        if not same:
            shown = {k: v for k, v in (saved_prop or {}).items() if k != "fingerprint"} or None
            raise TrainingError(f"the checkpoint was trained with property {shown}, which differs "
                                f"from {mine_prop and mine_prop['name']!r} from "
                                f"{mine_prop and mine_prop['spec']} as given now (its formula, "
                                "domains or parameters changed); resume with the same spec and "
                                "--param values or start a new --out folder")
        saved_data = json.loads(ckpt.get("data") or "null")
        if saved_data is not None and self.data_id is not None and saved_data != self.data_id:
            raise TrainingError(f"the checkpoint was trained on other data ({saved_data['n']} "
                                f"examples then, {self.data_id['n']} now, or other contents); "
                                "resume with the same --dataset/--limit options or start a new "
                                "--out folder")
        saved_model = json.loads(ckpt["model_info"])
        if self.model_info and saved_model and saved_model != self.model_info:
            raise TrainingError(f"the checkpoint holds another model ({saved_model}); resume with the "
                                "same --model and data options or start a new --out folder")
        try:
            self.model.load_state_dict(ckpt["model"])
            self.opt.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"the checkpoint does not fit this model: {e}") from None
        self.epoch = int(ckpt["epoch"])
        self.shuffle_rng.set_state(ckpt["shuffle_rng"])
        self.search_rng.set_state(ckpt["search_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        self.history = list(ckpt["history"])

    # ------------------------------------------------------------ the loop
    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Shapes, dtypes, and one forward pass: bad inputs are InputErrors before any step."""
        arguments.batch(x, y, "train")
        arguments.model_fits(self.model, x, y, "train")
        if self.prop is not None:
            with torch.no_grad():
                arguments.domains_not_empty(self.prop, self.model, x, y, self.cfg.params or None,
                                            "train")

    def fit(self, x: torch.Tensor, y: torch.Tensor, resume: bool = False,
            on_epoch: Callable[[EpochStats], None] | None = None,
            overwrite: bool = False) -> list[dict]:
        """Train for the configured epochs (continuing from the last checkpoint if resume).

        A checkpoint folder that holds another run's last.pt is refused unless resume (go on
        from it) or overwrite (replace it) is given: a finished run is never lost silently."""
        from tqdm.auto import tqdm

        arguments.batch(x, y, "train")
        self.data_id = data_fingerprint(x, y)
        x, y = x.to(self.device), y.to(self.device)  # once: these datasets fit
        self._check_inputs(x, y)
        distributed.agree(json.dumps(self.data_id), self.ranks, "the training data")
        path = self.checkpoint_path

        def prepare():  # on rank 0; every rank gets its checkpoint (or its refusal)
            if path is not None:
                remove_stale_temps(self.dir)
            refuse_overwrite(path, resume, overwrite)
            return load_checkpoint(path) if resume and path is not None and path.exists() else None
        ckpt = distributed.from_main(prepare, self.ranks)
        if ckpt is not None:
            self.restore(ckpt)
        n = len(x)
        bs = self.cfg.batch_size
        batches = math.ceil(n / bs)
        while self.epoch < self.cfg.epochs:
            epoch = self.epoch + 1
            self.model.train()
            order = torch.randperm(n, generator=self.shuffle_rng)
            total_loss, correct, seen = 0.0, 0, 0
            start = time.perf_counter()
            bar = tqdm(total=batches, desc=f"{self.cfg.regime} epoch {epoch}/{self.cfg.epochs}",
                       unit="batch", leave=False, dynamic_ncols=True,
                       disable=True if not self.ranks.is_main else
                       None if self.progress is None else not self.progress)
            for b in range(batches):
                idx = order[b * bs:(b + 1) * bs]
                shard = self._shard = distributed.batch_shard(len(idx), self.ranks)
                mine = idx[shard.rows].to(self.device)
                xb, yb = x[mine], y[mine]
                loss, logits = self._step(xb, yb)
                # the global batch's loss sum, correct count and size (summed over the ranks)
                tally = distributed.all_sum(torch.stack([
                    loss.detach().double() * shard.real,
                    (logits.argmax(-1) == yb)[:shard.real].sum().double(),
                    torch.tensor(float(shard.real), dtype=torch.float64, device=loss.device)]),
                    self.ranks).tolist()
                if not math.isfinite(tally[0]):
                    bar.close()
                    kept = (f"the last good checkpoint ({self.checkpoint_path}, epoch {self.epoch}) "
                            "is kept" if self.checkpoint_path and self.checkpoint_path.exists()
                            else "no checkpoint was written yet")
                    raise TrainingError(f"the loss became {tally[0] / tally[2]} at epoch {epoch}, "
                                        f"batch {b + 1}/{batches}; {kept}. Try a lower --lr or "
                                        "--beta.")
                if self.ranks.distributed:  # DDP averages over ranks: weigh by the shard's rows
                    loss = loss * (shard.weight * self.ranks.world)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                total_loss += tally[0]
                correct += int(tally[1])
                seen += int(tally[2])
                rate = seen / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}",
                                ex_s=f"{rate:.0f}", refresh=False)
                bar.update()
            bar.close()
            secs = time.perf_counter() - start
            stats = EpochStats(epoch, total_loss / seen, correct / seen, seen / secs, secs)
            self.history.append(asdict(stats))
            self.epoch = epoch
            self.save()
            if on_epoch:
                on_epoch(stats)
        return self.history


def adam(params, lr: float) -> torch.optim.Optimizer:
    """The paper's Adam, in torch's fused kernel where every parameter allows it (floating point,
    on the CPU or a GPU): one call per step instead of about ten small ops per parameter tensor
    (133 against 270 us a step for the paper's MLP: bench_training_speed.py --only micro). Its
    weights differ from the for-loop Adam's in the last bits (the same update, computed in
    another order)."""
    params = list(params)
    if params and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, ValueError):  # a torch or device without the fused kernel
            pass
    return torch.optim.Adam(params, lr=lr)


# ------------------------------------------------------------------ the regimes
# Each entry takes the Trainer and returns its step (x, y) -> (loss, logits on the clean x).
# A new regime is one more `@TRAINING_REGIMES.register(name, help=...)` function.

@TRAINING_REGIMES.register("baseline", help="cross-entropy")
def _baseline(t: Trainer):
    return t.cross_entropy


def _augment(t: Trainer, searches):
    def augment(x, y):
        extra = [t.points(x, y, s) for s in searches]
        loss, logits = t.cross_entropy(torch.cat([x] + extra), y.repeat(len(extra) + 1))
        return loss, logits[: len(x)]
    return augment


@TRAINING_REGIMES.register("augment-uniform", help="cross-entropy on each image plus 2 uniform "
                           "samples from the spec's domain")
def _augment_uniform(t: Trainer):
    return _augment(t, [RandomSampling(samples=1), RandomSampling(samples=1)])


@TRAINING_REGIMES.register("augment-fgsm", help="cross-entropy on each image plus 2 FGSM points "
                           "of the spec, each from a uniform random start")
def _augment_fgsm(t: Trainer):
    # from the center the gradient can vanish (SR's norm_inf(f(x) - f(x0)) is flat at x = x0)
    # and FGSM would return x0 itself: hence the random starts
    return _augment(t, [FGSM(random_start=True), FGSM(random_start=True)])


@TRAINING_REGIMES.register("adversarial", help="cross-entropy at the worst point the spec's "
                           "search finds (--adversary pgd or fgsm)")
def _adversarial(t: Trainer):
    cfg = t.cfg
    search = arguments.pgd(cfg.search_steps, cfg.step_size) if cfg.adversary == "pgd" \
        else FGSM(random_start=True)  # a random start, for the reason given above

    def adversarial(x, y):
        loss, _ = t.cross_entropy(t.points(x, y, search), y)
        with torch.no_grad():
            clean = t.model(x)
        return loss, clean
    return adversarial


@TRAINING_REGIMES.register("constraint", help="alpha * cross-entropy + beta * the spec's loss "
                           "under a logic")
def _constraint(t: Trainer):
    cfg, prop = t.cfg, t.prop
    search = arguments.pgd(cfg.search_steps, cfg.step_size)

    def constraint(x, y):
        loss_ce, logits = t.cross_entropy(x, y)
        args = property_args(prop, x, y)
        # the cross-entropy's model(x) is the loss's f(x0): handed over, it saves a forward
        # and a backward pass per step where that is exact (a network known to compute the
        # same in train and eval mode; binding.known_outputs); one process only (DDP's
        # forward is not the bare model's)
        outputs = {k: logits for k, v in args.items() if v is x} if t.net is t.model else None
        loss_c = prop.loss(t.model, logic=cfg.logic, search=t.sharded(search),
                           params=cfg.params or None, generator=t.search_rng, outputs=outputs,
                           **args)
        return cfg.alpha * loss_ce + cfg.beta * loss_c, logits
    return constraint


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> dict:
    """Which training set a run used: its size and a digest of the labels and a strided
    sample of the images (cheap on 60,000 images), so a resume on other data is refused."""
    import hashlib

    h = hashlib.sha256(str(tuple(x.shape)).encode())
    h.update(y.detach().cpu().contiguous().numpy().tobytes())
    h.update(x[:: max(1, len(x) // 256)].detach().cpu().contiguous().numpy().tobytes())
    return {"n": len(x), "digest": h.hexdigest()[:16]}


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, regime: str = "baseline",
          prop: Property | None = None, checkpoint_dir: str | Path | None = None,
          resume: bool = False, progress: bool | None = None, model_info: dict | None = None,
          overwrite: bool = False, device: str | torch.device | None = None,
          ranks: distributed.Ranks | None = None, **config) -> list[dict]:
    """One call per regime: `train(model, x, y, "constraint", prop=spec["sr"], epochs=2)`."""
    trainer = Trainer(model, TrainConfig(regime=regime, **config), prop, checkpoint_dir, model_info,
                      progress, device=device, ranks=ranks)
    return trainer.fit(x, y, resume=resume, overwrite=overwrite)


def refuse_overwrite(path: Path | None, resume: bool, overwrite: bool) -> None:
    """A TrainingError if `path` holds a run that neither resume nor overwrite was asked for."""
    if path is not None and (path.exists() or path.is_symlink()) and not (resume or overwrite):
        raise TrainingError(f"{path} holds another run ({describe_run(path)}); pass --resume "
                            "to continue it, --overwrite to replace it, or choose another "
                            "--out folder")


def describe_run(path: str | Path) -> str:
    """What a checkpoint holds, in a few words ("regime constraint, 3 of 10 epochs done")."""
    try:
        ckpt = load_checkpoint(path)
        cfg = json.loads(ckpt["config"])
        prop = json.loads(ckpt.get("property") or "null")
        return (f"regime {cfg.get('regime')}, {int(ckpt['epoch'])} of {cfg.get('epochs')} epochs "
                f"done" + (f", property {prop['name']} from {prop['spec']}" if prop else ""))
    except (CheckpointError, KeyError, TypeError, ValueError, AttributeError):
        return "a file that is not a robustspec checkpoint"


def model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict, dict]:
    """Rebuild the model a checkpoint was trained with; returns (model, checkpoint, model_info).

    Every way a checkpoint can be malformed (no format marker, no model description, weights
    that do not fit the described model) is a CheckpointError saying what is wrong."""
    from .models import build_model

    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "robustspec-checkpoint-1":
        raise CheckpointError(f"{path} is not a robustspec checkpoint (no format marker)")
    try:
        info = json.loads(ckpt.get("model_info") or "{}")
        if not isinstance(info, dict):
            raise TypeError(f"model_info is {type(info).__name__}, not a dict")
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its model description is unreadable ({e})") from None
    if not info.get("name"):
        raise CheckpointError(f"{path} does not say which model it holds; load it from Python with "
                              "your own module and model.load_state_dict(checkpoint['model'])")
    missing = [k for k in ("input_shape",) if k not in info]
    if missing or "model" not in ckpt:
        raise CheckpointError(f"{path} lacks {', '.join(missing) or 'its weights'}: "
                              f"it is damaged or was not written by robustspec train")
    try:
        model = build_model(info["name"], tuple(info["input_shape"]), info.get("classes", 10))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} describes a model robustspec cannot build ({e})") from None
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
        first = str(e).strip().split("\n")
        detail = "; ".join(line.strip() for line in first if line.strip())[:600]
        raise CheckpointError(f"{path}: its weights do not fit the model it describes "
                              f"({info['name']}, input {tuple(info['input_shape'])}, "
                              f"{info.get('classes', 10)} classes): {detail}") from None
    model.eval()
    return model, ckpt, info
