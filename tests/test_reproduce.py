"""`robustspec reproduce`: the grid, cell skipping and resuming, selection, the report and its
claim checks. Cells run the smoke budget on tests/fakedata.py's synthetic Fashion-MNIST."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from robustspec.dsl.errors import InputError
from robustspec.runtime import cli, data
from robustspec.runtime import reproduce as rp
from robustspec.runtime import report as rep
from robustspec.runtime.training import Trainer, load_checkpoint

from fakedata import isolate_data_env, write_fashion

BASE = rp.Cell("fashion-mnist", "baseline")
SR = rp.Cell("fashion-mnist", "constraint-sr")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    isolate_data_env(tmp_path, monkeypatch)


@pytest.fixture
def fashion(tmp_path, monkeypatch) -> Path:
    info = write_fashion(tmp_path / "data" / "fashion-mnist", n_train=300, n_test=80, learnable=True)
    monkeypatch.setattr(data, "FASHION_MNIST_FILES", info["checksums"])
    return tmp_path / "data"


def plan(tmp_path, fashion, name="out") -> rp.Plan:
    return rp.Plan(rp.BUDGETS["smoke"], str(tmp_path / name), str(fashion))


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------ cells

def test_smoke_grid_runs_and_writes_results_and_report(tmp_path, fashion):
    p = plan(tmp_path, fashion)
    logs = []
    status = rp.run_grid([BASE, SR], p, jobs=1, log=logs.append)
    assert status == {"done": [BASE.id, SR.id], "skipped": [], "failed": {}}
    for cell in (BASE, SR):
        r = json.loads((rp.cell_dir(p.out, cell) / "result.json").read_text())
        assert r["cell"] == cell.id and r["n_train"] == 256 and r["n_test"] == 64
        assert set(r["attacks"]) == set(rp.ATTACKS)
        for a in r["attacks"].values():
            assert [row["eps"] for row in a["rows"]] == list(rp.BUDGETS["smoke"].eps)
            assert all(0 <= row["constraint_security"] <= 1 for row in a["rows"])
        assert len(r["history"]) == rp.BUDGETS["smoke"].epochs
        assert r["config"]["regime"] == rp.REGIMES[cell.regime].trainer
    sr_cfg = json.loads((rp.cell_dir(p.out, SR) / "result.json").read_text())["config"]
    assert sr_cfg["search_steps"] == 2 and sr_cfg["beta"] == 0.2
    assert any("time left" in line for line in logs)

    paths = rep.write_report(p.out)
    text = paths["report"].read_text()
    results = json.loads(paths["results"].read_text())
    assert set(results["cells"]) == {BASE.id, SR.id}
    assert "fashion-mnist/adversarial" in results["missing_cells"]
    assert "| Baseline | " in text and "88.2" in text  # ours beside the paper's
    acc = 100 * results["cells"][BASE.id]["clean_accuracy"]
    assert f"| Baseline | {acc:.1f} | 88.2 | {acc - 88.2:+.1f} |" in text
    assert "**Missing cells**" in text and "MISSING" in text
    assert (Path(p.out) / "fig-network-constraint-sr-fashion-mnist.png").stat().st_size > 1000
    # the run itself: its wall time, jobs x threads and cells, in runs.json and the report
    (run,) = results["runs"]
    assert run["done"] == [BASE.id, SR.id] and run["jobs"] == 1 and run["budget"] == "smoke"
    assert 0 < run["seconds"] < 3600 and "## Runs of this folder" in text
    from robustspec.compiler import native
    assert run["native"] == ("built" if native.cached() else "not built (torch's ops)")
    assert run["uniform"] == "splitmix64"
    assert f"| 1 x {p.threads} | smoke | {run['native']} | splitmix64 | 2: {BASE.id}, {SR.id} | - |" in text

    # constraint satisfaction beside security, on the budget's first test images
    smoke = rp.BUDGETS["smoke"]
    for cell in (BASE, SR):
        v = json.loads((rp.cell_dir(p.out, cell) / "result.json").read_text())["verification"]
        assert v["points"] == smoke.verify_points and set(v["attacks"]) == set(rp.ATTACKS)
        for rows in v["attacks"].values():
            assert [row["eps"] for row in rows] == list(smoke.verify_eps)
            for row in rows:
                counts = [row[k] for k in ("verified", "falsified", "unknown", "boundary")]
                assert sum(counts) == smoke.verify_points
                assert row["satisfaction"] == row["verified"] / smoke.verify_points
        assert (rp.cell_dir(p.out, cell) / "verify-sr.csv").exists()
    assert "## Constraint satisfaction (%), proved by the verifier" in text
    row = results["cells"][BASE.id]["verification"]["attacks"]["SR"][0]
    n = row["points"]
    entry = f"{100 * row['verified'] / n:.0f} / {100 * (1 - row['falsified'] / n):.0f}"
    assert any(line.startswith(f"| {BASE.id} | {entry} |") for line in text.splitlines())


def test_one_job_runs_its_cells_with_the_planned_threads(tmp_path, fashion, monkeypatch):
    seen = []
    monkeypatch.setattr(rp, "run_cell", lambda cell, plan, log=None: (
        seen.append(torch.get_num_threads()), {"clean_accuracy": 0.5})[1])
    before = torch.get_num_threads()
    p = replace(plan(tmp_path, fashion), threads=3)
    assert rp.run_grid([BASE, SR], p, jobs=1, log=lambda m: None)["done"] == [BASE.id, SR.id]
    assert seen == [3, 3] and torch.get_num_threads() == before


def test_done_cell_is_skipped(tmp_path, fashion, monkeypatch):
    p = plan(tmp_path, fashion)
    rp.run_grid([BASE], p, jobs=1, log=lambda m: None)
    result = rp.cell_dir(p.out, BASE) / "result.json"
    before = result.read_bytes()

    def no_training(*a, **k):
        raise AssertionError("a finished cell was trained again")
    monkeypatch.setattr(Trainer, "fit", no_training)
    logs = []
    status = rp.run_grid([BASE], p, jobs=1, log=logs.append)
    assert status["skipped"] == [BASE.id] and status["done"] == []
    assert any("skipped" in m for m in logs)
    assert result.read_bytes() == before


def test_killed_cell_resumes_from_its_checkpoint(tmp_path, fashion, monkeypatch):
    # uninterrupted reference
    ref = plan(tmp_path, fashion, "ref")
    rp.run_cell(SR, ref)
    # the same cell killed right after its first epoch's checkpoint
    p = plan(tmp_path, fashion)
    rp.check_folder(p)
    real_save = Trainer.save
    calls = []

    def save_then_die(self):
        real_save(self)
        calls.append(self.epoch)
        raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        rp.run_cell(SR, p)
    folder = rp.cell_dir(p.out, SR)
    assert calls == [1] and not (folder / "result.json").exists()
    assert load_checkpoint(folder / "train" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(Trainer, "save", real_save)

    resumed_epochs = []
    real_fit = Trainer.fit

    def fit(self, *a, **k):
        out = real_fit(self, *a, **k)
        resumed_epochs.extend(h["epoch"] for h in self.history)
        return out
    monkeypatch.setattr(Trainer, "fit", fit)
    statuses = []
    real_status = rp._status
    monkeypatch.setattr(rp, "_status", lambda folder, **f: statuses.append(f) or real_status(folder, **f))
    r = rp.run_cell(SR, p)
    want = json.loads((rp.cell_dir(ref.out, SR) / "result.json").read_text())
    assert resumed_epochs == [1, 2]
    # the progress display starts the resumed run at the epoch it holds (1, none trained in
    # this run yet), then times it by the epochs it trained itself (one)
    trained = [(f["epoch"], f["from_epoch"]) for f in statuses if f["phase"] == "train" and f["epoch"]]
    assert trained == [(1, 1), (2, 1)]
    # the resumed run reaches the uninterrupted run's weights and numbers
    a = load_checkpoint(folder / "train" / "last.pt")["model"]
    b = load_checkpoint(rp.cell_dir(ref.out, SR) / "train" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    def numbers(result):  # everything but the timings
        return {a: [{k: v for k, v in row.items() if k != "seconds"} for row in e["rows"]]
                for a, e in result["attacks"].items()}
    assert numbers(r) == numbers(want)
    assert [h["loss"] for h in r["history"]] == [h["loss"] for h in want["history"]]


def test_evaluation_killed_midway_keeps_the_finished_attacks(tmp_path, fashion, monkeypatch):
    from robustspec.runtime import metrics

    p = plan(tmp_path, fashion)
    real = metrics.evaluate
    calls = []

    def evaluate_then_die(model, prop, *a, **k):
        calls.append(prop.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the second attack
        return real(model, prop, *a, **k)
    monkeypatch.setattr(metrics, "evaluate", evaluate_then_die)
    with pytest.raises(KeyboardInterrupt):
        rp.run_cell(BASE, p)
    folder = rp.cell_dir(p.out, BASE)
    saved = (folder / "eval-sr.json").read_text()
    assert not (folder / "result.json").exists() and not (folder / "eval-scr.json").exists()
    calls.clear()
    monkeypatch.setattr(metrics, "evaluate", lambda *a, **k: (calls.append(a[1].name), real(*a, **k))[1])
    r = rp.run_cell(BASE, p)
    assert calls == ["scr", "lr", "scr_authors"]  # SR was not evaluated again
    assert (folder / "eval-sr.json").read_text() == saved
    assert r["attacks"]["SR"] == json.loads(saved)
    assert set(r["attacks"]) == set(rp.ATTACKS)


# ------------------------------------------------------------------ selection

def test_cells_selection_by_ids_and_globs():
    cells = rp.grid()
    ids = [c.id for c in cells]
    assert len(ids) == len(set(ids)) == 2 * len(rp.REGIMES) + len(rp.E4_REGIMES)
    assert [c.id for c in rp.select(cells, ["fashion-mnist/baseline"])] == ["fashion-mnist/baseline"]
    gtsrb = rp.select(cells, ["gtsrb/*"])
    assert [c.regime for c in gtsrb] == list(rp.REGIMES) and {c.model for c in gtsrb} == {"mlp"}
    cnn = rp.select(cells, ["fashion-mnist/cnn-*"])
    assert [c.regime for c in cnn] == list(rp.E4_REGIMES) and {c.model for c in cnn} == {"cnn"}
    # grid order, no duplicates
    both = rp.select(cells, ["gtsrb/baseline", "fashion-mnist/base*", "gtsrb/baseline"])
    assert [c.id for c in both] == ["fashion-mnist/baseline", "gtsrb/baseline"]
    with pytest.raises(InputError, match=r"mnist/nope matches no cell.*fashion-mnist/baseline"):
        rp.select(cells, ["fashion-mnist/baseline", "mnist/nope"])


def test_cli_list_shows_selection_and_done_cells(tmp_path, fashion, capsys):
    rp.run_grid([BASE], plan(tmp_path, fashion), jobs=1, log=lambda m: None)
    code, out, _ = run(capsys, "reproduce", "--budget", "smoke", "--dataset", "fashion-mnist",
                       "--cells", "fashion-mnist/base*,fashion-mnist/adv*", "--list",
                       "--out", tmp_path / "out", "--data-dir", fashion)
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["fashion-mnist/baseline", "done"]
    assert lines[1].split()[:2] == ["fashion-mnist/adversarial", "todo"]


def test_cli_runs_selected_cells_with_two_jobs(tmp_path, fashion, capsys):
    code, out, err = run(capsys, "reproduce", "--budget", "smoke", "--dataset", "fashion-mnist",
                         "--cells", "fashion-mnist/baseline,fashion-mnist/augment-uniform",
                         "--jobs", "2", "--threads", "1", "--out", tmp_path / "out",
                         "--data-dir", fashion)
    assert code == 0, err
    done = sorted(p.parent.name for p in (tmp_path / "out" / "cells").glob("**/result.json"))
    assert done == ["augment-uniform", "baseline"]
    r = json.loads((tmp_path / "out" / "cells" / "fashion-mnist" / "baseline" / "result.json").read_text())
    assert r["threads"] == 1
    assert "report:" in out and (tmp_path / "out" / "report.md").exists()


# ------------------------------------------------------------------ report-only

def test_report_only_assembles_cells_copied_from_elsewhere(tmp_path, fashion, capsys):
    a = plan(tmp_path, fashion, "machine-a")
    rp.run_grid([BASE, SR], a, jobs=1, log=lambda m: None)
    merged = tmp_path / "merged"
    shutil.copytree(Path(a.out) / "cells", merged / "cells")  # no settings.json: read from cells
    code, out, err = run(capsys, "reproduce", "--report-only", "--out", merged)
    assert code == 0, err
    results = json.loads((merged / "results.json").read_text())
    assert set(results["cells"]) == {BASE.id, SR.id}
    assert results["settings"]["budget"]["name"] == "smoke"
    text = (merged / "report.md").read_text()
    assert "Budget **smoke**" in text and "fashion-mnist/constraint-lr" in text  # listed missing
    code, _, err = run(capsys, "reproduce", "--report-only", "--out", tmp_path / "nowhere")
    assert code == 2 and "not a folder" in err and "Traceback" not in err


# ------------------------------------------------------------------ claims

def fake_cell(regime, sec: dict[str, float], acc=0.85, dataset="fashion-mnist", model="mlp"):
    """A result whose security against each attack is flat at sec[attack] % for eps > 0."""
    cid = f"{dataset}/{regime}" if model == "mlp" else f"{dataset}/cnn-{regime}"
    eps = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1)
    return cid, {"cell": cid, "dataset": dataset, "regime": regime.removeprefix("cnn-"),
                 "model": model, "label": regime, "clean_accuracy": acc,
                 "attacks": {a: {"rows": [{"eps": e, "constraint_security": (1.0 if e == 0 else s / 100),
                                           "constraint_accuracy": 1.0} for e in eps]}
                             for a, s in sec.items()}}


def paper_like():
    """Numbers shaped as the paper reports them: every claim holds."""
    s = {  # SR, SCR, LR, SCR-authors
        "baseline": (30, 20, 5, 90), "augment-uniform": (25, 15, 4, 88),
        "augment-fgsm": (28, 18, 4, 89), "adversarial": (95, 80, 10, 99),
        "constraint-sr": (90, 40, 10, 95), "constraint-scr": (32, 60, 5, 97),
        "constraint-lr": (92, 45, 30, 96), "constraint-scr-authors": (31, 20, 5, 99.5)}
    acc = {"adversarial": 0.80}
    cells = dict(fake_cell(r, dict(zip(("SR", "SCR", "LR", "SCR-authors"), v)), acc.get(r, 0.88))
                 for r, v in s.items())
    for r, v in {"baseline": 20, "augment-uniform": 30, "augment-fgsm": 35, "constraint-sr": 50}.items():
        cells.update([fake_cell(r, {"SR": 50, "SCR": v, "LR": 5, "SCR-authors": 90}, model="cnn")])
    return cells


def by_id(claims):
    return {c.id: c for c in claims}


def test_claims_pass_on_the_papers_shape():
    claims = rep.check_claims(paper_like())
    bad = [(c.id, c.status, c.evidence()) for c in claims if c.status != "PASS"]
    assert not bad
    ids = set(by_id(claims))
    for want in ("E1-sr-fashion-mnist", "E1-lr-fashion-mnist", "E1-hardest-paper-fashion-mnist",
                 "E1-hardest-authors-fashion-mnist", "E2-scr-vs-sr-paper-fashion-mnist",
                 "E2-sr-vs-scr-authors-fashion-mnist", "E3-close-fashion-mnist",
                 "E3-augment-below-fashion-mnist", "E3-accuracy-cost-fashion-mnist",
                 "E4-ru-below-fgsm-fashion-mnist", "E4-cnn-ru-below-fgsm", "E4-cnn-augment-helps",
                 "E4-cnn-trend"):
        assert want in ids


@pytest.mark.parametrize("regime, attack, value, fails", [
    ("constraint-lr", "SR", 85.0, "E1-sr-fashion-mnist"),            # LR-trained 5 below SR-trained
    ("constraint-sr", "LR", 41.0, "E1-hardest-paper-fashion-mnist"),  # LR attack no longer hardest
    ("constraint-scr", "SR", 36.0, "E2-scr-vs-sr-paper-fashion-mnist"),  # SCR training helps +6
    ("constraint-sr", "SCR", 60.0, "E2-sr-vs-scr-paper-fashion-mnist"),  # as good as SCR training
    ("constraint-scr-authors", "SR", 40.0, "E2-scr-vs-sr-authors-fashion-mnist"),
    ("constraint-sr", "SR", 84.0, "E3-close-fashion-mnist"),          # 11 below adversarial
    ("augment-fgsm", "SR", 91.0, "E3-augment-below-fashion-mnist"),
    ("augment-uniform", "SR", 29.0, "E4-ru-below-fgsm-fashion-mnist"),  # RU above FGSM
])
def test_each_claim_fails_when_its_numbers_say_so(regime, attack, value, fails):
    cells = paper_like()
    cid = f"fashion-mnist/{regime}"
    for row in cells[cid]["attacks"][attack]["rows"]:
        if row["eps"] > 0:
            row["constraint_security"] = value / 100
    claims = by_id(rep.check_claims(cells))
    assert claims[fails].status == "FAIL", claims[fails].evidence()
    # the other definition's version of an E2 claim is untouched
    if "-paper-" in fails:
        assert claims[fails.replace("-paper-", "-authors-")].status == "PASS"


def test_thresholds_are_where_the_report_says():
    cells = paper_like()  # constraint-sr SR 90, adversarial SR 95: close (5 <= 10)
    for v, status in ((85.5, "PASS"), (84.5, "FAIL")):
        for row in cells["fashion-mnist/constraint-sr"]["attacks"]["SR"]["rows"]:
            row["constraint_security"] = 1.0 if row["eps"] == 0 else v / 100
        assert by_id(rep.check_claims(cells))["E3-close-fashion-mnist"].status == status


def test_accuracy_cost_and_cnn_claims_fail():
    cells = paper_like()
    cells["fashion-mnist/adversarial"]["clean_accuracy"] = 0.875  # only 0.5 below the baseline
    for row in cells["fashion-mnist/cnn-augment-uniform"]["attacks"]["SCR"]["rows"][1:]:
        row["constraint_security"] = 0.15  # below the CNN baseline's 20
    claims = by_id(rep.check_claims(cells))
    assert claims["E3-accuracy-cost-fashion-mnist"].status == "FAIL"
    assert claims["E4-cnn-augment-helps"].status == "FAIL"


def test_missing_cells_make_claims_missing_not_pass_or_fail():
    cells = paper_like()
    del cells["fashion-mnist/constraint-lr"]
    claims = by_id(rep.check_claims(cells))
    assert claims["E1-sr-fashion-mnist"].status == "MISSING"
    assert claims["E1-sr-fashion-mnist"].missing == ["fashion-mnist/constraint-lr"]
    assert claims["E3-close-fashion-mnist"].status == "PASS"


def test_report_from_hand_made_cells(tmp_path):
    for cid, r in paper_like().items():
        path = tmp_path / "cells" / cid / "result.json"
        path.parent.mkdir(parents=True)
        r = {**r, "n_test": 100, "train_seconds": 1.0, "history": [{}], "threads": 1,
             "settings": rp.Plan(rp.BUDGETS["quick"], str(tmp_path)).settings()}
        path.write_text(json.dumps(r))
    paths = rep.write_report(tmp_path)
    text = paths["report"].read_text()
    assert "**FAIL**" not in text and text.count("**PASS**") >= 13
    assert "E2-scr-vs-sr-fashion-mnist: holds under the paper's and the authors' code's" in text
    assert (tmp_path / "fig-e4-scr-fashion-mnist.png").exists()
    assert "Figure 11" in text and "Figure 2, 13" in text


# ------------------------------------------------------------------ bad arguments

@pytest.mark.parametrize("argv, message", [
    (["--dataset", "mnist"], "--dataset 'mnist': choose from fashion-mnist, gtsrb"),
    (["--cells", "fashion-mnist/nothing*"], "matches no cell"),
])
def test_bad_arguments_are_clean_errors(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, "reproduce", "--budget", "smoke", "--out", tmp_path / "o", *argv)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--budget", "huge"], ["--jobs", "0"], ["--threads", "x"],
                                  ["--gtsrb-size", "40"]])
def test_bad_option_values_are_usage_errors(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli.main(["reproduce", "--out", str(tmp_path / "o"), *argv])
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_folder_of_other_settings_is_refused(tmp_path, fashion, capsys):
    rp.check_folder(plan(tmp_path, fashion))
    code, _, err = run(capsys, "reproduce", "--budget", "quick", "--dataset", "fashion-mnist",
                       "--out", tmp_path / "out", "--data-dir", fashion)
    assert code == 2 and "other settings" in err and "budget smoke there, quick now" in err


def test_missing_data_is_a_clean_error(tmp_path, capsys):
    code, _, err = run(capsys, "reproduce", "--budget", "smoke", "--dataset", "fashion-mnist",
                       "--cells", "fashion-mnist/baseline", "--out", tmp_path / "o",
                       "--data-dir", tmp_path)
    assert code == 2 and "Traceback" not in err and "fashion" in err.lower()


def test_jobs_threads_and_gtsrb_options_reach_the_plan(tmp_path, monkeypatch):
    monkeypatch.setattr(rp.os, "cpu_count", lambda: 8)
    args = cli.build_parser().parse_args(["reproduce", "--out", str(tmp_path), "--cells", "gtsrb/c*",
                                          "--gtsrb-size", "32"])
    p, cells, jobs = rp.plan_from_args(args)
    assert [c.regime for c in cells] == ["constraint-sr", "constraint-scr", "constraint-lr",
                                         "constraint-scr-authors"]
    assert (jobs, p.threads) == (4, 2)  # 4 cells on 8 cores: 4 processes of 2 threads
    assert rp.data_options("gtsrb", p) == {"size": 32, "grayscale": True, "classes": list(range(10))}
    assert p.settings()["gtsrb"]["size"] == 32
    args = cli.build_parser().parse_args(["reproduce", "--out", str(tmp_path), "--jobs", "3"])
    p, cells, jobs = rp.plan_from_args(args)
    assert (jobs, p.threads, len(cells)) == (3, 2, 20)
    # one cell: its attacks run side by side when --jobs asks for it (not by default)
    one = ["reproduce", "--out", str(tmp_path), "--cells", "fashion-mnist/cnn-baseline"]
    assert rp.plan_from_args(cli.build_parser().parse_args(one))[2] == 1
    p, _, jobs = rp.plan_from_args(cli.build_parser().parse_args(one + ["--jobs", "2"]))
    assert (jobs, p.threads) == (2, 4)
    _, _, jobs = rp.plan_from_args(cli.build_parser().parse_args(one + ["--jobs", "9"]))
    assert jobs == len(rp.ATTACKS)


def test_budgets_are_the_papers_settings_and_scaled_copies():
    paper = rp.BUDGETS["paper"]
    assert (paper.epochs, paper.lr, paper.batch_size, paper.alpha, paper.beta, paper.train_steps,
            paper.step_size, paper.eval_steps, paper.samples) == (100, 1e-4, 128, 1, 0.2, 50, 0.01, 50, 100)
    assert paper.train_limit is None and paper.test_limit is None
    assert paper.eps == (0.0, 0.02, 0.04, 0.06, 0.08, 0.1)
    quick = rp.BUDGETS["quick"]
    assert replace(quick, name="paper", epochs=100, lr=1e-4, train_steps=50, step_size=0.01,
                   test_limit=None, cnn_epochs=100, cnn_train_limit=None, cnn_test_limit=None,
                   verify_points=50, verify_timeout=2.0) == paper


def test_a_folder_made_before_verification_gets_it_without_retraining(tmp_path, fashion, monkeypatch):
    old = replace(plan(tmp_path, fashion), budget=replace(rp.BUDGETS["smoke"], verify_points=0))
    rp.run_grid([BASE], old, jobs=1, log=lambda m: None)
    saved = json.loads((Path(old.out) / "settings.json").read_text())
    for k in [k for k in saved["budget"] if k.startswith("verify_")]:
        del saved["budget"][k]  # the settings.json of a folder made before the fields existed
    (Path(old.out) / "settings.json").write_text(json.dumps(saved))
    result = rp.cell_dir(old.out, BASE) / "result.json"
    assert "verification" not in json.loads(result.read_text())

    def no_training(*a, **k):
        raise AssertionError("a trained cell was trained again")
    monkeypatch.setattr(Trainer, "fit", no_training)
    p = plan(tmp_path, fashion)
    status = rp.run_grid([BASE], p, jobs=1, log=lambda m: None)
    assert status["done"] == [BASE.id]
    r = json.loads(result.read_text())
    assert set(r["verification"]["attacks"]) == set(rp.ATTACKS)
    assert json.loads((Path(p.out) / "settings.json").read_text()) == json.loads(
        json.dumps(p.settings()))
    assert rp.run_grid([BASE], p, jobs=1, log=lambda m: None)["skipped"] == [BASE.id]


def test_the_cnn_is_verified_too(tmp_path, fashion, monkeypatch):
    """E4's CNN (max-pooling) goes through the verifier as the MLP does (runtime/bounds.py
    writes its pools with ReLUs): each point proved, falsified or left undecided, per attack.
    Its evaluation runs the network on CNN_FORWARD_ROWS rows at a time (fewer here than the
    smoke budget's test images, so that the split happens)."""
    from robustspec.runtime.verify import VERDICTS
    cnn = rp.Cell("fashion-mnist", "baseline", "cnn")
    p = plan(tmp_path, fashion)
    monkeypatch.setattr(rp, "CNN_FORWARD_ROWS", 5)
    logs = []
    assert rp.run_grid([cnn], p, jobs=1, log=logs.append)["done"] == [cnn.id]
    for name in rp.ATTACKS:
        saved = json.loads((rp.cell_dir(p.out, cnn) / f"eval-{name.lower()}.json").read_text())
        assert saved["settings"]["forward_rows"] == 5
    v = json.loads((rp.cell_dir(p.out, cnn) / "result.json").read_text())["verification"]
    assert set(v["attacks"]) == set(rp.ATTACKS)
    for rows in v["attacks"].values():
        assert isinstance(rows, list) and [r["eps"] for r in rows] == list(p.budget.verify_eps)
        for r in rows:  # proved, falsified, undecided (or on the boundary): every point once
            assert sum(r[v] for v in VERDICTS) == r["points"] == p.budget.verify_points
            assert r["satisfaction"] == r["verified"] / r["points"]
    assert any(f"{cnn.id}: SR verified" in m for m in logs)
    assert rp.cell_complete(p, cnn)
    text = rep.write_report(p.out)["report"].read_text()
    assert "Not verified:" not in text and f"| {cnn.id} | - |" not in text


def test_a_refused_verification_is_tried_again_on_the_next_run(tmp_path, fashion, monkeypatch):
    """A network the verifier refused (as the CNN's max-pooling was before bounds took it) is
    verified on the next run, without training or evaluating it again; a cell verified
    without refusals is then complete."""
    from robustspec.dsl.errors import RobustspecError
    from robustspec.runtime import verify as verify_mod

    real = verify_mod.verify

    def refuse(*a, **k):
        raise RobustspecError("bound propagation does not support this layer")
    monkeypatch.setattr(verify_mod, "verify", refuse)
    p = plan(tmp_path, fashion)
    assert rp.run_grid([BASE], p, jobs=1, log=lambda m: None)["done"] == [BASE.id]
    result = rp.cell_dir(p.out, BASE) / "result.json"
    v = json.loads(result.read_text())["verification"]
    assert all("refused" in r for r in v["attacks"].values())
    assert not rp.cell_complete(p, BASE)

    def no_training(*a, **k):
        raise AssertionError("a trained cell was trained again")
    monkeypatch.setattr(Trainer, "fit", no_training)
    monkeypatch.setattr(verify_mod, "verify", real)
    assert rp.run_grid([BASE], p, jobs=1, log=lambda m: None)["done"] == [BASE.id]
    v = json.loads(result.read_text())["verification"]
    assert all(isinstance(r, list) and r for r in v["attacks"].values())  # verified now
    assert rp.cell_complete(p, BASE)
    assert rp.run_grid([BASE], p, jobs=1, log=lambda m: None)["skipped"] == [BASE.id]


def test_no_solver_is_a_clean_error_before_any_training(tmp_path, fashion, monkeypatch):
    from robustspec.dsl.errors import MissingExtra
    from robustspec.runtime import verify as verify_mod

    def none(verifier):
        raise MissingExtra("verify", "highspy", "complete verification (--verifier auto)")
    monkeypatch.setattr(verify_mod, "pick_solver", none)
    p = plan(tmp_path, fashion)
    with pytest.raises(MissingExtra, match="verify"):
        rp.run_grid([BASE], p, jobs=1, log=lambda m: None)
    assert not rp.cell_dir(p.out, BASE).exists()


def test_a_failed_verification_keeps_training_and_evaluation(tmp_path, fashion, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("solver crashed")
    monkeypatch.setattr(rp, "verify_cell", broken)
    p = plan(tmp_path, fashion)
    status = rp.run_grid([BASE], p, jobs=1, log=lambda m: None)
    assert "solver crashed" in status["failed"][BASE.id]
    r = json.loads((rp.cell_dir(p.out, BASE) / "result.json").read_text())
    assert "verification" not in r and set(r["attacks"]) == set(rp.ATTACKS)
    assert not rp.cell_complete(p, BASE)  # the next run verifies it
    assert BASE.id in rep.load_cells(p.out)


def test_units_wait_for_their_cell_and_start_longest_first():
    """With several jobs the grid runs units: a cell's attacks only after its training, its
    result only when no attack is left or running; each cell's result first, then the longest."""
    U = rp.Unit
    a, b = SR, BASE
    blocked = {a: [U(a, "train")] + [U(a, n) for n in rp.ATTACKS] + [U(a, "result")],
               b: [U(b, n) for n in rp.ATTACKS] + [U(b, "result")]}
    est = {u: 100.0 if u.part == "train" else 10.0 if u.part != "result" else 1.0
           for us in blocked.values() for u in us}
    est[U(b, "SCR")] = 20.0
    order = rp.startable(blocked, [], est)
    assert order[0] == U(a, "train")  # the longest; a's attacks wait for it
    assert order[1] == U(b, "SCR") and {u.part for u in order[2:]} == set(rp.ATTACKS) - {"SCR"}
    assert all(u.cell == b for u in order[1:])
    blocked[a].pop(0)  # a's training runs: its attacks still wait
    assert all(u.cell == b for u in rp.startable(blocked, [U(a, "train")], est))
    assert U(a, "SR") in rp.startable(blocked, [], est)  # and start once it has ended
    blocked[b] = [U(b, "result")]
    assert U(b, "result") not in rp.startable(blocked, [U(b, "LR")], est)  # an attack runs
    assert rp.startable(blocked, [], est)[0] == U(b, "result")  # first when it may start


def test_units_of_a_killed_cell_are_what_it_misses(tmp_path, fashion):
    p = plan(tmp_path, fashion)
    folder = rp.cell_dir(p.out, BASE)
    assert [u.part for u in rp.units_of(BASE, p)] == ["train", *rp.ATTACKS, "result"]
    (folder / "train").mkdir(parents=True)
    history = folder / "train" / "history.json"
    history.write_text(json.dumps([{}] * (p.budget.epochs - 1)))  # killed in the last epoch
    assert rp.units_of(BASE, p)[0].part == "train"
    history.write_text(json.dumps([{}] * p.budget.epochs))
    (folder / "eval-sr.json").write_text("{}")
    assert [u.part for u in rp.units_of(BASE, p)] == [*rp.ATTACKS, "result"]  # not verified
    (folder / "verify-sr.json").write_text("[]")
    assert [u.part for u in rp.units_of(BASE, p)] == [n for n in rp.ATTACKS if n != "SR"] + ["result"]


def test_two_jobs_run_units_and_give_the_one_job_numbers(tmp_path, fashion):
    """The unit scheduler gives what run_cell gives; a cell killed after its training and its
    SR attack is resumed without training or evaluating SR again."""
    one, two = plan(tmp_path, fashion, "one"), plan(tmp_path, fashion, "two")
    rp.run_grid([BASE], one, jobs=1, log=lambda m: None)
    logs = []
    assert rp.run_grid([BASE], two, jobs=2, log=logs.append, poll_s=0.5)["done"] == [BASE.id]
    assert any(f"{BASE.id} trained in" in m for m in logs)
    assert any(f"{BASE.id} done (" in m for m in logs)

    def numbers(out):
        r = json.loads((rp.cell_dir(out, BASE) / "result.json").read_text())
        rows = {a: [{k: v for k, v in row.items() if k != "seconds"} for row in e["rows"]]
                for a, e in r["attacks"].items()}
        verified = {a: [{k: row[k] for k in ("verified", "falsified", "unknown")} for row in rs]
                    for a, rs in r["verification"]["attacks"].items()}
        return rows, verified, [h["loss"] for h in r["history"]]
    assert numbers(two.out) == numbers(one.out)
    folder = rp.cell_dir(two.out, BASE)
    assert not list(folder.glob("status*.json"))
    # killed after SR: the result and SCR's files lost
    for name in ("result.json", "eval-scr.json", "verify-scr.json"):
        (folder / name).unlink()
    weights, sr = (folder / "train" / "last.pt").read_bytes(), (folder / "eval-sr.json").read_bytes()
    assert rp.run_grid([BASE], two, jobs=2, log=lambda m: None, poll_s=0.5)["done"] == [BASE.id]
    assert (folder / "train" / "last.pt").read_bytes() == weights
    assert (folder / "eval-sr.json").read_bytes() == sr
    assert numbers(two.out) == numbers(one.out)


def test_a_killed_worker_process_reruns_its_unit(tmp_path, fashion):
    """A worker killed while the cell's training is queued or running (the OOM killer, a
    crash) breaks the process pool: the grid starts a new pool and runs the unit again (it
    resumes from its checkpoint), not stopping. The first worker is killed as soon as it
    exists, so the kill does not race the (short) smoke training."""
    import multiprocessing
    import os
    import signal
    import threading

    p = plan(tmp_path, fashion)
    killed = []

    def kill_a_worker():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            children = multiprocessing.active_children()
            if children:
                victim = children[0]
                os.kill(victim.pid, signal.SIGKILL)
                killed.append(victim.pid)
            time.sleep(0.01)
    watcher = threading.Thread(target=kill_a_worker, daemon=True)
    watcher.start()
    logs = []
    status = rp.run_grid([SR], p, jobs=2, log=logs.append, poll_s=0.5)
    watcher.join()
    assert killed, "no worker process was seen"
    assert status["done"] == [SR.id] and not status["failed"]
    assert any("a worker process died during its train" in m for m in logs), logs
    assert rp.cell_complete(p, SR)


def test_cells_start_longest_first_with_several_jobs(tmp_path):
    """With --jobs N the long PGD cells start first, LR's (the dearest step) before SR's,
    and the cheap regimes fill the end; equal estimates keep the grid's order."""
    p = rp.Plan(rp.BUDGETS["paper"], str(tmp_path / "out"), str(tmp_path))
    cells = [rp.Cell("fashion-mnist", r) for r in rp.REGIMES]
    est = {c: rp.estimate_seconds(c, p) for c in cells}
    order = [c.regime for c in rp.longest_first(cells, est)]
    assert order[0] == "constraint-lr"
    assert order[-3:] == ["augment-fgsm", "augment-uniform", "baseline"]
    pgd = [r for r in rp.REGIMES if r.startswith(("adversarial", "constraint")) and r != "constraint-lr"]
    assert sorted(order[1:1 + len(pgd)]) == sorted(pgd)
    assert est[rp.Cell("fashion-mnist", "constraint-lr")] > est[SR] > est[BASE]


def test_time_left_of_running_cells_and_of_the_grid():
    """Worked by hand: a running cell's training goes at its own epoch rate in this run, its
    evaluation and verification by the (scaled) estimates and the share of attacks left; the
    grid ends when the last worker does, queued cells going to the first worker free."""
    parts = {"train": 1000.0, "evaluate": 100.0, "verify": 200.0}
    train = {"phase": "train", "epoch": 10, "from_epoch": 0, "epochs": 100, "started": 0.0,
             "time": 50.0}  # 5 s per epoch
    assert rp.cell_time_left(train, parts, 1.0, now=50.0) == 5 * 90 + 300
    assert rp.cell_time_left(train, parts, 1.0, now=60.0) == 5 * 90 - 10 + 300
    resumed = {**train, "epoch": 50, "from_epoch": 40}  # 10 epochs this run in 50 s
    assert rp.cell_time_left(resumed, parts, 1.0, now=50.0) == 5 * 50 + 300
    fresh = {**train, "epoch": 0, "time": 0.0}  # no epoch yet: the estimate, less the time spent
    assert rp.cell_time_left(fresh, parts, 1.0, now=100.0) == 900 + 300
    # resumed at epoch 40 (its status starts there), no epoch yet in this run: 60% of it
    waiting = {**train, "epoch": 40, "from_epoch": 40, "time": 0.0}
    assert rp.cell_time_left(waiting, parts, 1.0, now=100.0) == 600 - 100 + 300
    names = list(rp.ATTACKS)
    evaluating = {"phase": "evaluate", "attack": names[1], "started": 0.0, "time": 0.0}
    assert rp.cell_time_left(evaluating, parts, 1.0, now=0.0) == pytest.approx(
        100 * (len(names) - 1) / len(names) + 200)
    verifying = {"phase": "verify", "attack": names[0], "started": 0.0, "time": 0.0}
    assert rp.cell_time_left(verifying, parts, 2.0, now=0.0) == 400
    assert rp.cell_time_left(None, parts, 2.0, now=0.0) == 2 * 1300
    # two workers free after 40 and 100 s; 50 goes to the first (90), 30 to it again (120),
    # 20 to the second (120)
    assert rp.grid_time_left([100.0, 40.0], [50.0, 30.0, 20.0], jobs=2) == 120
    assert rp.grid_time_left([], [50.0, 30.0, 20.0], jobs=1) == 100
    assert rp.grid_time_left([], [50.0, 30.0, 20.0], jobs=3) == 50
    # before any cell finishes, queued cells are scaled by the running cells' training rate
    cell = rp.Cell("fashion-mnist", "constraint-sr")
    assert rp._training_scale({cell: train}, {cell: parts}) == 0.5  # 5 s per epoch, 10 estimated
    assert rp._training_scale({cell: fresh}, {cell: parts}) == 1.0
    assert rp._training_scale({cell: evaluating}, {cell: parts}, before=0.5) == 0.5  # kept


def test_a_resumed_cells_estimate_is_the_work_its_folder_does_not_hold(tmp_path):
    """Worked by hand: 40 of 100 epochs in history.json leave 60% of the training; two of the
    four attacks evaluated and one verified leave half the evaluation and three quarters of
    the verification; a trained cell has no training left; a fresh one has everything."""
    p = rp.Plan(rp.BUDGETS["paper"], str(tmp_path / "out"), str(tmp_path))
    parts = {"train": 1000.0, "evaluate": 400.0, "verify": 800.0}
    assert rp.work_left(SR, p, parts) == 2200.0
    folder = rp.cell_dir(p.out, SR)
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "history.json").write_text(json.dumps([{"epoch": i} for i in range(40)]))
    names = [n.lower() for n in rp.ATTACKS]
    for n in names[:2]:
        (folder / f"eval-{n}.json").write_text("{}")
    (folder / f"verify-{names[0]}.json").write_text("{}")
    assert rp.work_left(SR, p, parts) == pytest.approx(600 + 200 + 600)
    assert rp.training_left(SR, p, parts) == pytest.approx(600)  # a train unit's estimate
    (folder / "train" / "history.json").write_text(json.dumps([{}] * 100))  # trained
    assert rp.work_left(SR, p, parts) == pytest.approx(200 + 600)


def test_a_units_estimate_holds_the_verification_it_will_do():
    """An attack unit evaluates and verifies its share; the result unit only assembles, unless
    the cell was evaluated before and only its verification is left (then that is its work)."""
    fresh = {"train": 100.0, "evaluate": 40.0, "verify": 80.0}
    assert rp.unit_estimate(rp.Unit(BASE, "SR"), fresh) == pytest.approx(120.0 / len(rp.ATTACKS))
    assert rp.unit_estimate(rp.Unit(BASE, "result"), fresh) == 5.0
    evaluated = {"train": 0.0, "evaluate": 0.0, "verify": 80.0}
    assert rp.unit_estimate(rp.Unit(BASE, "result"), evaluated) == 85.0
    # a resumed run: the attack's evaluation was saved, its verification was not (so its
    # time, not the whole unit's, calibrates the time left when it ends)
    assert rp.unit_estimate(rp.Unit(BASE, "SR"), fresh, evaluated=True) == \
        pytest.approx(80.0 / len(rp.ATTACKS))
