"""A seeded fuzz of the spec front end (issue 8): a few hundred mutants of specs/*.spec through
check_file (what `robustspec check` calls) and, for a few, the CLI itself. Each mutant is cleanly
accepted (and its properties then run holds and loss on a tiny model) or cleanly refused with
file:line:col diagnostics that have hints; nothing else escapes, nothing hangs. The engine is
bench/fuzz_specs.py, which runs the same for thousands of iterations."""
from __future__ import annotations

import importlib.util
import random
import re
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fuzz_specs", ROOT / "bench" / "fuzz_specs.py")
fuzz_specs = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_specs"] = fuzz_specs  # dataclasses look their module up
_spec.loader.exec_module(fuzz_specs)


@pytest.mark.parametrize("seed", [0, 1])
def test_mutated_specs_are_accepted_and_run_or_refused_cleanly(seed, tmp_path):
    start = time.perf_counter()
    stats = fuzz_specs.fuzz(150, seed, tmp_path)
    assert stats.failures == [], "\n\n".join(stats.failures[:3])
    # the fuzz exercises both outcomes, and accepted mutants really run
    assert stats.cases == 150 and stats.refused > 50 and stats.accepted > 10 and stats.ran > 10
    assert time.perf_counter() - start < 120


def test_the_fuzzer_notices_a_crash_and_a_hang(tmp_path, monkeypatch):
    """The harness itself can fail: a traceback or a hang in check_file is recorded."""
    stats = fuzz_specs.Stats()

    def crash(path):
        raise KeyError("boom")
    monkeypatch.setattr(fuzz_specs, "check_file", crash)
    fuzz_specs.run_case("property p(a : Real) = a <= 1", tmp_path / "m.spec", stats)
    assert len(stats.failures) == 1 and stats.failures[0].startswith("KeyError")

    def hang(path):
        while True:
            pass
    monkeypatch.setattr(fuzz_specs, "check_file", hang)
    fuzz_specs.run_case("property p(a : Real) = a <= 1", tmp_path / "m.spec", stats,
                        check_seconds=0.2)
    assert len(stats.failures) == 2 and stats.failures[1].startswith("HANG")


def test_mutants_through_the_cli(tmp_path, capsys):
    from robustspec.runtime.cli import main
    rng = random.Random(7)
    seeds = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("*.spec"))]
    codes = set()
    for i in range(25):
        path = tmp_path / f"m{i}.spec"
        path.write_text(fuzz_specs.mutate(rng.choice(seeds), rng), encoding="utf-8")
        code = main(["check", str(path)])
        out = capsys.readouterr()
        text = out.out + out.err
        assert code in (0, 2), text
        codes.add(code)
        if code == 2:
            assert re.search(rf"^{re.escape(str(path))}:\d+:\d+: error: ", text, re.M), text
            assert "Traceback" not in text and "\nhint: " in text, text
    assert codes == {0, 2}
