"""runtime.training: every regime, checkpoints, exact resume, non-finite losses, config errors.

Everything runs on 200 synthetic 1x8x8 images of 4 classes (a bright quadrant per class) that a
PaperMLP(64) learns in a couple of epochs.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustspec.compiler import PGD, compile_spec
from robustspec.runtime import training
from robustspec.runtime.models import PaperMLP
from robustspec.runtime.training import (REGIMES, Trainer, TrainConfig, TrainingError, atomic_save,
                                         load_checkpoint, model_from_checkpoint, property_args,
                                         train)

SPECS = Path(__file__).resolve().parents[1] / "specs"
EPS = 0.1
# delta 0.5 (not the spec's 10) so that SR's loss is active on a barely trained network
PARAMS = {"delta": 0.5}
FAST = dict(lr=1e-2, batch_size=50, search_steps=3, step_size=0.05, progress=False)
INFO = {"name": "mlp", "input_shape": [1, 8, 8], "classes": 10}


def make_data(n: int = 200, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    for c in range(4):
        r, k = divmod(c, 2)
        x[y == c, :, 4 * r:4 * r + 4, 4 * k:4 * k + 4] += 0.6
    return x.clamp(0, 1), y


X, Y = make_data()


@pytest.fixture(scope="module")
def sr():
    return compile_spec(SPECS / "standard_robustness.spec")["sr"]


@pytest.fixture(scope="module")
def scr():
    return compile_spec(SPECS / "strong_classification_robustness.spec")["scr"]


def fresh(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return PaperMLP(64)


def trainer(regime="baseline", prop=None, seed=0, init=0, out=None, model=None, params=None, **kw):
    if params is None:
        params = dict(PARAMS) if prop is not None and prop.name == "sr" else {}
    cfg = TrainConfig(regime=regime, seed=seed, params=params,
                      **{k: v for k, v in {**FAST, **kw}.items() if k != "progress"})
    model = model if model is not None else fresh(init)
    return Trainer(model, cfg, prop, out, INFO, progress=False)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Spy:
    """Records (training, grad enabled, input) of every forward call of a module."""

    def __init__(self, model: nn.Module):
        self.calls: list[tuple[bool, bool, torch.Tensor]] = []
        model.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        self.calls.append((module.training, torch.is_grad_enabled(), args[0].detach().clone()))

    def training_calls(self):
        """The forward calls whose loss is back-propagated into the weights."""
        return [x for t, g, x in self.calls if t and g]


def in_ball(x, x0, eps=EPS) -> bool:
    return bool(((x - x0).abs() <= eps + 1e-6).all() and (x >= 0).all() and (x <= 1).all())


# ------------------------------------------------------------------------------ regimes

@pytest.mark.parametrize("regime,extra", [
    ("baseline", {}), ("augment-uniform", {}), ("augment-fgsm", {}),
    ("adversarial", {"adversary": "pgd"}), ("adversarial", {"adversary": "fgsm"}),
    ("constraint", {"logic": "dl2"}),
], ids=["baseline", "augment-uniform", "augment-fgsm", "adversarial-pgd", "adversarial-fgsm",
        "constraint-dl2"])
def test_every_regime_learns(regime, extra, sr):
    t = trainer(regime, sr if regime != "baseline" else None, epochs=3, **extra)
    history = t.fit(X, Y)
    assert [h["epoch"] for h in history] == [1, 2, 3] and t.epoch == 3
    assert set(history[0]) == {"epoch", "loss", "accuracy", "examples_per_s", "seconds"}
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["accuracy"] >= 0.9
    with torch.no_grad():
        assert (t.model(X).argmax(-1) == Y).float().mean() >= 0.9


def test_train_function(sr):
    model = fresh()
    history = train(model, X, Y, "constraint", prop=sr, epochs=1, params=PARAMS, **FAST)
    assert len(history) == 1 and history[0]["loss"] > 0


@pytest.mark.parametrize("regime,spec", [("augment-uniform", "sr"), ("augment-fgsm", "scr")])
def test_augmentation_adds_two_points_per_image_in_the_ball(regime, spec, sr, scr):
    prop = {"sr": sr, "scr": scr}[spec]
    model = fresh()
    t = trainer(regime, prop, epochs=1, model=model)
    spy = Spy(t.model)
    t.fit(X, Y)
    calls = spy.training_calls()
    assert len(calls) == 4  # one per batch: 200 images in batches of 50
    seen, moved = [], [0, 0]
    for xs in calls:
        assert xs.shape == (150, 1, 8, 8)
        x0, a, b = xs[:50], xs[50:100], xs[100:]
        assert in_ball(a, x0) and in_ball(b, x0)
        for i, extra in enumerate((a, b)):
            moved[i] += int((extra != x0).flatten(1).any(1).sum())
        seen.append(x0)
    assert moved == [200, 200]  # both extra points start at random in the ball: never x0
    # the first third is the batch itself: every training image exactly once
    got = torch.cat(seen).flatten(1)
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, X.flatten(1).tolist()))


def test_augmentation_repeats_the_labels(sr, monkeypatch):
    labels = []
    real = F.cross_entropy

    def spy(logits, target, *a, **k):
        labels.append(target.clone())
        return real(logits, target, *a, **k)

    monkeypatch.setattr(training.F, "cross_entropy", spy)
    t = trainer("augment-uniform", sr, epochs=1, batch_size=200)
    t.fit(X, Y)
    (target,) = labels
    assert target.shape == (600,)
    assert torch.equal(target[:200], target[200:400]) and torch.equal(target[:200], target[400:])


@pytest.mark.parametrize("adversary", ["pgd", "fgsm"])
def test_adversarial_points_lie_in_the_domain(adversary, scr):
    model = fresh()
    if adversary == "fgsm":  # FGSM from the center moves only where SCR holds there
        trainer(model=model, epochs=3).fit(X, Y)
    t = trainer("adversarial", scr, epochs=1, adversary=adversary, search_steps=5, model=model)
    spy = Spy(t.model)
    t.fit(X, Y)
    # per batch, in train mode: CE at x_adv (with gradient), then the clean logits (without)
    train_mode = [(g, x) for tr, g, x in spy.calls if tr]
    assert [g for g, _ in train_mode] == [True, False] * 4
    moved = 0
    for (_, x_adv), (_, x0) in zip(train_mode[::2], train_mode[1::2]):
        assert x_adv.shape == x0.shape == (50, 1, 8, 8)
        assert in_ball(x_adv, x0)
        moved += int((x_adv != x0).flatten(1).any(1).sum())
    # PGD starts at a random point of the ball; FGSM moves wherever SCR held at the center
    assert moved == 200 if adversary == "pgd" else moved >= 150


def test_constraint_loss_is_alpha_ce_plus_beta_spec_loss(sr):
    """One batch, one epoch: the reported loss is alpha*CE + beta*prop.loss at the initial
    weights, with the search drawing from the same generator state (seed + 1)."""
    search = PGD(steps=FAST["search_steps"], step_size=FAST["step_size"])
    params = {"delta": 0.05}  # violated somewhere by the untrained network
    for alpha, beta in [(1.0, 0.2), (0.0, 1.0), (0.5, 3.0)]:
        t = trainer("constraint", sr, epochs=1, batch_size=200, alpha=alpha, beta=beta, seed=5,
                    params=params)
        model0 = copy.deepcopy(t.model)
        order = torch.randperm(200, generator=torch.Generator().manual_seed(5))
        xb, yb = X[order], Y[order]
        spec_loss = sr.loss(model0, x0=xb, y=yb, search=search, params=params,
                            generator=torch.Generator().manual_seed(6))
        ce = F.cross_entropy(model0(xb), yb)
        assert spec_loss.item() > 0
        history = t.fit(X, Y)
        assert history[0]["loss"] == pytest.approx((alpha * ce + beta * spec_loss).item(), rel=1e-5)


def test_constraint_with_beta_zero_is_exactly_baseline(sr):
    base = trainer("baseline", epochs=2)
    base.fit(X, Y)
    zero = trainer("constraint", sr, epochs=2, beta=0.0)
    zero.fit(X, Y)
    assert same_weights(base.model.state_dict(), zero.model.state_dict())
    active = trainer("constraint", sr, epochs=2, beta=1.0)
    active.fit(X, Y)
    assert not same_weights(base.model.state_dict(), active.model.state_dict())


def test_fgsm_adversarial_training_on_sr_differs_from_baseline(sr):
    base = trainer("baseline", epochs=1)
    base.fit(X, Y)
    adv = trainer("adversarial", sr, epochs=1, adversary="fgsm")
    adv.fit(X, Y)
    assert not same_weights(base.model.state_dict(), adv.model.state_dict())


def test_fgsm_augmentation_on_sr_moves_both_points(sr):
    t = trainer("augment-fgsm", sr, epochs=1)
    spy = Spy(t.model)
    t.fit(X, Y)
    for xs in spy.training_calls():
        assert not torch.equal(xs[50:100], xs[:50])


# ------------------------------------------------------------------------------ determinism

@pytest.mark.parametrize("regime", ["augment-uniform", "constraint"])
def test_same_seed_same_weights(regime, sr):
    a = trainer(regime, sr, epochs=2)
    a.fit(X, Y)
    b = trainer(regime, sr, epochs=2)
    b.fit(X, Y)
    assert same_weights(a.model.state_dict(), b.model.state_dict())
    c = trainer(regime, sr, epochs=2, seed=1)
    c.fit(X, Y)
    assert not same_weights(a.model.state_dict(), c.model.state_dict())


class Killed(Exception):
    pass


def _kill_after(epoch):
    def on_epoch(stats):
        if stats.epoch == epoch:
            raise Killed
    return on_epoch


@pytest.mark.parametrize("regime", ["baseline", "augment-uniform", "adversarial", "constraint"])
def test_resume_after_kill_equals_uninterrupted(regime, sr, tmp_path):
    prop = sr if regime != "baseline" else None
    whole = trainer(regime, prop, epochs=3, out=tmp_path / "A")
    whole.fit(X, Y)

    first = trainer(regime, prop, epochs=3, out=tmp_path / "B")
    with pytest.raises(Killed):
        first.fit(X, Y, on_epoch=_kill_after(1))
    assert load_checkpoint(tmp_path / "B" / "last.pt")["epoch"] == 1
    torch.manual_seed(999)  # disturb the global RNG too: the checkpoint restores it
    # a different init proves the weights come from the checkpoint
    second = trainer(regime, prop, epochs=3, out=tmp_path / "B", init=123)
    assert not same_weights(second.model.state_dict(), whole.model.state_dict())
    history = second.fit(X, Y, resume=True)
    assert second.epoch == 3 and [h["epoch"] for h in history] == [1, 2, 3]
    assert same_weights(whole.model.state_dict(), second.model.state_dict())
    assert [h["loss"] for h in history] == [h["loss"] for h in whole.history]
    a, b = load_checkpoint(tmp_path / "A" / "last.pt"), load_checkpoint(tmp_path / "B" / "last.pt")
    assert same_weights(a["model"], b["model"])
    assert torch.equal(a["search_rng"], b["search_rng"])
    assert torch.equal(a["shuffle_rng"], b["shuffle_rng"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])) for k in sa)


def test_resume_with_more_epochs_continues(sr, tmp_path):
    """A run of 1 epoch, then the same options with --epochs 3 and resume: equal to 3 at once."""
    whole = trainer("constraint", sr, epochs=3, out=tmp_path / "A")
    whole.fit(X, Y)
    trainer("constraint", sr, epochs=1, out=tmp_path / "B").fit(X, Y)
    later = trainer("constraint", sr, epochs=3, out=tmp_path / "B", init=7)
    later.fit(X, Y, resume=True)
    assert same_weights(whole.model.state_dict(), later.model.state_dict())


def test_resume_of_a_finished_run_does_nothing(tmp_path):
    t = trainer(epochs=2, out=tmp_path)
    t.fit(X, Y)
    again = trainer(epochs=2, out=tmp_path, init=5)
    assert len(again.fit(X, Y, resume=True)) == 2
    assert same_weights(t.model.state_dict(), again.model.state_dict())


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    t = trainer(epochs=1, out=tmp_path / "new")
    assert len(t.fit(X, Y, resume=True)) == 1
    assert (tmp_path / "new" / "last.pt").is_file()


def test_resume_with_other_settings_names_the_fields(sr, tmp_path):
    trainer(epochs=1, out=tmp_path, lr=1e-2).fit(X, Y)
    with pytest.raises(TrainingError, match=r"other settings \(lr: 0.01 then, 0.001 now\).*new --out folder"):
        trainer(epochs=2, out=tmp_path, lr=1e-3).fit(X, Y, resume=True)
    with pytest.raises(TrainingError, match=r"\(beta: 0.2 then, 0.5 now, params: .*, regime: baseline then, constraint now\)"):
        trainer("constraint", sr, epochs=2, out=tmp_path, beta=0.5).fit(X, Y, resume=True)
    # without resume a new run must ask to overwrite (issue 8 item 10: it used to overwrite
    # silently); with overwrite=True it replaces the old run
    with pytest.raises(TrainingError, match=r"holds another run \(regime baseline, 1 of 1 epochs "
                       r"done\); pass --resume .* --overwrite"):
        trainer(epochs=1, out=tmp_path, lr=1e-3).fit(X, Y)
    trainer(epochs=1, out=tmp_path, lr=1e-3).fit(X, Y, overwrite=True)
    assert json.loads(torch.load(tmp_path / "last.pt", weights_only=True)["config"])["lr"] == 1e-3


def test_resume_with_another_property_is_refused(sr, scr, tmp_path):
    trainer("constraint", sr, epochs=1, out=tmp_path, params={}).fit(X, Y)
    try:
        trainer("constraint", scr, epochs=2, out=tmp_path, params={}).fit(X, Y, resume=True)
        message = None
    except TrainingError as e:
        message = str(e)
    assert message is not None and "trained with property {'spec':" in message
    assert "'name': 'sr'" in message and "which differs from 'scr'" in message


def test_resume_knows_the_property_by_meaning_not_by_path(tmp_path, monkeypatch):
    """The same spec by another path resumes; an edited parameter or other data is refused."""
    spec = tmp_path / "sr.spec"
    spec.write_text((SPECS / "standard_robustness.spec").read_text())
    out = tmp_path / "run"
    trainer("constraint", compile_spec(spec)["sr"], epochs=1, out=out).fit(X, Y)
    monkeypatch.chdir(tmp_path)
    same = compile_spec("./sr.spec")["sr"]
    assert len(trainer("constraint", same, epochs=2, out=out).fit(X, Y, resume=True)) == 2
    edited = spec.read_text().replace("param eps   : Real = 0.1", "param eps   : Real = 0.3")
    assert edited != spec.read_text()
    spec.write_text(edited)
    with pytest.raises(TrainingError, match="formula, domains or parameters changed"):
        trainer("constraint", compile_spec(spec)["sr"], epochs=3, out=out).fit(X, Y, resume=True)
    with pytest.raises(TrainingError, match="other data \\(200 examples then, 150 now"):
        trainer("constraint", same, epochs=3, out=out).fit(X[:150], Y[:150], resume=True)
    x2 = X.clone()
    x2[0] = 1 - x2[0]
    with pytest.raises(TrainingError, match="other data"):
        trainer("constraint", same, epochs=3, out=out).fit(x2, Y, resume=True)


def test_resume_from_a_file_that_is_not_a_training_checkpoint(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    torch.save(fresh().state_dict(), out / "last.pt")  # a plain state dict
    with pytest.raises(TrainingError, match="not a robustspec training checkpoint"):
        trainer(epochs=1, out=out).fit(X, Y, resume=True)


def test_resume_with_another_model_is_a_training_error(tmp_path):
    trainer(epochs=1, out=tmp_path).fit(X, Y)
    torch.manual_seed(0)
    other = PaperMLP(64, hidden=20)
    with pytest.raises(TrainingError):
        trainer(epochs=2, out=tmp_path, model=other).fit(X, Y, resume=True)


# ------------------------------------------------------------------------------ checkpoints

def test_checkpoint_contents_and_no_temp_files(sr, tmp_path):
    t = trainer("constraint", sr, epochs=2, out=tmp_path / "run")
    t.fit(X, Y)
    assert sorted(os.listdir(tmp_path / "run")) == ["history.json", "last.pt"]
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["format"] == "robustspec-checkpoint-1" and ckpt["epoch"] == 2
    assert same_weights(ckpt["model"], t.model.state_dict())
    cfg = json.loads(ckpt["config"])
    assert cfg["regime"] == "constraint" and cfg["params"] == PARAMS and cfg["epochs"] == 2
    assert json.loads(ckpt["model_info"]) == INFO
    prop = json.loads(ckpt["property"])
    assert prop["name"] == "sr" and prop["spec"].endswith("standard_robustness.spec")
    assert ckpt["history"] == t.history
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == t.history
    for key in ("shuffle_rng", "search_rng", "torch_rng"):
        assert ckpt[key].dtype == torch.uint8


def test_model_from_checkpoint(tmp_path):
    t = trainer(epochs=1, out=tmp_path)
    t.fit(X, Y)
    model, ckpt, info = model_from_checkpoint(tmp_path / "last.pt")
    assert isinstance(model, PaperMLP) and not model.training and info == INFO
    assert same_weights(model.state_dict(), t.model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(X), t.model.eval()(X))


def test_model_from_checkpoint_without_model_info(tmp_path):
    t = Trainer(fresh(), TrainConfig(epochs=1, **{k: FAST[k] for k in ("lr", "batch_size")}),
                checkpoint_dir=tmp_path, progress=False)
    t.fit(X, Y)
    with pytest.raises(TrainingError, match="does not say which model"):
        model_from_checkpoint(tmp_path / "last.pt")
    torch.save({"model": t.model.state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(TrainingError, match="no format marker"):
        model_from_checkpoint(tmp_path / "plain.pt")


def test_torn_or_foreign_checkpoints_are_training_errors(tmp_path):
    t = trainer(epochs=1, out=tmp_path / "run")
    t.fit(X, Y)
    good = (tmp_path / "run" / "last.pt").read_bytes()
    cases = {"garbage": b"not a checkpoint at all", "empty": b"", "torn": good[: len(good) // 2]}
    for name, blob in cases.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(blob)
        with pytest.raises(TrainingError, match="is not a robustspec checkpoint"):
            load_checkpoint(path)
        with pytest.raises(TrainingError):
            model_from_checkpoint(path)
    (tmp_path / "run" / "last.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(TrainingError, match="is not a robustspec checkpoint"):
        trainer(epochs=2, out=tmp_path / "run").fit(X, Y, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_atomic_save_replaces_whole_files(tmp_path):
    path = tmp_path / "deep" / "er" / "x.pt"
    atomic_save({"a": torch.arange(3)}, path)
    atomic_save({"a": torch.arange(5)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(5))
    assert os.listdir(path.parent) == ["x.pt"]


def test_atomic_save_failure_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "x.pt"
    atomic_save({"a": torch.arange(3)}, path)

    def failing_save(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(training.torch, "save", failing_save)
    with pytest.raises(OSError):
        atomic_save({"a": torch.arange(5)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(3))
    assert os.listdir(tmp_path) == ["x.pt"]


# ------------------------------------------------------------------------------ NaN losses

class Poisonable(nn.Module):
    """A PaperMLP whose outputs turn NaN once `poison` is set."""

    def __init__(self):
        super().__init__()
        self.inner = fresh()
        self.poison = False

    def forward(self, x):
        out = self.inner(x)
        return out * float("nan") if self.poison else out


def test_nan_loss_names_epoch_and_batch_and_keeps_last_checkpoint(tmp_path):
    model = Poisonable()
    t = trainer(epochs=3, out=tmp_path, model=model)
    after_first = {}

    def on_epoch(stats):
        after_first.update(copy.deepcopy(model.state_dict()))
        model.poison = True

    with pytest.raises(TrainingError) as err:
        t.fit(X, Y, on_epoch=on_epoch)
    msg = str(err.value)
    assert "epoch 2, batch 1/4" in msg and "nan" in msg
    assert f"the last good checkpoint ({tmp_path / 'last.pt'}, epoch 1) is kept" in msg
    assert "--lr" in msg
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1
    assert same_weights(ckpt["model"], after_first)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    # the failing step was not applied
    assert same_weights(model.state_dict(), after_first)
    assert sorted(os.listdir(tmp_path)) == ["history.json", "last.pt"]


def test_nan_inputs_in_the_first_epoch(tmp_path):
    x = X.clone()
    x[:] = float("nan")
    with pytest.raises(TrainingError, match=r"epoch 1, batch 1/4; no checkpoint was written yet"):
        trainer(epochs=1, out=tmp_path).fit(x, Y)
    assert not (tmp_path / "last.pt").exists()


def test_infinite_loss_is_caught(sr):
    class Inf(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x):
            return torch.full((len(x), 10), float("inf")) * self.w

    with pytest.raises(TrainingError, match="epoch 1, batch 1/4"):
        trainer("constraint", sr, model=Inf(), epochs=1).fit(X, Y)


# ------------------------------------------------------------------------------ configuration

def test_unknown_regime_suggests_the_closest():
    with pytest.raises(ValueError,
                       match="unknown regime 'adversarail'; did you mean 'adversarial'"):
        TrainConfig(regime="adversarail")
    with pytest.raises(ValueError, match="regimes: " + ", ".join(REGIMES)):
        TrainConfig(regime="zzz")
    with pytest.raises(ValueError, match="adversary"):
        TrainConfig(adversary="cw")
    for bad in ({"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"lr": float("nan")}):
        with pytest.raises(ValueError, match="epochs and batch_size"):
            TrainConfig(**bad)


def test_regimes_other_than_baseline_need_a_property():
    for regime in REGIMES[1:]:
        with pytest.raises(TrainingError, match="needs a spec"):
            Trainer(fresh(), TrainConfig(regime=regime))


def test_property_args_binding(sr):
    x, y = X[:3], Y[:3]
    args = property_args(sr, x, y)
    assert list(args) == ["x0", "y"] and args["x0"] is x and args["y"] is y
    two = compile_spec("network f : Tensor -> Tensor\n"
                       "property two(a : Tensor, b : Tensor) = f(a)[0] <= f(b)[0]\n")["two"]
    with pytest.raises(TrainingError, match=r"takes \(a, b\)"):
        property_args(two, x, y)


def test_augmentation_needs_a_quantified_input(sr):
    at_point = compile_spec(SPECS / "class_groups.spec")["footwear_decided"]
    with pytest.raises(TrainingError, match="exactly one quantified input"):
        trainer("augment-uniform", at_point, epochs=1).fit(X, Y)
    # the constraint regime is fine with a property without a quantifier
    assert len(trainer("constraint", at_point, epochs=1).fit(X, Y)) == 1


# ------------------------------------------------------------------ hardening (issue 8)

def test_train_arguments_are_checked_by_the_shared_validation(sr):
    from robustspec.dsl.errors import InputError
    for bad, message in [({"params": {"eps": -0.1}}, "params eps must be >= 0"),
                         ({"params": {"delta": float("inf")}}, "params delta must be a finite"),
                         ({"step_size": -1.0}, "step_size must be > 0"),
                         ({"step_size": float("nan")}, "step_size must be a finite"),
                         ({"beta": -0.2}, "beta must be >= 0")]:
        with pytest.raises(InputError, match=message):
            TrainConfig(regime="constraint", **bad)
    with pytest.raises(InputError, match="x is empty"):
        trainer(epochs=1).fit(X[:0], Y[:0])
    with pytest.raises(InputError, match=r"y must be a vector of labels"):
        trainer(epochs=1).fit(X, Y[:, None])
    with pytest.raises(InputError, match=r"cannot take inputs of shape \(1, 1, 4, 4\)"):
        trainer(epochs=1).fit(X[:, :, :4, :4], Y)
    with pytest.raises(InputError, match="the model has 10 outputs"):
        trainer(epochs=1).fit(X, Y + 10)


def test_checkpoint_errors_say_what_is_wrong(tmp_path):
    from robustspec.dsl.errors import CheckpointError
    t = trainer(epochs=1, out=tmp_path / "run")
    t.fit(X, Y)
    good = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    info = json.loads(good["model_info"])

    def broken(name, **change):
        ckpt = {**good, **change}
        atomic_save(ckpt, tmp_path / f"{name}.pt")
        return tmp_path / f"{name}.pt"
    no_shape = broken("noshape", model_info=json.dumps({k: v for k, v in info.items()
                                                        if k != "input_shape"}))
    with pytest.raises(CheckpointError, match="lacks input_shape"):
        model_from_checkpoint(no_shape)
    classes = broken("classes", model_info=json.dumps({**info, "classes": 3}))
    with pytest.raises(CheckpointError, match=r"weights do not fit the model it describes \(mlp, "
                       r"input \(1, 8, 8\), 3 classes\).*size mismatch"):
        model_from_checkpoint(classes)
    shape = broken("shape", model_info=json.dumps({**info, "input_shape": [1, 4, 4]}))
    with pytest.raises(CheckpointError, match="weights do not fit"):
        model_from_checkpoint(shape)
    weights = broken("weights", model={k: v for k, v in good["model"].items() if "3." not in k})
    with pytest.raises(CheckpointError, match="Missing key"):
        model_from_checkpoint(weights)
    # a pickled object is refused without torch's advice to load it unsafely
    torch.save({"format": "robustspec-checkpoint-1", "obj": Path("x")}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="pickled Python objects") as err:
        model_from_checkpoint(tmp_path / "pickled.pt")
    assert "weights_only" not in str(err.value) and "False" not in str(err.value)
    assert issubclass(CheckpointError, TrainingError)


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    out = tmp_path / "run"
    out.mkdir()
    (out / f".last.pt.{dead}.tmp").write_bytes(b"torn")
    (out / f".history.json.{dead}.tmp").write_bytes(b"torn")
    live = out / f".last.pt.{os.getppid()}.tmp"  # a live process's write in progress
    live.write_bytes(b"in progress")
    trainer(epochs=1, out=out).fit(X, Y)
    assert sorted(os.listdir(out)) == sorted(["history.json", "last.pt", live.name])
    (out / f".last.pt.{dead}.tmp").write_bytes(b"torn")
    trainer(epochs=2, out=out).fit(X, Y, resume=True)
    assert sorted(os.listdir(out)) == sorted(["history.json", "last.pt", live.name])
