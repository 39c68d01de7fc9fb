"""The report of a `robustspec reproduce` folder: report.md, figures as PNG, results.json.

Reads whatever cells DIR/cells/**/result.json holds (so cells run on several machines can be
put in one folder), sets Table 2 beside the paper's, tabulates constraint security per attack,
draws the paper's figures, and checks each of the paper's claims (E1-E4) on our numbers with
rules stated numerically (CLAIM_RULES); a claim whose cells are missing says which.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .files import atomic_write_text

# Table 2 of the paper (test accuracy, %)
PAPER_TABLE2 = {
    "baseline": {"fashion-mnist": 88.2, "gtsrb": 92.4},
    "augment-uniform": {"fashion-mnist": 88.6, "gtsrb": 92.8},
    "augment-fgsm": {"fashion-mnist": 88.8, "gtsrb": 94.5},
    "adversarial": {"fashion-mnist": 85.1, "gtsrb": 83.5},
    "constraint-sr": {"fashion-mnist": 88.2, "gtsrb": 93.3},
    "constraint-scr": {"fashion-mnist": 88.1, "gtsrb": 91.9},
    "constraint-lr": {"fashion-mnist": 86.6, "gtsrb": 93.1},
}
DATASET_NAMES = {"fashion-mnist": "FASHION", "gtsrb": "GTSRB"}
ATTACK_ORDER = ("SR", "SCR", "LR", "SCR-authors")
# the two SCR definitions: (attack, the network trained with that definition)
SCR_DEFINITIONS = {"paper": ("SCR", "constraint-scr"),
                   "authors": ("SCR-authors", "constraint-scr-authors")}
DEFINITION_NAMES = {"paper": "the paper's definition, softmax >= eta",
                    "authors": "the authors' code's definition, raw score >= log 0.3"}

# thresholds, in percentage points of mean constraint security over eps > 0
TOL = 1.0      # "at least as secure as": not lower by more than this
HELP = 5.0     # "helps": raises security over the baseline's by more than this
CLOSE = 10.0   # "close to" / "almost as good as": lower by at most this
ACC_COST = 1.0  # "costs accuracy": clean accuracy lower than the baseline's by more than this

CLAIM_RULES = f"""\
Every comparison uses **S(network, attack)**: the mean constraint security (%) over the
evaluated eps > 0 (0.02 ... 0.1), one number per curve; eps 0 is left out because it measures
the clean property, not robustness. Thresholds (percentage points):
- "A at least as secure as B": S(A) >= S(B) - {TOL:g}.
- "the LR attack is the hardest" for a network: S(net, LR) <= S(net, SR) and S(net, LR) <= S(net, SCR).
- "training T does not help against attack X": S(T, X) - S(baseline, X) <= {HELP:g}.
- "A helps against X less than B": S(A, X) < S(B, X).
- "A close to (almost as good as) B": S(A) >= S(B) - {CLOSE:g}.
- "A below B": S(A) < S(B).
- "costs accuracy": clean accuracy below the baseline's by more than {ACC_COST:g} point(s).
"""


# ------------------------------------------------------------------ reading a folder

def load_cells(out: str | Path) -> dict[str, dict]:
    """Every finished cell's result.json under OUT/cells, by cell id."""
    root = Path(out) / "cells"
    cells = {}
    for path in sorted(root.glob("**/result.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a result is written atomically; anything else is not ours
        cells[r["cell"]] = r
    return cells


def curve(result: dict, attack: str) -> list[tuple[float, float]] | None:
    a = result.get("attacks", {}).get(attack)
    if a is None:
        return None
    return [(row["eps"], 100 * row["constraint_security"]) for row in a["rows"]]


def mean_security(result: dict | None, attack: str) -> float | None:
    """S(network, attack): mean constraint security (%) over eps > 0."""
    if result is None:
        return None
    pts = curve(result, attack)
    if not pts:
        return None
    vals = [s for e, s in pts if e > 0] or [s for _, s in pts]
    return sum(vals) / len(vals)


# ------------------------------------------------------------------ claims

@dataclass
class Claim:
    id: str
    experiment: str
    dataset: str
    claim: str
    rule: str
    status: str                  # PASS, FAIL or MISSING
    numbers: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)
    definition: str | None = None  # SCR definition the claim was checked under

    def evidence(self) -> str:
        if self.status == "MISSING":
            return "missing: " + ", ".join(self.missing)
        return ", ".join(f"{k} = {v:.1f}" if isinstance(v, float) else f"{k} = {v}"
                         for k, v in self.numbers.items())


class _Numbers:
    """S(...) and accuracies looked up by (dataset, regime id), recording what is missing."""

    def __init__(self, cells: dict, dataset: str):
        self.cells, self.dataset = cells, dataset
        self.missing: list[str] = []

    def cell(self, regime: str) -> dict | None:
        cid = f"{self.dataset}/{regime}"
        r = self.cells.get(cid)
        if r is None and cid not in self.missing:
            self.missing.append(cid)
        return r

    def S(self, regime: str, attack: str) -> float | None:
        r = self.cell(regime)
        if r is None:
            return None
        s = mean_security(r, attack)
        if s is None:
            self.missing.append(f"{self.dataset}/{regime} ({attack} attack)")
        return s

    def acc(self, regime: str) -> float | None:
        r = self.cell(regime)
        return None if r is None else 100 * r["clean_accuracy"]


def _claim(cid, exp, dataset, text, rule, nums: _Numbers, numbers: dict, decide,
           definition=None) -> Claim:
    """A claim decided by `decide(values of numbers, in order)`, or MISSING when a cell is."""
    if nums.missing or any(v is None for v in numbers.values()):
        return Claim(cid, exp, dataset, text, rule, "MISSING", {}, sorted(set(nums.missing)),
                     definition)
    verdict = "PASS" if decide(list(numbers.values())) else "FAIL"
    return Claim(cid, exp, dataset, text, rule, verdict, numbers, [], definition)


def check_claims(cells: dict[str, dict]) -> list[Claim]:
    """Each of the paper's claims, per dataset present in the grid, PASS/FAIL/MISSING."""
    claims: list[Claim] = []
    datasets = sorted({r["dataset"] for r in cells.values()}) or ["fashion-mnist"]
    for d in datasets:
        D = DATASET_NAMES.get(d, d)

        def N():
            return _Numbers(cells, d)

        # E1: comparable constraints
        for attack in ("SR", "LR"):
            n = N()
            nums = {f"S(LR-trained, {attack})": n.S("constraint-lr", attack),
                    f"S(SR-trained, {attack})": n.S("constraint-sr", attack)}
            claims.append(_claim(
                f"E1-{attack.lower()}-{d}", "E1", d,
                f"{D}: the LR-trained network is at least as secure as the SR-trained one "
                f"against the {attack} attack", f"S(LR-trained) >= S(SR-trained) - {TOL:g}", n,
                nums, lambda v: v[0] >= v[1] - TOL))
        for defn, (scr_attack, _) in SCR_DEFINITIONS.items():
            n = N()
            nums = {}
            for net, reg in (("SR-trained", "constraint-sr"), ("LR-trained", "constraint-lr")):
                for attack in ("LR", "SR", scr_attack):
                    nums[f"S({net}, {attack})"] = n.S(reg, attack)

            def hardest(v):
                return v[0] <= min(v[1], v[2]) and v[3] <= min(v[4], v[5])
            claims.append(_claim(
                f"E1-hardest-{defn}-{d}", "E1", d,
                f"{D}: for both the SR- and the LR-trained network the LR attack is the hardest "
                f"(vs SR and {scr_attack})", "S(net, LR) <= S(net, SR) and S(net, LR) <= "
                f"S(net, {scr_attack}) for both", n, nums, hardest, defn))

        # E2: incomparable constraints, under both SCR definitions
        for defn, (scr_attack, scr_net) in SCR_DEFINITIONS.items():
            n = N()
            nums = {"S(SCR-trained, SR)": n.S(scr_net, "SR"), "S(baseline, SR)": n.S("baseline", "SR")}
            claims.append(_claim(
                f"E2-scr-vs-sr-{defn}-{d}", "E2", d,
                f"{D}: SCR training ({DEFINITION_NAMES[defn]}) does not help against SR attacks",
                f"S(SCR-trained, SR) - S(baseline, SR) <= {HELP:g}", n, nums,
                lambda v: v[0] - v[1] <= HELP, defn))
            n = N()
            nums = {f"S(SR-trained, {scr_attack})": n.S("constraint-sr", scr_attack),
                    f"S(SCR-trained, {scr_attack})": n.S(scr_net, scr_attack),
                    f"S(baseline, {scr_attack})": n.S("baseline", scr_attack)}
            claims.append(_claim(
                f"E2-sr-vs-scr-{defn}-{d}", "E2", d,
                f"{D}: SR training helps against SCR attacks ({DEFINITION_NAMES[defn]}) less "
                "than SCR training", f"S(SR-trained, {scr_attack}) < S(SCR-trained, {scr_attack})", n,
                nums, lambda v: v[0] < v[1], defn))

        # E3: constraint training vs augmentation and adversarial training (SR attack)
        n = N()
        nums = {"S(constraint SR, SR)": n.S("constraint-sr", "SR"),
                "S(adversarial, SR)": n.S("adversarial", "SR")}
        claims.append(_claim(
            f"E3-close-{d}", "E3", d, f"{D}: constraint loss (SR) is almost as good as "
            "adversarial training against the SR attack",
            f"S(constraint SR) >= S(adversarial) - {CLOSE:g}", n, nums,
            lambda v: v[0] >= v[1] - CLOSE))
        n = N()
        nums = {"S(augment RU, SR)": n.S("augment-uniform", "SR"),
                "S(augment FGSM, SR)": n.S("augment-fgsm", "SR"),
                "S(constraint SR, SR)": n.S("constraint-sr", "SR"),
                "S(adversarial, SR)": n.S("adversarial", "SR")}
        claims.append(_claim(
            f"E3-augment-below-{d}", "E3", d, f"{D}: both data augmentations are below both "
            "constraint loss (SR) and adversarial training against the SR attack",
            "max(S(RU), S(FGSM)) < min(S(constraint SR), S(adversarial))", n, nums,
            lambda v: max(v[:2]) < min(v[2:])))
        n = N()
        nums = {"S(augment RU, SR)": n.S("augment-uniform", "SR"),
                "S(augment FGSM, SR)": n.S("augment-fgsm", "SR"),
                "S(baseline, SR)": n.S("baseline", "SR")}
        claims.append(_claim(
            f"E3-augment-below-baseline-{d}", "E3", d, f"{D}: networks trained with data "
            "augmentation are even below the baseline against the SR attack",
            "max(S(RU), S(FGSM)) < S(baseline)", n, nums,
            lambda v: max(v[:2]) < v[2]))
        n = N()
        regimes = list(PAPER_TABLE2)
        nums = {"accuracy(adversarial)": n.acc("adversarial"), "accuracy(baseline)": n.acc("baseline")}
        accs = {r: n.acc(r) for r in regimes}
        if all(v is not None for v in accs.values()):
            lowest = min(accs, key=accs.get)
            nums["lowest of the 7"] = lowest
        else:
            nums["lowest of the 7"] = None
        claims.append(_claim(
            f"E3-accuracy-cost-{d}", "E3", d, f"{D}: adversarial training costs accuracy: the "
            "largest drop of the seven regimes", f"accuracy(adversarial) < accuracy(baseline) - "
            f"{ACC_COST:g} and adversarial is the lowest of the 7", n, nums,
            lambda v: v[0] < v[1] - ACC_COST
            and v[2] == "adversarial"))

        # E4: random uniform below FGSM (Figure 4, SR attack)
        n = N()
        nums = {"S(augment RU, SR)": n.S("augment-uniform", "SR"),
                "S(augment FGSM, SR)": n.S("augment-fgsm", "SR")}
        claims.append(_claim(
            f"E4-ru-below-fgsm-{d}", "E4", d, f"{D}: random uniform augmentation is below FGSM "
            "augmentation against the SR attack", "S(RU) < S(FGSM)", n, nums,
            lambda v: v[0] < v[1]))

    # E4 with the larger network (Figure 11: SCR attack, Fashion-MNIST)
    d = "fashion-mnist"
    if any(r["dataset"] == d for r in cells.values()):
        n = _Numbers(cells, d)
        nums = {"S(CNN RU, SCR)": n.S("cnn-augment-uniform", "SCR"),
                "S(CNN FGSM, SCR)": n.S("cnn-augment-fgsm", "SCR")}
        claims.append(_claim(
            "E4-cnn-ru-below-fgsm", "E4", d, "FASHION, CNN: random uniform augmentation is below "
            "FGSM augmentation against the SCR attack", "S(RU) < S(FGSM)", n, nums,
            lambda v: v[0] < v[1]))
        n = _Numbers(cells, d)
        nums = {"S(CNN RU, SCR)": n.S("cnn-augment-uniform", "SCR"),
                "S(CNN FGSM, SCR)": n.S("cnn-augment-fgsm", "SCR"),
                "S(CNN baseline, SCR)": n.S("cnn-baseline", "SCR")}
        claims.append(_claim(
            "E4-cnn-augment-helps", "E4", d, "FASHION, CNN: with the larger network data "
            "augmentation improves robustness compared to the baseline (SCR attack)",
            "min(S(RU), S(FGSM)) > S(baseline)", n, nums,
            lambda v: min(v[:2]) > v[2]))
        n = _Numbers(cells, d)
        nums = {"S(CNN RU, SCR)": n.S("cnn-augment-uniform", "SCR"),
                "S(CNN FGSM, SCR)": n.S("cnn-augment-fgsm", "SCR"),
                "S(CNN constraint SR, SCR)": n.S("cnn-constraint-sr", "SCR")}
        claims.append(_claim(
            "E4-cnn-trend", "E4", d, "FASHION, CNN: data augmentation still lags behind "
            "constraint training: the trend is stable with the larger network (SCR attack)",
            "max(S(RU), S(FGSM)) < S(constraint SR)", n, nums,
            lambda v: max(v[:2]) < v[2]))
    return claims


# ------------------------------------------------------------------ figures

_STYLES = ["-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))]


_COLORS = {}  # one colour per regime or attack in every figure


def _color(label: str) -> str:
    palette = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    return _COLORS.setdefault(label, palette[len(_COLORS) % len(palette)])


def _plot(panels: list[tuple[str, dict[str, list]]], path: Path, title: str) -> Path | None:
    """panels: [(panel title, {line label: [(eps, security %)]})]; None when nothing to draw."""
    if not any(lines for _, lines in panels):
        return None
    from .plots import _save, plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 4.1), squeeze=False)
    for ax, (ptitle, lines) in zip(axes[0], panels):
        for i, (label, pts) in enumerate(lines.items()):
            xs, ys = zip(*pts)
            ax.plot(xs, ys, linestyle=_STYLES[i % len(_STYLES)], marker="o", ms=3, label=label,
                    color=_color(label))
        ax.set_title(ptitle, fontsize=9)
        ax.set_xlabel("Epsilon")
        ax.set_ylabel("Constraint security (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        if lines:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _lines(cells, ids_labels, attack):
    out = {}
    for cid, label in ids_labels:
        r = cells.get(cid)
        pts = curve(r, attack) if r else None
        if pts:
            out[label] = pts
    return out


METHODS = [("baseline", "Baseline"), ("augment-uniform", "Data Augmentation (Random Uniform)"),
           ("augment-fgsm", "Data Augmentation (FGSM)"), ("adversarial", "Adversarial Training"),
           ("constraint-sr", "Constraint Loss (SR)")]
LOSSES = [("baseline", "Baseline"), ("constraint-sr", "Constraint Loss (SR)"),
          ("constraint-scr", "Constraint Loss (SCR)"), ("constraint-lr", "Constraint Loss (LR)"),
          ("constraint-scr-authors", "Constraint Loss (SCR, authors' code)")]
ATTACK_NAMES = {"SR": "SR Attack", "SCR": "SCR Attack", "LR": "LR Attack",
                "SCR-authors": "SCR Attack (authors' definition)"}
for _label in [lab for _, lab in METHODS + LOSSES] + list(ATTACK_NAMES.values()):
    _color(_label)  # fixed colours, whatever cells a folder holds


def figures(cells: dict, out: Path) -> list[tuple[str, str, Path]]:
    """The paper's figures that our cells can fill: [(figure number(s), caption, path)]."""
    made = []
    datasets = sorted({r["dataset"] for r in cells.values()})
    for d in datasets:
        D = DATASET_NAMES.get(d, d)
        for fig, attack in (("4, 5", "SR"), ("6", "LR"), ("7", "SCR"), ("7 (authors' SCR)", "SCR-authors")):
            p = _plot([(f"Robustness against {ATTACK_NAMES[attack]} ({D})",
                        _lines(cells, [(f"{d}/{r}", lab) for r, lab in METHODS], attack))],
                      out / f"fig-methods-{attack.lower()}-{d}.png",
                      "adversarial training vs data augmentation vs constraint loss")
            if p:
                made.append((fig, f"{D}: training methods against the {ATTACK_NAMES[attack]}", p))
        for fig, attack in (("3, 8", "SR"), ("9", "LR"), ("10", "SCR"), ("10 (authors' SCR)", "SCR-authors")):
            p = _plot([(f"Robustness against {ATTACK_NAMES[attack]} ({D})",
                        _lines(cells, [(f"{d}/{r}", lab) for r, lab in LOSSES], attack))],
                      out / f"fig-losses-{attack.lower()}-{d}.png", "choices of constraint loss")
            if p:
                made.append((fig, f"{D}: constraint losses against the {ATTACK_NAMES[attack]}", p))
        for fig, regime in (("12", "adversarial"), ("2, 13", "constraint-sr"), ("2, 14", "constraint-lr")):
            r = cells.get(f"{d}/{regime}")
            if not r:
                continue
            lines = {ATTACK_NAMES[a]: curve(r, a) for a in ATTACK_ORDER if curve(r, a)}
            p = _plot([(f"Neural net trained with {r['label']} ({D})", lines)],
                      out / f"fig-network-{regime}-{d}.png", "one network, the attacks")
            if p:
                made.append((fig, f"{D}: the {r['label']} network against each attack", p))
    if any(r["dataset"] == "fashion-mnist" for r in cells.values()):
        e4 = [("baseline", "Baseline"), ("augment-uniform", "Data Augmentation (Random Uniform)"),
              ("augment-fgsm", "Data Augmentation (FGSM)"), ("constraint-sr", "Constraint Loss (SR)")]
        p = _plot([("Paper's MLP", _lines(cells, [(f"fashion-mnist/{r}", lab) for r, lab in e4], "SCR")),
                   ("Bigger architecture (CNN stand-in)",
                    _lines(cells, [(f"fashion-mnist/cnn-{r}", lab) for r, lab in e4], "SCR"))],
                  out / "fig-e4-scr-fashion-mnist.png",
                  "Robustness against SCR Attack (FASHION): small vs bigger network")
        if p:
            cnn = any(f"fashion-mnist/cnn-{r}" in cells for r, _ in e4)
            made.append(("11", "FASHION: SCR attack, the paper's MLP (left) and the CNN (right)"
                          + ("" if cnn else "; no CNN cell is in this folder, so the right panel "
                             "is empty"), p))
    return made


# ------------------------------------------------------------------ the report

def _solvers(cells: dict, ids: list[str]) -> str:
    names = {"milp": "HiGHS MILP", "marabou": "Marabou"}
    used = sorted({names.get(r.get("verifier"), str(r.get("verifier")))
                   for cid in ids for rows in cells[cid]["verification"]["attacks"].values()
                   if isinstance(rows, list) for r in rows})
    return ", ".join(used) or "none"


def _satisfaction_section(cells: dict, order: list[str]) -> list[str]:
    """Constraint satisfaction (proved) beside constraint security (not falsified) on the same
    points, per attack and eps: the third metric of the paper, its future work."""
    have = [cid for cid in order if cid in cells and cells[cid].get("verification")]
    if not have:
        return []
    v0 = cells[have[0]]["verification"]
    L = ["## Constraint satisfaction (%), proved by the verifier", "",
         f"On the first {v0['points']} evaluated test images: the {v0['attack_steps']}-step PGD attack, "
         f"then CROWN bounds, then the complete solver ({_solvers(cells, have)}) with "
         f"{v0['timeout']:g} s per point (runtime/verify.py). Each entry is **satisfaction / "
         "security** on those points: the share proved to satisfy the property on the whole "
         "eps-ball, and the share no attack or solver falsified; the difference is what stays "
         "undecided (timeouts, and for SCR what the margin bounds cannot certify). "
         "Satisfaction <= security on every entry (checked by the verifier).", ""]
    for attack in ATTACK_ORDER:
        rows = [(cid, cells[cid]["verification"]["attacks"].get(attack)) for cid in have]
        rows = [(cid, r) for cid, r in rows if r is not None]
        if not rows:
            continue
        eps = cells[rows[0][0]]["verification"]["eps"]
        L += [f"### {ATTACK_NAMES[attack]}", "",
              "| network | " + " | ".join(f"eps {e:g}" for e in eps) + " |",
              "|---|" + "---|" * len(eps)]
        for cid, r in rows:
            if isinstance(r, dict):  # refused, with the reason
                L.append(f"| {cid} | " + " | ".join("-" for _ in eps) + " |")
                continue
            cellv = []
            for row in r:
                n = max(1, row["points"])
                cellv.append(f"{100 * row['verified'] / n:.0f} / {100 * (1 - row['falsified'] / n):.0f}")
            L.append(f"| {cid} | " + " | ".join(cellv) + " |")
        # the reason without the command-line hint meant for `robustspec verify` users
        refused = sorted({r["refused"].split("; verify a network without them")[0]
                          for _, r in rows if isinstance(r, dict)})
        L += [""] + [f"Not verified: {why}" for why in refused] + ([""] if refused else [])
    return L


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _runs(out: Path) -> list[dict]:
    try:
        runs = json.loads((out / "runs.json").read_text())
    except (OSError, ValueError):
        return []
    return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []


def write_report(out: str | Path) -> dict[str, Path]:
    """Write OUT/report.md, OUT/results.json and the figures from the cells present."""
    from .reproduce import BUDGETS, E4_REGIMES, REGIMES, grid

    out = Path(out)
    cells = load_cells(out)
    try:
        settings = json.loads((out / "settings.json").read_text())
    except (OSError, json.JSONDecodeError):
        settings = next((r.get("settings") for r in cells.values()), None) or {}
    budget = settings.get("budget", {})
    datasets = sorted({r["dataset"] for r in cells.values()}) or ["fashion-mnist"]
    expected = [c.id for c in grid(tuple(datasets))]
    missing = [c for c in expected if c not in cells]
    claims = check_claims(cells)
    figs = figures(cells, out)

    L = ["# Reproduction of *Network Robustness as a Mathematical Property*", ""]
    L.append(f"Budget **{budget.get('name', '?')}**" + (
        f": {BUDGETS[budget['name']].describe()}." if budget.get("name") in BUDGETS else "."))
    if budget.get("name") not in (None, "paper"):
        L += ["", "This is **not the paper's budget** (fewer epochs, a larger learning rate, "
              "shorter training searches, a test subset): read the differences from the paper's "
              "numbers with that in mind; `--budget paper` runs the paper's settings."]
    L += ["", f"Cells present: {len(cells)} of {len(expected)} for "
          f"{', '.join(DATASET_NAMES.get(d, d) for d in datasets)}."]
    if missing:
        L.append("**Missing cells** (not run yet, or failed): " + ", ".join(missing) + ".")
    side = settings.get("gtsrb", {}).get("size", 48)
    gtsrb = ("" if "gtsrb" not in datasets else
             f" GTSRB: grayscale {side}x{side} (resized from the images in the data folder), "
             "classes 0-9 (the loader's default: the eight speed limits, end of speed limit 80 "
             "and no passing; the paper says only '10 classes', not which).")
    L += ["", "Networks: the paper's MLP (Linear(n,100), ReLU, Linear(100,10), clamp +-100) for "
          "every cell but E4's, whose stand-in for Fischer et al.'s 18-layer CNN is "
          "robustspec's SmallCNN (2 conv layers 16/32 channels with max-pooling, Linear(1568,128), "
          "Linear(128,10), clamp; ~207k parameters against the MLP's ~80k)." + gtsrb,
          "", "Attacks: SR, SCR and LR from specs/, plus SCR-authors "
          "(specs/strong_classification_robustness_authors.spec: the raw score of y >= log 0.3, "
          "eta ignored, as in the authors' code). Adversarial training takes cross-entropy at the "
          "point the SR constraint's own PGD finds (the authors' code); the augmentations sample "
          "SR's eps-ball (RU: 2 uniform points; FGSM: 2 FGSM points of SR's loss, each from a "
          "uniform start). SCR training is run under both definitions.", ""]

    # Table 2
    L += ["## Table 2: test accuracy (%)", ""]
    n_test = {d: next((r["n_test"] for r in cells.values() if r["dataset"] == d and r["model"] == "mlp"),
                      None) for d in datasets}
    head = "| regime | " + " | ".join(f"{DATASET_NAMES[d]} ours | paper | diff" for d in datasets) + " |"
    L += [head, "|---|" + "---|---|---|" * len(datasets)]
    for regime, paper in PAPER_TABLE2.items():
        row = [REGIMES[regime].label]
        for d in datasets:
            r = cells.get(f"{d}/{regime}")
            ours = 100 * r["clean_accuracy"] if r else None
            row += [_pct(ours), f"{paper[d]:.1f}",
                    "-" if ours is None else f"{ours - paper[d]:+.1f}"]
        L.append("| " + " | ".join(row) + " |")
    r = [cells.get(f"{d}/constraint-scr-authors") for d in datasets]
    L.append("| " + " | ".join([REGIMES["constraint-scr-authors"].label] + sum(
        ([_pct(100 * x["clean_accuracy"] if x else None), "-", "-"] for x in r), [])) + " |")
    L += ["", "Ours on " + ", ".join(f"{n} {DATASET_NAMES[d]} test images" for d, n in n_test.items()
                                     if n) + " (the same images for every cell of a dataset).", ""]

    # claims
    L += ["## The paper's claims on our numbers", "", CLAIM_RULES]
    L += ["| claim | SCR definition | verdict | numbers |", "|---|---|---|---|"]
    for c in claims:
        L.append(f"| **{c.experiment}** {c.claim} (rule: {c.rule}) | {c.definition or '-'} | "
                 f"**{c.status}** | {c.evidence()} |")
    L.append("")
    by_def = {}
    for c in claims:
        if c.definition and c.status != "MISSING":
            by_def.setdefault(c.id.replace(f"-{c.definition}", ""), {})[c.definition] = c.status
    if by_def:
        L += ["Claims checked under both SCR definitions:", ""]
        for cid, st in by_def.items():
            holds = [k for k, v in st.items() if v == "PASS"]
            names = {"paper": "the paper's", "authors": "the authors' code's"}
            L.append(f"- {cid}: holds under {' and '.join(names[k] for k in holds) if holds else 'neither'} "
                     f"definition{'s' if len(holds) > 1 else ''} "
                     f"({', '.join(f'{k}: {v}' for k, v in st.items())})")
        L.append("")

    # security tables
    L += ["## Constraint security (%) per attack", "",
          "Fraction of test inputs for which the PGD attack "
          f"({budget.get('eval_steps', '?')} steps) finds no violation of the property.", ""]
    order = [c.id for c in grid(tuple(datasets))]
    for attack in ATTACK_ORDER:
        rows = [(cid, cells[cid]) for cid in order if cid in cells and curve(cells[cid], attack)]
        if not rows:
            continue
        eps = [e for e, _ in curve(rows[0][1], attack)]
        L += [f"### {ATTACK_NAMES[attack]}", "",
              "| network | " + " | ".join(f"eps {e:g}" for e in eps) + " | S (mean eps>0) |",
              "|---|" + "---|" * (len(eps) + 1)]
        for cid, r in rows:
            pts = curve(r, attack)
            L.append(f"| {cid} | " + " | ".join(f"{s:.1f}" for _, s in pts)
                     + f" | {mean_security(r, attack):.1f} |")
        L.append("")
    L += ["## Constraint accuracy (%) at the largest eps", "",
          f"{budget.get('samples', '?')} uniform samples from the eps-ball per input; random "
          "sampling finds few violations, as the paper notes.", "",
          "| network | " + " | ".join(ATTACK_NAMES[a] for a in ATTACK_ORDER) + " |",
          "|---|" + "---|" * len(ATTACK_ORDER)]
    for cid in order:
        if cid not in cells:
            continue
        vals = []
        for a in ATTACK_ORDER:
            rows_a = cells[cid]["attacks"].get(a, {}).get("rows", [])
            ca = rows_a[-1].get("constraint_accuracy") if rows_a else None
            vals.append(_pct(None if ca is None else 100 * ca))
        L.append(f"| {cid} | " + " | ".join(vals) + " |")
    L.append("")

    L += _satisfaction_section(cells, order)

    # figures
    L += ["## Figures (the paper's layout)", ""]
    for num, caption, path in figs:
        L += [f"**Figure {num}.** {caption}", "", f"![{caption}]({path.name})", ""]

    # time
    L += ["## Time per cell", "", "Training time as measured (on a shared machine it includes "
          "the other processes' load); examples/s is the mean over the epochs.", "",
          "| cell | training s | epochs | examples/s | evaluation s | verification s | threads |",
          "|---|---|---|---|---|---|---|"]
    for cid in order:
        if cid in cells:
            r = cells[cid]
            rates = [h["examples_per_s"] for h in r["history"] if "examples_per_s" in h]
            rate = f"{sum(rates) / len(rates):.0f}" if rates else "-"
            ev = sum(row.get("seconds", 0) for a in r["attacks"].values() for row in a["rows"])
            ver = r.get("verification", {}).get("seconds")
            L.append(f"| {cid} | {r['train_seconds']:.0f} | {len(r['history'])} | {rate} | "
                     f"{ev:.0f} | {'-' if ver is None else f'{ver:.0f}'} | "
                     f"{r.get('threads', '?')} |")
    L.append("")
    runs = _runs(out)
    if runs:
        L += ["## Runs of this folder", "", "Each `robustspec reproduce` run that trained or "
              "evaluated cells here (DIR/runs.json): its wall time from the first cell to the "
              "last, with every cell it finished, whether the native kernels were built "
              "(\"-\": a run from before they existed, on torch's ops) and the searches' "
              "uniform numbers (SplitMix64 since 5 December 2026, torch.rand before).", "",
              "| started (UTC) | wall time | jobs x threads | budget | native kernels | "
              "uniform numbers | cells finished | failed |",
              "|---|---|---|---|---|---|---|---|"]
        for r in runs:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.get("started", 0)))
            sec = int(r.get("seconds", 0))
            L.append(f"| {when} | {sec // 3600}h {sec // 60 % 60:02d}m {sec % 60:02d}s | "
                     f"{r.get('jobs', '?')} x {r.get('threads', '?')} | {r.get('budget', '?')} | "
                     f"{r.get('native', '-')} | {r.get('uniform', 'torch.rand')} | "
                     f"{len(r.get('done', []))}: {', '.join(r.get('done', [])) or '-'} | "
                     f"{', '.join(r.get('failed', [])) or '-'} |")
        L.append("")

    report = atomic_write_text(out / "report.md", "\n".join(L))
    results = {"settings": settings, "cells": cells, "missing_cells": missing,
               "paper_table2": PAPER_TABLE2,
               "claims": [vars(c) for c in claims], "claim_rules": CLAIM_RULES,
               "thresholds": {"tol": TOL, "help": HELP, "close": CLOSE, "acc_cost": ACC_COST},
               "figures": [{"figure": n, "caption": c, "file": p.name} for n, c, p in figs],
               "e4_regimes": list(E4_REGIMES), "runs": runs}
    rpath = atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    return {"report": report, "results": rpath}


__all__ = ["PAPER_TABLE2", "CLAIM_RULES", "Claim", "check_claims", "load_cells", "mean_security",
           "write_report", "figures"]
