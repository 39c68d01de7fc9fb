"""Issue 11: the PGD loop does not copy a flag to the host at every step; early stopping looks
every PGD.CHECK_EVERY steps (and after each restart)."""
import torch

from robustspec.compiler import PGD
from robustspec.compiler.search import RealDomain, _Best


def box(batch=3, n=4):
    lo = torch.zeros(batch, n)
    return {"x": RealDomain(lo, lo + 1, None, None)}


def test_all_found_is_asked_every_check_every_steps(monkeypatch):
    calls = []
    original = _Best.all_found
    monkeypatch.setattr(_Best, "all_found", lambda self: calls.append(1) or original(self))

    def objective(points):  # never 0: no early stop
        return (points["x"] - 2).square().sum(1), None
    PGD(steps=50, restarts=2, early_stop=True).run(objective, box(), 3)
    assert len(calls) == 2 * (50 // PGD.CHECK_EVERY + 1)  # was 2 * 51


def test_early_stop_still_stops_soon_after_every_example_is_found():
    evaluations = []

    def objective(points):  # 0 (found) everywhere in the box
        evaluations.append(1)
        return torch.relu(points["x"].sum(1) - 10), None
    pts, obj = PGD(steps=50, early_stop=True).run(objective, box(), 3)
    assert len(evaluations) == PGD.CHECK_EVERY and bool((obj == 0).all())
    evaluations.clear()
    PGD(steps=50, early_stop=False).run(objective, box(), 3)
    assert len(evaluations) == 51
