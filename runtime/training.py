"""Training regimes, all driven by a compiled property: the paper's whole menu in one loop.

    baseline          cross-entropy
    augment-uniform   cross-entropy on each image plus 2 uniform samples from the spec's domain
    augment-fgsm      ... plus 2 FGSM points of the spec (each from a uniform random start)
    adversarial       cross-entropy at the worst point the spec's search finds (PGD or FGSM)
    constraint        alpha * cross-entropy + beta * the spec's loss under a logic

Checkpoints are written atomically at the end of every epoch with every random state, so a
killed run resumed with `resume=True` reaches the same final weights as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from robustspec.compiler import FGSM, PGD, Property, RandomSampling

from .files import atomic_write, atomic_write_text

REGIMES = ("baseline", "augment-uniform", "augment-fgsm", "adversarial", "constraint")


from robustspec.dsl.errors import TrainingError  # noqa: E402  (one hierarchy: dsl/errors.py)


@dataclass
class TrainConfig:
    """Defaults are the paper's (Adam, lr 1e-4, batch 128, alpha 1, beta 0.2, 50 PGD steps of 0.01)."""

    regime: str = "baseline"
    epochs: int = 1
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
        if self.regime not in REGIMES:
            import difflib
            close = difflib.get_close_matches(self.regime, REGIMES, n=1)
            raise ValueError(f"unknown regime '{self.regime}'" + (f"; did you mean '{close[0]}'?"
                             if close else "") + f" (regimes: {', '.join(REGIMES)})")
        if self.adversary not in ("pgd", "fgsm"):
            raise ValueError(f"adversary must be 'pgd' or 'fgsm', not {self.adversary!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or self.search_steps < 0:
            raise ValueError("epochs and batch_size must be >= 1, lr > 0 and steps >= 0")


def property_args(prop: Property, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Bind a batch to a property's arguments: its tensor argument gets x, its label y."""
    args = {}
    for name, ty in prop.args:
        if ty.kind == "real" and "x" not in args.values():
            args[name] = "x"
        elif ty.kind == "int" and "y" not in args.values():
            args[name] = "y"
        else:
            raise TrainingError(
                f"property '{prop.name}' takes ({', '.join(n for n, _ in prop.args)}); the runtime "
                "binds one input tensor and one label per example")
    return {k: (x if v == "x" else y) for k, v in args.items()}


def atomic_save(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename: never a torn checkpoint."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn or foreign file
        raise TrainingError(f"{path} is not a robustspec checkpoint ({type(e).__name__}: {e})") from None


@dataclass
class EpochStats:
    epoch: int
    loss: float
    accuracy: float
    examples_per_s: float
    seconds: float


class Trainer:
    """Trains `model` under one regime. `prop` is required for every regime but baseline."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig, prop: Property | None = None,
                 checkpoint_dir: str | Path | None = None, model_info: dict | None = None,
                 progress: bool | None = None):
        if config.regime != "baseline" and prop is None:
            raise TrainingError(f"regime '{config.regime}' needs a spec: pass --spec FILE --property NAME")
        self.model = model
        self.cfg = config
        self.prop = prop
        self.dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.model_info = model_info or {}
        self.data_id: dict | None = None  # set by fit(): which training set this run uses
        self.progress = progress
        self.opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.shuffle_rng = torch.Generator().manual_seed(config.seed)
        self.search_rng = torch.Generator().manual_seed(config.seed + 1)
        self.history: list[dict] = []
        self.epoch = 0
        self._step = self._regime_step()

    # ------------------------------------------------------------ regimes
    def _regime_step(self) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        cfg, model, prop = self.cfg, self.model, self.prop
        params = cfg.params or None

        def ce(x, y):
            logits = model(x)
            return F.cross_entropy(logits, y), logits

        if cfg.regime == "baseline":
            return ce

        def points(x, y, search) -> torch.Tensor:
            found = prop.search(model, search=search, params=params, logic=cfg.logic,
                                generator=self.search_rng, **property_args(prop, x, y))
            if len(found) != 1:
                raise TrainingError(f"property '{prop.name}' quantifies {list(found)}; data "
                                    "augmentation and adversarial training need exactly one "
                                    "quantified input")
            return next(iter(found.points.values())).detach()

        if cfg.regime in ("augment-uniform", "augment-fgsm"):
            if cfg.regime == "augment-uniform":
                searches = [RandomSampling(samples=1), RandomSampling(samples=1)]
            else:
                # two FGSM points, each from a uniform random start: from the center the gradient
                # can vanish (SR's norm_inf(f(x) - f(x0)) is flat at x = x0) and FGSM would
                # return x0 itself
                searches = [FGSM(random_start=True), FGSM(random_start=True)]

            def augment(x, y):
                extra = [points(x, y, s) for s in searches]
                xs = torch.cat([x] + extra)
                loss, logits = ce(xs, y.repeat(len(extra) + 1))
                return loss, logits[: len(x)]
            return augment

        if cfg.regime == "adversarial":
            search = PGD(steps=cfg.search_steps, step_size=cfg.step_size) if cfg.adversary == "pgd" \
                else FGSM(random_start=True)  # a random start, for the reason given above

            def adversarial(x, y):
                x_adv = points(x, y, search)
                loss, _ = ce(x_adv, y)
                with torch.no_grad():
                    clean = model(x)
                return loss, clean
            return adversarial

        search = PGD(steps=cfg.search_steps, step_size=cfg.step_size)

        def constraint(x, y):
            loss_ce, logits = ce(x, y)
            loss_c = prop.loss(model, logic=cfg.logic, search=search, params=params,
                               generator=self.search_rng, **property_args(prop, x, y))
            return cfg.alpha * loss_ce + cfg.beta * loss_c, logits
        return constraint

    # ------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path | None:
        return self.dir / "last.pt" if self.dir else None

    def state(self) -> dict:
        return {"format": "robustspec-checkpoint-1", "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(), "epoch": self.epoch,
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
        if self.checkpoint_path is not None:
            atomic_save(self.state(), self.checkpoint_path)
            atomic_write_text(self.dir / "history.json", json.dumps(self.history, indent=1))

    def restore(self, ckpt: dict) -> None:
        try:
            self._restore(ckpt)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TrainingError(f"{self.checkpoint_path} is not a robustspec training checkpoint "
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
            raise TrainingError(f"the checkpoint does not fit this model: {e}") from None
        self.epoch = int(ckpt["epoch"])
        self.shuffle_rng.set_state(ckpt["shuffle_rng"])
        self.search_rng.set_state(ckpt["search_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        self.history = list(ckpt["history"])

    # ------------------------------------------------------------ the loop
    def fit(self, x: torch.Tensor, y: torch.Tensor, resume: bool = False,
            on_epoch: Callable[[EpochStats], None] | None = None) -> list[dict]:
        """Train for the configured epochs (continuing from the last checkpoint if resume)."""
        from tqdm.auto import tqdm

        self.data_id = data_fingerprint(x, y)
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            self.restore(load_checkpoint(self.checkpoint_path))
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
                       disable=None if self.progress is None else not self.progress)
            for b in range(batches):
                idx = order[b * bs:(b + 1) * bs]
                xb, yb = x[idx], y[idx]
                loss, logits = self._step(xb, yb)
                if not torch.isfinite(loss):
                    bar.close()
                    kept = (f"the last good checkpoint ({self.checkpoint_path}, epoch {self.epoch}) "
                            "is kept" if self.checkpoint_path and self.checkpoint_path.exists()
                            else "no checkpoint was written yet")
                    raise TrainingError(f"the loss became {loss.item()} at epoch {epoch}, batch "
                                        f"{b + 1}/{batches}; {kept}. Try a lower --lr or --beta.")
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                total_loss += loss.item() * len(idx)
                correct += int((logits.argmax(-1) == yb).sum())
                seen += len(idx)
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
          **config) -> list[dict]:
    """One call per regime: `train(model, x, y, "constraint", prop=spec["sr"], epochs=2)`."""
    trainer = Trainer(model, TrainConfig(regime=regime, **config), prop, checkpoint_dir, model_info,
                      progress)
    return trainer.fit(x, y, resume=resume)


def model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict, dict]:
    """Rebuild the model a checkpoint was trained with; returns (model, checkpoint, model_info)."""
    from .models import build_model

    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "robustspec-checkpoint-1":
        raise TrainingError(f"{path} is not a robustspec checkpoint (no format marker)")
    info = json.loads(ckpt.get("model_info") or "{}")
    if not info.get("name"):
        raise TrainingError(f"{path} does not say which model it holds; load it from Python with "
                            "your own module and model.load_state_dict(checkpoint['model'])")
    model = build_model(info["name"], tuple(info["input_shape"]), info.get("classes", 10))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt, info
