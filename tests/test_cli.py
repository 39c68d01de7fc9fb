"""The `robustspec` command line: exit codes, messages and files, end to end on tiny synthetic
Fashion-MNIST files in the official IDX format.

Loading verifies the official checksums; the synthetic files get theirs by patching
``robustspec.runtime.data.FASHION_MNIST_FILES`` (looked up at call time for this purpose).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustspec.runtime import data
from robustspec.runtime.cli import main
from robustspec.runtime.training import load_checkpoint

from fakedata import isolate_data_env, write_fashion

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
SR = str(SPECS / "standard_robustness.spec")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    isolate_data_env(tmp_path, monkeypatch)


@pytest.fixture
def fashion(tmp_path, monkeypatch) -> Path:
    """A data dir holding fashion-mnist/ with four learnable files; returns the data dir."""
    info = write_fashion(tmp_path / "data" / "fashion-mnist", n_train=60, n_test=20, learnable=True)
    monkeypatch.setattr(data, "FASHION_MNIST_FILES", info["checksums"])
    return tmp_path / "data"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


TRAIN = ("--epochs", 1, "--lr", 1e-3, "--batch-size", 16, "--limit", 40)


# ------------------------------------------------------------------------------------------
# check / explain


def test_check_good_specs(capsys):
    files = sorted(SPECS.glob("*.spec"))
    assert len(files) >= 5
    code, out, err = run(capsys, "check", *files)
    assert code == 0, err
    assert f"{SR}: ok, 1 property (sr)" in out
    assert out.count(": ok,") == len(files)


def test_check_bad_spec_exits_2_with_diagnostics(capsys, tmp_path):
    bad = tmp_path / "bad.spec"
    bad.write_text("network f : Tensor -> Tensor\nparam eps : Real = 0.1\n"
                   "property p(x0 : Tensor) =\n"
                   "  forall x . norm_inf(x - x0) <= epz and 0 <= x <= 1 => f(x)[0] >= 0\n")
    code, out, err = run(capsys, "check", SR, bad)
    assert code == 2
    assert f"{bad}:4:34: error: unknown name 'epz'" in err
    assert "did you mean 'eps'?" in err and f"{bad}: 1 error" in err
    assert f"{SR}: ok" in out  # the good file is still reported


def test_check_missing_file_and_param_override(capsys, tmp_path):
    code, _, err = run(capsys, "check", tmp_path / "nope.spec")
    assert code == 2 and "nope.spec" in err and "Traceback" not in err
    code, _, err = run(capsys, "check", SR, "--param", "eps")
    assert code == 2 and "--param takes NAME=VALUE" in err


def test_explain(capsys):
    code, out, _ = run(capsys, "explain", SR)
    assert code == 0
    assert "property sr(x0 : Tensor, y : Label)" in out and "loss under dl2" in out
    code, out, _ = run(capsys, "explain", SPECS / "classification_robustness.spec",
                       "--property", "cr_margin", "--search", "fgsm")
    assert code == 0 and "cr_margin" in out and "FGSM" in out
    code, _, err = run(capsys, "explain", SR, "--property", "rs")
    assert code == 2 and "has no property 'rs'" in err
    code, out, _ = run(capsys, "explain", SR, "--search", "random", "--samples", 7)
    assert code == 0 and "7 samples per example" in out
    code, out, _ = run(capsys, "explain", SR, "--steps", 7)
    assert code == 0 and "PGD, 7 gradient steps" in out
    code, _, err = run(capsys, "explain", SR, "--search", "random", "--steps", 3)
    assert code == 2 and "--steps is for --search pgd" in err  # not silently ignored


def test_no_command_prints_help(capsys):
    code, out, _ = run(capsys)
    assert code == 2 and "usage: robustspec" in out


# ------------------------------------------------------------------------------------------
# train / evaluate / attack / data


def test_train_constraint_needs_a_spec(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--regime", "constraint", "--data-dir", tmp_path)
    assert code == 2
    assert "--regime constraint needs a property: add --spec FILE --property NAME" in err


def test_train_unknown_property(capsys, fashion, tmp_path):
    code, _, err = run(capsys, "train", "--regime", "constraint", "--spec", SR,
                       "--property", "sr2", "--data-dir", fashion, *TRAIN)
    assert code == 2 and "no property 'sr2'" in err


def test_missing_data_says_where_it_looked_and_how_to_get_it(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--regime", "baseline", "--data-dir", tmp_path / "typo",
                       "--out", tmp_path / "run", *TRAIN)
    assert code == 2 and f"--data-dir {tmp_path / 'typo'}: no such folder" in err
    assert "robustspec data fetch fashion-mnist" in err and "Traceback" not in err
    (tmp_path / "nothing").mkdir()
    code, _, err = run(capsys, "train", "--regime", "baseline", "--data-dir", tmp_path / "nothing",
                       "--out", tmp_path / "run", *TRAIN)
    assert code == 2
    assert "fashion-mnist (train split) not found. Looked in:" in err
    assert str(tmp_path / "nothing" / "fashion-mnist") in err
    assert str(tmp_path / "debian" / "fashion-mnist") in err
    assert "robustspec data fetch fashion-mnist" in err and "--data-dir" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_synthetic_files_fail_the_official_checksums(capsys, tmp_path):
    write_fashion(tmp_path / "data" / "fashion-mnist", n_train=60, n_test=20, learnable=True)  # checksums not patched
    code, _, err = run(capsys, "train", "--regime", "baseline", "--data-dir", tmp_path / "data",
                       "--out", tmp_path / "run", *TRAIN)
    assert code == 2 and "checksum mismatch" in err


def test_train_evaluate_attack_end_to_end(capsys, fashion, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "--regime", "constraint", "--spec", SR,
                            "--property", "sr", "--steps", 2, "--step-size", 0.05, "--eps", 0.1,
                            "--data-dir", fashion, "--out", out, *TRAIN)
    assert code == 0, err
    assert "training mlp on 40 fashion-mnist images, regime constraint with sr" in stdout
    assert "epoch 1/1: loss" in stdout and f"done: {out / 'last.pt'}" in stdout
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert json.loads(ckpt["model_info"])["dataset"] == "fashion-mnist"
    assert json.loads(ckpt["config"])["regime"] == "constraint"

    code, stdout, err = run(capsys, "evaluate", out / "last.pt", "--spec", SR, "--eps", "0,0.1",
                            "--steps", 3, "--samples", 5, "--data-dir", fashion, "--limit", 20)
    assert code == 0, err
    assert "property sr" in stdout and "clean acc" in stdout
    saved = json.loads((out / "eval-sr.json").read_text())
    assert [r["eps"] for r in saved["rows"]] == [0.0, 0.1]
    assert all(r["n"] == 20 for r in saved["rows"])
    assert saved["rows"][0]["constraint_security"] == 1.0
    assert saved["settings"]["steps"] == 3 and saved["settings"]["samples"] == 5
    header = (out / "eval-sr.csv").read_text().splitlines()[0]
    assert header == "eps,n,clean_accuracy,constraint_security,constraint_accuracy,vacuous,seconds"
    assert len((out / "eval-sr.csv").read_text().splitlines()) == 3

    code, stdout, err = run(capsys, "evaluate", out / "last.pt", "--spec",
                            SPECS / "strong_classification_robustness.spec", "--eps", "0.05",
                            "--steps", 2, "--samples", 0, "--data-dir", fashion, "--limit", 10,
                            "--out", tmp_path / "elsewhere" / "scr")
    assert code == 0, err
    assert (tmp_path / "elsewhere" / "scr.json").is_file()
    assert json.loads((tmp_path / "elsewhere" / "scr.json").read_text())["rows"][0][
        "constraint_accuracy"] is None

    # the network's passes split into rows of 4: the same counts, the split recorded
    code, stdout, err = run(capsys, "evaluate", out / "last.pt", "--spec", SR, "--eps", "0,0.1",
                            "--steps", 3, "--samples", 5, "--data-dir", fashion, "--limit", 20,
                            "--forward-rows", 4, "--out", tmp_path / "rows4")
    assert code == 0, err
    split = json.loads((tmp_path / "rows4.json").read_text())
    assert split["settings"]["forward_rows"] == 4
    for a, b in zip(split["rows"], saved["rows"], strict=True):  # eps 0 and 0.1
        for k in ("eps", "clean_accuracy", "constraint_security", "constraint_accuracy"):
            assert a[k] == b[k], k

    code, stdout, err = run(capsys, "attack", out / "last.pt", "--spec", SR,
                            "--param", "delta=0.01",
                            "--steps", 3, "--data-dir", fashion, "--limit", 10)
    assert code == 0, err
    assert "attack with property sr at eps" not in stdout  # no --eps: the spec's own
    assert "attack with property sr: " in stdout and "inputs have a counterexample" in stdout
    folder = out / "attack-sr"
    with np.load(folder / "counterexamples.npz") as z:
        assert len(z["index"]) > 0  # delta 0.01 is violated by any trained network
        x, x0 = z["x"], z["x0"]
        assert x.shape[1:] == (1, 28, 28)
        assert (np.abs(x - x0) <= 0.1 + 1e-6).all() and x.min() >= 0 and x.max() <= 1
    with Image.open(folder / "counterexamples.png") as im:
        assert im.format == "PNG"

    code, stdout, err = run(capsys, "attack", out / "last.pt", "--spec",
                            SPECS / "classification_robustness.spec", "--property", "cr",
                            "--eps", 0.2, "--steps", 3, "--data-dir", fashion, "--limit", 10,
                            "--out", tmp_path / "cr")
    assert code == 0, err
    assert "attack with property cr at eps 0.2" in stdout
    assert (tmp_path / "cr" / "counterexamples.npz").is_file()


def test_evaluate_needs_a_property_choice(capsys, fashion, tmp_path):
    assert run(capsys, "train", "--regime", "baseline", "--data-dir", fashion, "--out", tmp_path,
               *TRAIN)[0] == 0
    code, _, err = run(capsys, "evaluate", tmp_path / "last.pt", "--spec",
                       SPECS / "class_groups.spec", "--data-dir", fashion, "--limit", 5)
    assert code == 2 and "has several properties" in err and "--property NAME" in err
    code, _, err = run(capsys, "evaluate", tmp_path / "last.pt", "--spec", SR, "--eps", "0.1,x",
                       "--data-dir", fashion)
    assert code == 2 and "--eps takes numbers >= 0 separated by commas" in err
    for bad in ("", ",", "nan", "-0.1", "0.1,inf"):
        code, _, err = run(capsys, "evaluate", tmp_path / "last.pt", "--spec", SR,
                           f"--eps={bad}", "--data-dir", fashion)
        assert code == 2 and "--eps takes numbers >= 0" in err, bad
    with pytest.raises(SystemExit) as exit_:  # argparse's own exit, with the option named
        run(capsys, "evaluate", tmp_path / "last.pt", "--spec", SR, "--forward-rows", 0,
            "--data-dir", fashion)
    assert exit_.value.code == 2
    assert "--forward-rows: must be at least 1, got 0" in capsys.readouterr().err
    code, _, err = run(capsys, "evaluate", tmp_path / "missing.pt", "--spec", SR,
                       "--data-dir", fashion)
    assert code == 2 and "no checkpoint at" in err
    (tmp_path / "torn.pt").write_bytes(b"garbage")
    code, _, err = run(capsys, "attack", tmp_path / "torn.pt", "--spec", SR, "--data-dir", fashion)
    assert code == 2 and "is not a robustspec checkpoint" in err


def test_resume_from_the_cli(capsys, fashion, tmp_path):
    args = ("train", "--regime", "augment-uniform", "--spec", SR, "--data-dir", fashion,
            "--lr", 1e-3, "--batch-size", 16, "--limit", 40, "--seed", 3)
    assert run(capsys, *args, "--epochs", 2, "--out", tmp_path / "A")[0] == 0
    assert run(capsys, *args, "--epochs", 1, "--out", tmp_path / "B")[0] == 0
    code, stdout, err = run(capsys, *args, "--epochs", 2, "--out", tmp_path / "B", "--resume")
    assert code == 0, err
    assert "epoch 1/2" not in stdout and "epoch 2/2" in stdout  # only the missing epoch ran
    a, b = load_checkpoint(tmp_path / "A" / "last.pt"), load_checkpoint(tmp_path / "B" / "last.pt")
    assert b["epoch"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # other options on resume: a clear error, no traceback
    code, _, err = run(capsys, *args, "--epochs", 3, "--out", tmp_path / "B", "--resume",
                       "--beta", 0.5)
    assert code != 0 and "other settings (beta: 0.2 then, 0.5 now)" in err and "Traceback" not in err


def test_resume_with_another_eps_is_refused(capsys, fashion, tmp_path):
    args = ("train", "--regime", "constraint", "--spec", SR, "--steps", 2, "--data-dir", fashion,
            "--out", tmp_path, *TRAIN)
    assert run(capsys, *args, "--eps", 0.1)[0] == 0
    code, _, err = run(capsys, *args, "--epochs", 2, "--eps", 0.3, "--resume")  # last wins
    assert code == 2 and "other settings (params: {'eps': 0.1} then, {'eps': 0.3} now)" in err


def test_resume_with_another_model_is_a_clear_error(capsys, fashion, tmp_path):
    args = ("train", "--regime", "baseline", "--data-dir", fashion, "--out", tmp_path, *TRAIN)
    assert run(capsys, *args)[0] == 0
    code, _, err = run(capsys, *args, "--model", "cnn", "--resume")
    assert code == 2 and "Traceback" not in err
    assert "the checkpoint holds another model ({'name': 'mlp'" in err


def test_data_where(capsys, fashion, tmp_path):
    code, out, _ = run(capsys, "data", "where", "fashion-mnist", "--data-dir", fashion)
    assert code == 0 and out.strip() == str(fashion / "fashion-mnist")
    code, _, err = run(capsys, "data", "where", "fashion-mnist", "--data-dir", tmp_path / "none")
    assert code == 2 and "no such folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "data", "where", "fashion-mnist", "--data-dir", tmp_path / "empty")
    assert code == 2 and "Looked in" in err


def test_demo_on_tiny_data(capsys, fashion, tmp_path):
    code, out, err = run(capsys, "demo", "--data-dir", fashion, "--out", tmp_path / "demo",
                         "--epochs", 1, "--train-limit", 30, "--test-limit", 5)
    assert code == 0, err
    assert "Fashion-MNIST: 30 training and 5 test images" in out
    assert "Constraint loss (SR)" in out and "SCR" in out
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(results["models"]) == {"baseline", "constraint"}
    with Image.open(tmp_path / "demo" / "security.png") as im:
        assert im.format == "PNG"
    for regime in ("baseline", "constraint"):
        for name in ("last.pt", "eval-sr.json", "eval-sr.csv", "eval-scr.csv"):
            assert (tmp_path / "demo" / regime / name).is_file()
    # a rerun reuses its own finished checkpoints (exact resume), trains nothing, same results
    code, again, err = run(capsys, "demo", "--data-dir", fashion, "--out", tmp_path / "demo",
                           "--epochs", 1, "--train-limit", 30, "--test-limit", 5)
    assert code == 0, err
    assert "epoch 1:" in out and "epoch 1:" not in again
    rerun = json.loads((tmp_path / "demo" / "results.json").read_text())
    def measured(res):  # every metric but the time taken
        return {(r, a): [{k: v for k, v in row.items() if k != "seconds"} for row in e["rows"]]
                for r, m in res["models"].items() for a, e in m["attacks"].items()}
    assert measured(rerun) == measured(results)


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "robustspec"
    assert script.is_file(), f"no console script at {script}: pip install -e ."
    done = subprocess.run([str(script), "check", SR], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{SR}: ok, 1 property (sr)"


def test_gtsrb_class_subset_option_parses_counts_lists_and_all():
    import argparse

    from robustspec.runtime.commands import _classes, _data_options

    assert _classes("all") is None
    assert _classes("10") == 10
    assert _classes("1,2,13") == [1, 2, 13]
    with pytest.raises(argparse.ArgumentTypeError):
        _classes("x")
    args = argparse.Namespace(dataset="gtsrb", size=32, rgb=False, classes=[1, 2])
    assert _data_options(args) == {"size": 32, "grayscale": True, "classes": [1, 2]}


# ------------------------------------------------------------------------------------------
# one argument validation, clean errors (issue 8 items 8-10)

def _usage_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    return err


def test_bad_numbers_are_refused_by_every_command(capsys, fashion, tmp_path):
    for bad in ("nan", "inf", "-1"):
        code, _, err = run(capsys, "check", SR, "--param", f"eps={bad}")
        assert code == 2 and "--param eps must be" in err, (bad, err)
        code, _, err = run(capsys, "check", SR, "--param", f"delta={bad}")
        assert (code == 2 and "--param delta must be a finite number" in err) == (bad != "-1")
    for cmd in ("attack", "evaluate"):
        for bad in ("-1", "nan", "inf"):
            argv = (cmd, tmp_path / "x.pt", "--spec", SR)
            if cmd == "attack":
                assert "argument --eps: the value must be" in _usage_error(capsys, *argv, f"--eps={bad}")
            else:
                code, _, err = run(capsys, *argv, f"--eps={bad}", "--data-dir", fashion)
                assert code == 2 and "--eps takes numbers >= 0" in err
            for step in ("-1", "0", "nan"):
                assert "argument --step-size: the value must be" in _usage_error(
                    capsys, *argv, f"--step-size={step}")
    train = ("train", "--regime", "constraint", "--spec", SR, "--data-dir", fashion, *TRAIN)
    assert "argument --eps: the value must be >= 0, got -0.1" in _usage_error(
        capsys, *train, "--eps=-0.1")
    for step in ("-1", "nan"):
        assert "argument --step-size" in _usage_error(capsys, *train, f"--step-size={step}")
    code, _, err = run(capsys, *train, "--param", "delta=nan", "--out", tmp_path / "r")
    assert code == 2 and "--param delta must be a finite number" in err
    code, _, err = run(capsys, *train, "--param", "eps=-0.5", "--out", tmp_path / "r")
    assert code == 2 and "--param eps must be >= 0" in err
    assert not (tmp_path / "r").exists()


def test_train_refuses_to_overwrite_another_run(capsys, fashion, tmp_path):
    args = ("train", "--regime", "baseline", "--data-dir", fashion, "--out", tmp_path / "run",
            *TRAIN)
    assert run(capsys, *args)[0] == 0
    before = (tmp_path / "run" / "last.pt").read_bytes()
    code, _, err = run(capsys, *args, "--seed", 5)
    assert code == 2 and "holds another run (regime baseline, 1 of 1 epochs done)" in err
    assert "--overwrite" in err and (tmp_path / "run" / "last.pt").read_bytes() == before
    assert run(capsys, *args, "--seed", 5, "--overwrite")[0] == 0
    assert (tmp_path / "run" / "last.pt").read_bytes() != before


def test_malformed_checkpoints_are_clean_errors(capsys, fashion, tmp_path):
    out = tmp_path / "run"
    assert run(capsys, "train", "--regime", "baseline", "--data-dir", fashion, "--out", out,
               *TRAIN)[0] == 0
    good = torch.load(out / "last.pt", weights_only=True)
    info = json.loads(good["model_info"])
    cases = {"noshape": ({"model_info": json.dumps({k: v for k, v in info.items()
                                                      if k != "input_shape"})}, "lacks input_shape"),
             "classes": ({"model_info": json.dumps({**info, "classes": 3})}, "weights do not fit"),
             "weights": ({"model": {}}, "weights do not fit")}
    for name, (change, message) in cases.items():
        torch.save({**good, **change}, tmp_path / f"{name}.pt")
        for cmd in ("evaluate", "attack"):
            code, _, err = run(capsys, cmd, tmp_path / f"{name}.pt", "--spec", SR,
                               "--data-dir", fashion, "--limit", 5, "--steps", 1)
            assert code == 2 and message in err and "Traceback" not in err, (name, cmd, err)
    torch.save({**good, "extra": Path("x")}, tmp_path / "pickled.pt")
    code, _, err = run(capsys, "evaluate", tmp_path / "pickled.pt", "--spec", SR,
                       "--data-dir", fashion)
    assert code == 2 and "pickled Python objects" in err and "weights_only" not in err


def test_every_robustspec_error_exits_2_without_a_traceback(capsys, monkeypatch):
    from robustspec.dsl.errors import (CheckpointError, DataError, InputError, MissingExtra,
                                       RobustspecError, TrainingError)
    from robustspec.runtime.options import COMMANDS, Command, command

    for cls in (RobustspecError, InputError, DataError, CheckpointError, TrainingError):
        def boom(args, cls=cls):
            raise cls(f"{cls.__name__} says what to do")
        monkeypatch.setitem(COMMANDS._entries, "boom", None)
        command("boom", help="raises")(boom)
        code, _, err = run(capsys, "boom")
        assert code == 2 and err == f"error: {cls.__name__} says what to do\n"
    command("boom", help="raises")(lambda args: (_ for _ in ()).throw(
        MissingExtra("verify", "onnx", "export")))
    code, _, err = run(capsys, "boom")
    assert code == 2 and "pip install 'robustspec[verify]'" in err
    assert isinstance(COMMANDS.get("boom"), Command)


def test_cli_choices_and_defaults_come_from_the_registries(capsys):
    from robustspec.runtime.data import DATASET_LOADERS
    from robustspec.runtime.models import MODEL_BUILDERS
    from robustspec.runtime.training import TRAINING_REGIMES, TrainConfig

    err = _usage_error(capsys, "train", "--regime", "nope")
    assert "choose from " + ", ".join(f"'{r}'" for r in TRAINING_REGIMES) in err
    err = _usage_error(capsys, "train", "--regime", "baseline", "--model", "nope")
    assert "choose from " + ", ".join(f"'{m}'" for m in MODEL_BUILDERS) in err
    err = _usage_error(capsys, "data", "where", "nope")
    assert "choose from " + ", ".join(f"'{d}'" for d in DATASET_LOADERS) in err
    from robustspec.runtime.cli import build_parser
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    defaults = {a.dest: a.default for a in train._actions}
    cfg = TrainConfig()
    assert (defaults["epochs"], defaults["batch_size"], defaults["lr"], defaults["alpha"],
            defaults["beta"], defaults["steps"], defaults["step_size"], defaults["adversary"]) == (
        cfg.epochs, cfg.batch_size, cfg.lr, cfg.alpha, cfg.beta, cfg.search_steps,
        cfg.step_size, cfg.adversary)
