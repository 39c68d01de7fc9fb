"""runtime.attack on a hand-built network with known counterexamples (see test_metrics.py).

f(x) = [10 * relu(mean(x) - 0.5), 0.5] on 2x2 images with equal pixels. Under SR(eps 0.1,
delta 0.5) exactly the inputs on the ramp (0.6, 0.7, 0.8) have counterexamples; under CR
(argmax == y, eps 0.1) exactly the inputs whose ball crosses mean 0.55 (where output 0
overtakes 0.5) do.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from robustspec.compiler import compile_spec
from robustspec.runtime.attack import AttackResult, attack

SPECS = Path(__file__).resolve().parents[1] / "specs"
EPS = 0.1


class Ramp(nn.Module):
    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([10 * torch.relu(m - 0.5), torch.full_like(m, 0.5)], 1)


def images(values):
    return torch.tensor(values).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def in_domain(x, x0, eps=EPS):
    return bool(((x - x0).abs() <= eps + 1e-6).all() and (x >= 0).all() and (x <= 1).all())


@pytest.fixture(scope="module")
def sr():
    return compile_spec(SPECS / "standard_robustness.spec", {"delta": 0.5})["sr"]


def test_sr_attack_finds_exactly_the_known_counterexamples(sr):
    x, y = images([0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.8]), torch.tensor([1, 1, 1, 0, 0, 0, 1])
    model = Ramp()
    r = attack(model, sr, x, y, eps=EPS, steps=10)
    assert isinstance(r, AttackResult) and r.property == "sr" and r.eps == EPS
    assert r.violated.tolist() == [False] * 4 + [True] * 3
    assert r.success_rate == pytest.approx(3 / 7)
    assert in_domain(r.x, x)
    assert torch.equal(r.x0, x) and torch.equal(r.y, y)
    assert r.pred_clean.tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert torch.equal(r.pred_found, model(r.x).argmax(-1))
    # DL2 score of the body at the point: max(0, |f(x) - f(x0)| - delta) > 0 where violated
    move = (model(r.x) - model(x)).abs().amax(1)
    assert torch.allclose(r.score, (move - 0.5).clamp_min(0), atol=1e-5)
    assert (r.score[r.violated] > 0).all() and (r.score[~r.violated] == 0).all()
    assert r.summary() == ("attack with property sr at eps 0.1: 3 of 7 inputs have a "
                           "counterexample (42.9%)")


def test_eps_override_and_batching(sr):
    x, y = images([0.1, 0.6, 0.7, 0.8, 0.3]), torch.zeros(5, dtype=torch.long)
    # eps 0.03: output 0 moves by at most 0.3 < delta, nothing to find
    assert not attack(Ramp(), sr, x, y, eps=0.03, steps=5).violated.any()
    whole = attack(Ramp(), sr, x, y, eps=EPS, steps=10)
    chunked = attack(Ramp(), sr, x, y, eps=EPS, steps=10, batch_size=2)
    assert whole.violated.tolist() == chunked.violated.tolist() == [False, True, True, True, False]
    assert in_domain(chunked.x, x) and len(chunked.score) == 5


def test_save_writes_npz_and_png(sr, tmp_path):
    x, y = images([0.1, 0.6, 0.2, 0.7, 0.8]), torch.tensor([1, 0, 1, 0, 1])
    r = attack(Ramp(), sr, x, y, eps=EPS, steps=10)
    files = r.save(tmp_path / "out", class_names=["ramp", "flat"])
    assert files == {"npz": tmp_path / "out" / "counterexamples.npz",
                     "png": tmp_path / "out" / "counterexamples.png"}
    with np.load(files["npz"]) as z:
        assert sorted(z.files) == ["index", "pred_clean", "pred_found", "score", "x", "x0", "y"]
        assert z["index"].tolist() == [1, 3, 4]
        assert z["x0"].shape == z["x"].shape == (3, 1, 2, 2)
        np.testing.assert_array_equal(z["x0"], x[[1, 3, 4]].numpy())
        assert z["y"].tolist() == [0, 0, 1]
        assert z["pred_clean"].tolist() == [0, 0, 0]
        assert (z["score"] > 0).all()
        assert in_domain(torch.from_numpy(z["x"]), torch.from_numpy(z["x0"]))
    with Image.open(files["png"]) as im:
        assert im.format == "PNG"
        im.verify()


def test_save_with_no_counterexample(sr, tmp_path):
    x, y = images([0.1, 0.2]), torch.tensor([1, 1])
    r = attack(Ramp(), sr, x, y, eps=EPS, steps=3)
    files = r.save(tmp_path)
    with np.load(files["npz"]) as z:
        assert len(z["index"]) == 0 and z["x"].shape[0] == 0
    with Image.open(files["png"]) as im:
        assert im.format == "PNG"


def test_cr_argmax_attack_has_nan_scores(tmp_path):
    cr = compile_spec(SPECS / "classification_robustness.spec")["cr"]
    # 0.2 (y=1) and 0.8 (y=0) are far from the switch at 0.55; 0.5 (y=1) and 0.58 (y=0) cross it
    x, y = images([0.2, 0.5, 0.8, 0.58]), torch.tensor([1, 1, 0, 0])
    model = Ramp()
    r = attack(model, cr, x, y, eps=EPS, steps=10)
    assert r.pred_clean.tolist() == [1, 1, 0, 0]
    assert r.violated.tolist() == [False, True, False, True]
    assert torch.isnan(r.score).all()  # argmax has no loss: no score
    assert in_domain(r.x, x)
    pred = model(r.x).argmax(-1)
    assert (pred[r.violated] != y[r.violated]).all()
    files = r.save(tmp_path)
    with np.load(files["npz"]) as z:
        assert z["index"].tolist() == [1, 3] and np.isnan(z["score"]).all()
    with Image.open(files["png"]) as im:
        assert im.format == "PNG"


def test_attack_needs_one_quantified_input():
    spec = compile_spec("network f : Tensor -> Tensor\n"
                        "property atpoint(x0 : Tensor, y : Label) = f(x0)[0] <= 100\n")
    with pytest.raises(ValueError, match="exactly one quantified input"):
        attack(Ramp(), spec["atpoint"], images([0.1]), torch.tensor([0]), steps=2)


def test_model_mode_restored():
    cr = compile_spec(SPECS / "classification_robustness.spec")["cr"]
    model = Ramp().train()
    attack(model, cr, images([0.5]), torch.tensor([1]), steps=2)
    assert model.training


# ------------------------------------------------------------------ bad arguments (issue 8)

def test_attack_and_evaluate_share_one_argument_check(sr):
    """attack used to report '0 of N inputs have a counterexample' for eps -1, nan or inf."""
    from robustspec.dsl.errors import InputError, RobustspecError
    from robustspec.runtime.metrics import evaluate

    x, y = images([0.1, 0.6]), torch.tensor([1, 0])
    for eps in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="eps must be"):
            attack(Ramp(), sr, x, y, eps=eps, steps=2)
        with pytest.raises(InputError, match="eps must be"):
            evaluate(Ramp(), sr, x, y, eps=[eps], steps=2, samples=0)
    for step in (-1.0, 0.0, float("nan")):
        with pytest.raises(InputError, match="step_size must be"):
            attack(Ramp(), sr, x, y, eps=EPS, steps=2, step_size=step)
        with pytest.raises(InputError, match="step_size must be"):
            evaluate(Ramp(), sr, x, y, eps=[EPS], steps=2, step_size=step, samples=0)
    with pytest.raises(InputError, match="params delta must be a finite number"):
        attack(Ramp(), sr, x, y, params={"delta": float("nan")}, steps=2)
    with pytest.raises(InputError, match="params eps must be >= 0"):
        attack(Ramp(), sr, x, y, params={"eps": -0.5}, steps=2)
    assert issubclass(InputError, RobustspecError) and issubclass(InputError, ValueError)


class Pair(nn.Module):
    def forward(self, x):
        return Ramp()(x), None


def test_bad_shapes_and_models_are_input_errors(sr):
    from robustspec.dsl.errors import InputError
    from robustspec.runtime.metrics import evaluate

    x, y = images([0.1, 0.6]), torch.tensor([1, 0])
    cases = [
        (dict(x=x[:0], y=y[:0]), "x is empty"),
        (dict(x=x, y=y[:, None]), r"y must be a vector of labels \[B\], got shape \(2, 1\); use y.squeeze\(1\)"),
        (dict(x=x, y=y[:1]), "2 inputs but 1 labels"),
        (dict(x=x, y=y.float()), "integer class ids"),
        (dict(x=x.clone().fill_(float("nan")), y=y), "NaN or infinite"),
        (dict(x=x, y=y, model=Pair()), "returned tuple, not a tensor of logits"),
        (dict(x=x, y=y, model=nn.Linear(3, 2)), r"cannot take inputs of shape \(1, 1, 2, 2\)"),
        (dict(x=x, y=torch.tensor([1, 5])), "the model has 2 outputs"),
    ]
    for case, message in cases:
        model = case.pop("model", Ramp())
        with pytest.raises(InputError, match=message):
            attack(model, sr, case["x"], case["y"], eps=EPS, steps=2)
        with pytest.raises(InputError, match=message):
            evaluate(model, sr, case["x"], case["y"], eps=[EPS], steps=2, samples=0)


def test_seeded_fuzz_of_bad_api_calls_gives_robustspec_errors_only(sr):
    """300 seeded mixes of good and bad arguments to attack/evaluate/train: each call either
    runs or raises a RobustspecError; never a raw torch/Python error."""
    import random

    from robustspec.dsl.errors import RobustspecError
    from robustspec.runtime.metrics import evaluate
    from robustspec.runtime.training import train

    x, y = images([0.1, 0.6, 0.7]), torch.tensor([1, 0, 0])
    numbers = [0.1, 0.0, -1.0, float("nan"), float("inf"), -0.0, 1e308, "0.1", None, True]
    inputs = [(x, y), (x[:0], y[:0]), (x, y[:2]), (x, y[:, None]), (x, y.float()),
              (x.double(), y), (x.flatten(1), y), (x.clone().fill_(float("nan")), y),
              (x.long(), y), ([0.1], y), (x, torch.tensor([1, 0, 7]))]
    models = [Ramp(), Pair(), nn.Identity(), nn.Linear(3, 2), lambda t: None]
    rng = random.Random(1234)

    def pick(options):  # the first (good) option half the time, else any
        return options[0] if rng.random() < 0.5 else rng.choice(options)
    outcomes = {"ran": 0, "refused": 0}
    for _ in range(300):
        (xs, ys), model = pick(inputs), pick(models)
        eps, step = pick(numbers), pick([None] + numbers)
        params = pick([None, {"delta": pick(numbers)}, {"eps": pick(numbers)}, {"nope": 1.0}])
        which = rng.choice(["attack", "evaluate", "train"])
        try:
            if which == "attack":
                attack(model, sr, xs, ys, eps=eps, step_size=step, params=params, steps=1)
            elif which == "evaluate":
                evaluate(model, sr, xs, ys, eps=[eps], step_size=step, params=params, steps=1,
                         samples=rng.choice([0, 1]))
            else:
                if not isinstance(model, nn.Module):
                    continue  # train needs parameters to optimise
                train(model, xs, ys, "constraint", prop=sr, epochs=1, step_size=step,
                      params=params or {}, search_steps=1, progress=False)
            outcomes["ran"] += 1
        except RobustspecError:
            outcomes["refused"] += 1
    assert outcomes["ran"] > 20 and outcomes["refused"] > 100, outcomes
