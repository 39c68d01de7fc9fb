"""What the verifier benchmarks (bench_verify, compare_milp, compare_scr_shares,
verify_attack_strength) share: the shipped spec of each property, the first test points, and
result rows printed and saved as they come (a killed run keeps what it measured)."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = str(ROOT.parent / "shared" / "data")
SPECS = {"sr": "standard_robustness", "cr_margin": "classification_robustness",
         "scr": "strong_classification_robustness", "lr": "lipschitz_robustness"}


def load_property(name: str):
    from robustspec.compiler import compile_spec
    return compile_spec(ROOT / "specs" / f"{SPECS[name]}.spec")[name]


def add_common_arguments(ap, points: int, timeout: float) -> None:
    """The options every verifier benchmark takes: named checkpoints, points, timeout, data, out."""
    ap.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT")
    ap.add_argument("--points", type=int, default=points)
    ap.add_argument("--timeout", type=float, default=timeout)
    ap.add_argument("--data-dir", default=DATA_DIR)
    ap.add_argument("--out", default=None, help="JSON file for the rows")


def named_models(items: list[str]):
    """(name, model) for each NAME=CHECKPOINT of --model."""
    from robustspec.runtime.training import model_from_checkpoint
    for item in items:
        name, _, path = item.partition("=")
        yield name, model_from_checkpoint(path)[0]


def first_test_points(data_dir: str, n: int, skip: int = 0):
    """n Fashion-MNIST test images and labels, from the test split's start (after `skip`)."""
    from robustspec.runtime.data import load_dataset
    data = load_dataset("fashion-mnist", "test", data_dir=data_dir)
    return data.x[skip:skip + n], data.y[skip:skip + n]


def emit(rows: list, row: dict, out: str | None) -> None:
    """Append row, print it as one JSON line, and rewrite `out` with every row so far."""
    rows.append(row)
    print(json.dumps(row), flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(rows, indent=1))
