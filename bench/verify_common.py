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
