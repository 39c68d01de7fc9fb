"""The verification pipeline on tiny networks whose answers are known by construction, and the
complete solvers (HiGHS MILP, Marabou) against each other and the bounds on random nets.

The hand-built networks compute an affine map W x + b exactly, through a hidden layer of ReLUs
that is unstable around x = 0.5 (relu(x - 0.5) - relu(0.5 - x) + 0.5 = x), so that bound
propagation relaxes and the MILP needs binaries, and end in the project's Clamp."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from robustspec.compiler import compile_spec
from robustspec.compiler.query import build_query
from robustspec.runtime import verifiers
from robustspec.runtime import verify as verify_mod
from robustspec.runtime.bounds import ReluNet, crown_preactivations, disjunct_refuted, query_row_bounds
from robustspec.runtime.models import Clamp, PaperMLP
from robustspec.runtime.verifiers import Outcome, marabou, milp
from robustspec.runtime.verify import save, table, verify

SPECS = Path(__file__).resolve().parents[1] / "specs"
PROPS = {"sr": "standard_robustness", "cr_margin": "classification_robustness",
         "lr": "lipschitz_robustness", "scr": "strong_classification_robustness"}


def prop(name):
    return compile_spec(SPECS / f"{PROPS[name]}.spec")[name]


def random_net(g: torch.Generator, *layers, scale: float = 1.0) -> nn.Sequential:
    """nn.Sequential(*layers) in eval mode, every parameter scale * N(0, 1) drawn from g."""
    net = nn.Sequential(*layers).eval()
    with torch.no_grad():
        for p_ in net.parameters():
            p_.copy_(scale * torch.randn(p_.shape, generator=g))
    return net


def affine_net(W, b) -> nn.Sequential:
    W, b = torch.as_tensor(W, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    m, n = W.shape
    first = nn.Linear(n, 2 * n)
    second = nn.Linear(2 * n, m)
    eye = torch.eye(n)
    with torch.no_grad():
        first.weight.copy_(torch.cat([eye, -eye]))
        first.bias.copy_(torch.cat([-0.5 * torch.ones(n), 0.5 * torch.ones(n)]))
        second.weight.copy_(torch.cat([W, -W], 1))
        second.bias.copy_(b + 0.5 * W.sum(1))
    return nn.Sequential(first, nn.ReLU(), second, Clamp(-100, 100)).eval()


X0 = torch.tensor([[0.5, 0.5]])
Y0 = torch.tensor([0])
EYE = [[1.0, 0.0], [0.0, 1.0]]

# (property, W, b, params, the answer): eps = 0.1 around (0.5, 0.5)
KNOWN = [
    ("sr", EYE, [0, 0], {"delta": 0.15}, "verified"),  # max |f(x) - f(x0)| = 0.1
    ("sr", EYE, [0, 0], {"delta": 0.05}, "falsified"),
    ("cr_margin", EYE, [0.3, 0], {}, "verified"),  # y0 - y1 = x_0 - x_1 + 0.3 >= 0.1
    ("cr_margin", EYE, [0.1, 0], {}, "falsified"),  # ... >= -0.1
    ("lr", [[2, 0], [0, 2]], [0, 0], {"L": 3.0}, "verified"),  # |f(x) - f(x0)| = 2 |x - x0|
    ("lr", [[2, 0], [0, 2]], [0, 0], {"L": 2.0}, "verified"),  # a tie everywhere, x0 included
    ("lr", [[2, 0], [0, 2]], [0, 0], {"L": 1.0}, "falsified"),
    ("scr", [[10, 0], [0, 0]], [0, 0], {"eta": 0.9}, "verified"),  # softmax_0 >= sigmoid(4) = 0.982
    ("scr", [[10, 0], [0, 0]], [0, 0], {"eta": 0.99}, "falsified"),
]


@pytest.mark.parametrize("verifier", ["milp", "marabou", "bounds"])
@pytest.mark.parametrize("case", range(len(KNOWN)))
def test_known_answers(case, verifier):
    name, W, b, params, answer = KNOWN[case]
    net = affine_net(W, b)
    r = verify(net, prop(name), X0, Y0, eps=0.1, verifier=verifier, timeout=10, progress=False,
               params=params)
    got = r.verdicts[0]
    if answer == "verified" and (verifier == "bounds" or name == "scr"):
        # bounds are incomplete (the unstable ReLUs relax) and SCR has no complete solver:
        # unknown is allowed, a wrong answer never
        assert got in ("verified", "unknown"), (r.verdicts, r.notes)
        return
    assert got == answer, (r.verdicts, r.decided_by, r.notes)
    if answer == "falsified":
        x = r.counterexamples[0].unsqueeze(0)
        assert bool(prop(name).check(net, x0=X0, y=Y0, params={"eps": 0.1, **params}, at=x).violated[0])


@pytest.mark.parametrize("name,W,b,params", [
    ("sr", EYE, [0, 0], {"delta": 0.15}),
    ("cr_margin", EYE, [0.3, 0], {}),
    ("scr", [[10, 0], [0, 0]], [0, 0], {"eta": 0.9}),
])
def test_bounds_alone_verify_affine_nets(name, W, b, params):
    """Without hidden ReLUs CROWN is exact: the bounds stage proves these by itself (SCR from
    its margin bounds: sum_j exp(-lb_j) <= (1 - eta) / eta)."""
    lin = nn.Sequential(nn.Linear(2, 2), Clamp(-100, 100)).eval()
    with torch.no_grad():
        lin[0].weight.copy_(torch.tensor(W, dtype=torch.float32))
        lin[0].bias.copy_(torch.tensor(b, dtype=torch.float32))
    r = verify(lin, prop(name), X0, Y0, eps=0.1, verifier="bounds", progress=False, params=params)
    assert r.verdicts == ["verified"] and r.decided_by == ["bounds"]


@pytest.mark.parametrize("solver", [milp, marabou])
@pytest.mark.parametrize("case", [i for i, k in enumerate(KNOWN) if k[0] != "scr"])
def test_complete_solvers_alone_decide_the_known_cases(case, solver):
    """No attack, no pruning by bounds: every disjunct open, the solver alone answers."""
    name, W, b, params, answer = KNOWN[case]
    net = affine_net(W, b)
    p = prop(name)
    q = build_query(p, net, x0=X0, y=Y0, params={"eps": 0.1, **params})
    rn = ReluNet.from_module(net, q.shape, dtype=torch.float64)
    qd = verify_mod._double(q)
    pre = crown_preactivations(rn, qd.lo, qd.hi)
    lb, _ = query_row_bounds(rn, qd, "crown", pre)
    open_d = [d for d in range(len(q.disjuncts)) if bool(q.active[0, d])]
    full = {"eps": 0.1, **params}
    verdict, point, _s, _d = verify_mod.solve_and_replay(
        solver, rn, qd, pre, lb, open_d, 10, net, p, {"x0": X0, "y": Y0}, full, "x", (2,),
        torch.float32)
    assert verdict == answer
    if verdict == "falsified":
        assert bool(p.check(net, x0=X0, y=Y0, params=full, at=point).violated[0])


def test_a_solver_point_that_does_not_replay_is_boundary_never_falsified(monkeypatch):
    """With no margin on strict rows, the MILP answers LR's x = x0 (0 > 0 within tolerance): the
    exact checker rejects it as a counterexample, so the verdict is 'boundary'."""
    monkeypatch.setattr(verifiers, "STRICT_MARGIN", 0.0)
    net = affine_net([[2, 0], [0, 2]], [0, 0])
    r = verify(net, prop("lr"), X0, Y0, eps=0.1, verifier="milp", timeout=10, progress=False,
               params={"L": 2.0})
    assert r.verdicts == ["boundary"] and r.decided_by == ["milp"] and not r.counterexamples


def test_timeouts_are_unknown_with_the_time_spent(monkeypatch):
    def slow(net, query, pre, lb, open_d, timeout, extra=0.0, ub=None):
        return Outcome("timeout", None, timeout)
    monkeypatch.setattr(verify_mod, "SOLVERS", {"milp": slow})
    net = affine_net([[2, 0], [0, 2]], [0, 0])
    r = verify(net, prop("lr"), X0, Y0, eps=0.1, verifier="milp", timeout=3, progress=False,
               params={"L": 3.0})
    assert r.verdicts == ["unknown"] and 3 <= r.times["complete"][0] < 3.5  # its time, and the bounds for it


def test_results_table_and_files(tmp_path):
    net = affine_net(EYE, [0, 0])
    x0 = torch.tensor([[0.5, 0.5], [0.2, 0.9], [0.05, 0.3]])
    y0 = torch.zeros(3, dtype=torch.long)
    rs = [verify(net, prop("sr"), x0, y0, eps=e, progress=False, params={"delta": 0.15})
          for e in (0.1, 0.3)]
    assert rs[0].counts()["verified"] == 3 and rs[1].counts()["falsified"] == 3
    text = table(rs)
    assert "verified" in text and len(text.splitlines()) == 3
    files = save(rs, tmp_path / "v")
    import json
    data = json.loads(files["json"].read_text())
    assert [d["verified"] for d in data] == [3, 0]
    assert files["csv"].read_text().splitlines()[0].startswith("property,eps")
    cex = torch.load(files["counterexamples"])
    assert sorted(cex["0.3"]) == [0, 1, 2]


@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eps=st.floats(0.02, 0.4), name=st.sampled_from(["sr", "cr_margin"]))
def test_milp_marabou_and_bounds_never_contradict(seed, eps, name):
    g = torch.Generator().manual_seed(seed)
    net = random_net(g, nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 3), Clamp(-100, 100))
    x0 = torch.rand(1, 3, generator=g)
    y0 = net(x0).argmax(1)
    p = prop(name)
    params = {"eps": eps, **({"delta": 0.5} if name == "sr" else {})}
    q = verify_mod._double(build_query(p, net, x0=x0, y=y0, params=params))
    rn = ReluNet.from_module(net, q.shape, dtype=torch.float64)
    pre = crown_preactivations(rn, q.lo, q.hi)
    lb, ub = query_row_bounds(rn, q, "crown", pre)
    proved = bool(disjunct_refuted(q, lb, ub).all())
    open_d = [d for d in range(len(q.disjuncts)) if bool(q.active[0, d])]
    answers = {}
    for solver in (milp, marabou):
        out = solver(rn, q, pre, lb, open_d, 10)
        status = out.status
        if status == "sat":  # clipped into the box as verify's replay does (Marabou's points
            # can lie 1e-11 outside it, where valid(x) fails and nothing is violated)
            x = verify_mod._replay_point(out.x, q, (3,), torch.float32)
            if bool(p.check(net, x0=x0, y=y0, params=params, at=x).violated[0]):
                status = "counterexample"  # replayed by the exact checker
            else:  # a tie within the solver's tolerance: some row within 1e-4 of zero
                with torch.no_grad():
                    rows = q.row_values(net(x).double(), x.double())
                assert float(rows.abs().min()) < 1e-4
                status = "boundary"
        answers[solver.__name__] = status
    # a contradiction: a proof (bounds or a solver's unsat) next to a replayed counterexample
    if proved or "unsat" in answers.values():
        assert "counterexample" not in answers.values(), (proved, answers)
    if proved:
        assert set(answers.values()) <= {"unsat", "boundary"}, answers


# ------------------------------------------------------------------------------------------
# the commands, on a fresh parser (the CLI registers them with one line)

def test_verify_and_export_commands(tmp_path, monkeypatch, capsys):
    import json

    from fakedata import isolate_data_env, write_fashion

    from robustspec.runtime import data
    from robustspec.runtime.cli import main
    isolate_data_env(tmp_path, monkeypatch)
    info = write_fashion(tmp_path / "data" / "fashion-mnist", n_train=40, n_test=12, learnable=True)
    monkeypatch.setattr(data, "FASHION_MNIST_FILES", info["checksums"])
    ddir = tmp_path / "data"
    assert main(["train", "--regime", "baseline", "--epochs", "1", "--lr", "1e-3", "--batch-size",
                 "16", "--data-dir", str(ddir), "--out", str(tmp_path / "run")]) == 0
    ckpt = tmp_path / "run" / "last.pt"
    capsys.readouterr()
    # verify and export come from the CLI's command registry
    assert main(["verify", str(ckpt), "--spec", str(SPECS / "standard_robustness.spec"),
                              "--property", "sr", "--eps", "0.001,0.05", "--limit", "5", "--timeout",
                              "5", "--data-dir", str(ddir), "--out", str(tmp_path / "v"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "0.05" in out
    rows = json.loads((tmp_path / "v" / "verify-sr.json").read_text())
    assert [r["points"] for r in rows] == [5, 5]
    assert all(sum(r[v] for v in ("verified", "falsified", "unknown", "boundary")) == 5 for r in rows)
    assert rows[0]["verified"] == 5  # eps 0.001, delta 10: nothing moves that far
    capsys.readouterr()
    assert main(["evaluate", str(ckpt), "--spec", str(SPECS / "standard_robustness.spec"),
                 "--property", "sr", "--eps", "0.001", "--samples", "0", "--verify-limit", "4",
                 "--verify-timeout", "5", "--data-dir", str(ddir),
                 "--out", str(tmp_path / "ev")]) == 0
    assert "satisfied" in capsys.readouterr().out
    row = json.loads((tmp_path / "ev.json").read_text())["rows"][0]
    assert (row["verified_n"], row["constraint_satisfaction"]) == (4, 1.0)
    assert main(["export", str(ckpt), "--spec", str(SPECS / "classification_robustness.spec"),
                 "--property", "cr_margin", "--eps", "0.01", "--index", "2:5",
                 "--format", "vnnlib2", "--data-dir", str(ddir), "--out", str(tmp_path / "e")]) == 0
    lines = (tmp_path / "e" / "instances.csv").read_text().splitlines()
    assert [ln.split(",")[1] for ln in lines] == [f"vnnlib/cr_margin_eps0.01_{i}.vnnlib" for i in (2, 3, 4)]
    capsys.readouterr()
    assert main(["export", str(ckpt), "--spec", str(SPECS / "classification_robustness.spec"),
                 "--property", "cr_margin", "--eps", "0.01", "--index", "10:99",
                 "--data-dir", str(ddir), "--out", str(tmp_path / "e2")]) == 2
    err = capsys.readouterr().err
    assert "test set has 12" in err and "Traceback" not in err


L2_SPEC = """network f : Tensor -> Tensor
param eps : Real = 0.1
param c : Real = 1.16
property p(x0 : Tensor) = forall x . norm_2(x - x0) <= eps => f(x)[0] <= c
"""


@pytest.mark.parametrize("c,answer", [(1.25, "verified"), (1.16, "unknown"), (1.13, "falsified")])
def test_l2_ball_proved_by_its_box_and_solver_points_outside_the_ball_not_counted(c, answer):
    """f(x) = x_0 + x_1 around (0.5, 0.5), radius 0.1: the ball reaches 1 + 0.1 sqrt(2) = 1.141,
    its enclosing box 1.2. c = 1.16 holds on the ball, but the box's corner is no counterexample:
    unknown (the box is a relaxation), never falsified or boundary."""
    p = compile_spec(L2_SPEC)["p"]
    net = affine_net([[1.0, 1.0]], [0.0])
    r = verify(net, p, X0, None, verifier="milp", timeout=10, progress=False, params={"c": c})
    assert r.verdicts == [answer], (r.verdicts, r.decided_by, r.notes)
    if answer == "unknown":
        assert "outside the domain" in r.notes[0]


def test_a_proof_of_an_attacked_point_is_an_invariant_error(monkeypatch):
    """Bounds that 'prove' a point the attack falsified are a bug, reported, never a result."""
    def everything_refuted(query, lb, ub):
        return torch.ones(query.batch, len(query.disjuncts), dtype=torch.bool)
    monkeypatch.setattr(verify_mod, "disjunct_refuted", everything_refuted)
    with pytest.raises(verify_mod.InvariantError, match="attack found"):
        verify(affine_net(EYE, [0, 0]), prop("sr"), X0, Y0, eps=0.1, progress=False,
               params={"delta": 0.05})


def test_prop_verify_is_the_python_api():
    """prop.verify(model, x0=, y=) goes through the back-end table to runtime/verify.py.
    f(x) = 2 x on 2 inputs: within eps the output moves by at most 2 eps (per coordinate),
    so SR with delta = 3 eps holds and with delta = eps fails (hand-computed)."""
    from robustspec.compiler import compile_spec

    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(2 * torch.eye(2))
        net[0].bias.zero_()
    spec = compile_spec(SPECS / "standard_robustness.spec")
    x0 = torch.tensor([[0.5, 0.5], [0.3, 0.6]])
    y = torch.tensor([0, 1])
    held = spec["sr"].verify(net, x0=x0, y=y, eps=0.05, params={"delta": 0.15}, timeout=10)
    assert held.verdicts == ["verified", "verified"]
    broken = spec["sr"].verify(net, x0=x0, y=y, eps=0.05, params={"delta": 0.05}, timeout=10)
    assert broken.verdicts == ["falsified", "falsified"]
    with pytest.raises(Exception, match="x0="):
        spec["sr"].verify(net, y=y, eps=0.05)


def test_evaluate_reports_constraint_satisfaction_beside_security():
    """evaluate(verify_limit=k): satisfaction on the first k inputs next to the attack's
    security on the same inputs; f(x) = 2 x: SR with delta 0.15 holds at eps 0.05 (proved) and
    fails at eps 0.1 (|2 * 0.1| > 0.15 wherever the ball is not clipped)."""
    from robustspec.compiler import compile_spec
    from robustspec.runtime import evaluate

    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(2 * torch.eye(2))
        net[0].bias.zero_()
    prop = compile_spec(SPECS / "standard_robustness.spec", params={"delta": 0.15})["sr"]
    x = torch.tensor([[0.5, 0.5], [0.3, 0.6], [0.4, 0.45], [0.7, 0.2]])
    y = torch.tensor([0, 1, 0, 1])
    r = evaluate(net, prop, x, y, eps=[0.05, 0.1], samples=0, verify_limit=3, verify_timeout=10)
    first, second = r.rows
    assert (first.verified_n, first.constraint_satisfaction, first.security_on_verified) == (3, 1.0, 1.0)
    assert (second.verified_n, second.constraint_satisfaction, second.security_on_verified) == (3, 0.0, 0.0)
    assert "satisfied" in r.table()
    assert all(row.constraint_satisfaction <= row.security_on_verified for row in r.rows)


def test_jobs_give_the_same_verdicts():
    """verify(jobs=2) solves open points two at a time (threads) with the same verdicts."""
    from robustspec.runtime.verify import verify

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    prop = compile_spec(SPECS / "classification_robustness.spec")["cr_margin"]
    x = torch.rand(12, 16)
    y = net(x).argmax(-1)
    one = verify(net, prop, x, y, eps=0.1, verifier="milp", timeout=10, progress=False, jobs=1)
    two = verify(net, prop, x, y, eps=0.1, verifier="milp", timeout=10, progress=False, jobs=2)
    assert one.verdicts == two.verdicts and one.decided_by == two.decided_by
    # the complete stage ran on several points (the test would be empty otherwise)
    assert one.decided_by.count("milp") >= 2


def test_scr_margins_tightened_by_milp_prove_more_points():
    """SCR's softmax threshold is certified from margin lower bounds; minimising each margin
    exactly with the MILP proves a point that CROWN's bounds leave open (a random net found by
    search: seed 1), never one the attack falsified (verify's invariants would raise)."""
    from robustspec.runtime.verify import verify

    prop = compile_spec(SPECS / "strong_classification_robustness.spec")["scr"]
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        net[2].weight.mul_(8)
    x = torch.rand(12, 16)
    y = net(x).argmax(-1)
    by_bounds = verify(net, prop, x, y, eps=0.05, verifier="bounds", timeout=10, progress=False)
    by_milp = verify(net, prop, x, y, eps=0.05, verifier="milp", timeout=10, progress=False)
    assert by_milp.counts()["verified"] > by_bounds.counts()["verified"]
    assert "milp" in by_milp.decided_by
    for a, b in zip(by_bounds.verdicts, by_milp.verdicts):
        assert a == b or (a == "unknown" and b == "verified")


def test_verify_on_an_explicit_device_gives_the_same_verdicts():
    """device=torch.device("cpu") goes through the device plumbing (attack on the device,
    bounds and solvers on a CPU copy) and changes nothing."""
    from robustspec.runtime.verify import verify

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    prop = compile_spec(SPECS / "classification_robustness.spec")["cr_margin"]
    x = torch.rand(8, 16)
    y = net(x).argmax(-1)
    plain = verify(net, prop, x, y, eps=0.1, timeout=10, progress=False)
    placed = verify(net, prop, x, y, eps=0.1, timeout=10, progress=False, device=torch.device("cpu"))
    assert plain.verdicts == placed.verdicts and plain.decided_by == placed.decided_by
    assert {"falsified", "verified"} <= set(plain.verdicts)  # both outcomes exercised


def test_evaluate_verifies_at_the_swept_parameter_even_when_it_is_not_eps():
    """The satisfaction column verifies at the swept value under its own name (here `r`), and
    a strict ball (its boundary points vacuous for the attack) is no false invariant breach."""
    from robustspec.runtime import evaluate

    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(2 * torch.eye(2))
        net[0].bias.zero_()
    prop = compile_spec("network f : Tensor -> Tensor\nparam r : Real = 0.3\n"
                        "property p(x0 : Tensor, y : Label) = forall x . norm_inf(x - x0) < r "
                        "and 0 <= x <= 1 => norm_inf(f(x) - f(x0)) <= 0.15")["p"]
    x = torch.tensor([[0.5, 0.5], [0.3, 0.6], [0.4, 0.45]])
    y = torch.tensor([0, 1, 0])
    r = evaluate(net, prop, x, y, eps=[0.05, 0.1], eps_param="r", samples=0, verify_limit=3,
                 verify_timeout=10)
    assert [row.constraint_satisfaction for row in r.rows] == [1.0, 0.0]  # 2 r vs 0.15


@pytest.mark.parametrize("name, params, W", [("sr", {"delta": 0.05}, EYE),
                                              ("lr", {"L": 1.5}, [[2, 0], [0, 2]])])
def test_a_second_attack_on_the_verified_catches_a_false_proof(monkeypatch, name, params, W):
    """A solver that answers unsat where a counterexample exists (a bug) is caught by the
    invariant's second attack, which the first attack (here made blind) would not; for LR the
    auxiliary t is rebuilt from the point to measure the violation."""
    def lying(net, query, pre, lb, open_d, timeout, extra=0.0, ub=None):
        return Outcome("unsat", None, 0.01)
    monkeypatch.setattr(verify_mod, "SOLVERS", {"milp": lying})
    p = prop(name)
    real = p.search
    calls = []

    def blind_first(model, **kw):  # the first attack finds nothing: its points are x0
        calls.append(1)
        found = real(model, **kw)
        if len(calls) == 1:
            for k in found.points:
                found.points[k] = kw["x0"].clone()
        return found
    monkeypatch.setattr(p, "search", blind_first)
    net = affine_net(W, [0, 0])
    with pytest.raises(verify_mod.InvariantError, match="an attack found a counterexample"):
        verify(net, p, X0, Y0, eps=0.1, verifier="milp", timeout=1, progress=False,
               params=params, bounds="interval")
    assert len(calls) == 2


def test_the_models_mode_is_restored_and_limit_cuts_per_example_params():
    net = affine_net(EYE, [0, 0]).train()
    net[2].eval()  # a frozen submodule stays frozen
    x0 = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    y0 = torch.zeros(3, dtype=torch.long)
    delta = torch.tensor([0.15, 0.05, 0.05])  # per example: verified, falsified, falsified
    r = verify(net, prop("sr"), x0, y0, eps=0.1, limit=2, progress=False, params={"delta": delta})
    assert r.verdicts == ["verified", "falsified"] and net.training and not net[2].training
    r = verify(net, prop("sr"), x0, y0, eps=0.1, limit=2, progress=False,
               params={"delta": [0.15, 0.05, 0.05]})  # a list per example is cut too
    assert r.verdicts == ["verified", "falsified"]


def test_lr_holding_with_many_inputs_is_verified_not_a_tolerance_tie(monkeypatch):
    """PaperMLP(400, 20, 3), weights scaled by 3: its L-inf Lipschitz constant is at most the
    largest row sum of |W2| |W1| (about 209), so LR holds with L = 1000 on every ball. With
    HiGHS's default feasibility tolerance 1e-7 the 400 rows t >= +-(x_i - x0_i) let x leave
    t's ball by 1e-7 per input, enough at t ~ 0 to beat the strict margin 1e-5: the MILP
    answered sat at a tie and the point ended `boundary` (the first example did, measured).
    At AUX_FEASIBILITY_TOLERANCE both are verified."""
    torch.manual_seed(0)
    net = PaperMLP(400, 20, 3).eval()
    lin = [m for m in net.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for m in lin:
            m.weight.mul_(3.0)
        lipschitz = float((lin[1].weight.abs() @ lin[0].weight.abs()).sum(1).max())
    assert lipschitz < 1000
    x0 = torch.rand(2, 400)
    y0 = net(x0).argmax(1)
    r = verify(net, prop("lr"), x0, y0, eps=0.05, params={"L": 1000.0}, verifier="milp",
               timeout=20, progress=False)
    assert r.verdicts == ["verified", "verified"]
    # HiGHS's default tolerance (HiGHS 1.x: the first example `boundary`, measured): a tie is
    # never claimed as a counterexample, whatever the tolerance
    monkeypatch.setattr(verifiers, "AUX_FEASIBILITY_TOLERANCE", None)
    r = verify(net, prop("lr"), x0, y0, eps=0.05, params={"L": 1000.0}, verifier="milp",
               timeout=20, progress=False)
    assert "falsified" not in r.verdicts


@pytest.mark.parametrize("L, answer", [(3.0, "unsat"), (1.5, "sat")])
def test_milp_on_a_network_without_hidden_layer(L, answer):
    """LR on f(x) = 2x with no hidden layer: the inputs are the last activations, so a row
    names an input column twice (through f and through |x - x0|); HiGHS refuses such a row, so
    the encoding merges the two."""
    net = nn.Sequential(nn.Linear(2, 2)).eval()
    with torch.no_grad():
        net[0].weight.copy_(2 * torch.eye(2))
        net[0].bias.zero_()
    p = prop("lr")
    q = verify_mod._double(build_query(p, net, x0=X0, y=Y0, params={"eps": 0.1, "L": L}))
    rn = ReluNet.from_module(net, q.shape, dtype=torch.float64)
    pre = crown_preactivations(rn, q.lo, q.hi)
    lb, ub = query_row_bounds(rn, q, "crown", pre, "both")
    open_d = [d for d in range(len(q.disjuncts)) if bool(q.active[0, d])]
    assert milp(rn, q, pre, lb, open_d, 10, ub=ub).status == answer


@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eps=st.floats(0.05, 0.5), deep=st.booleans())
def test_one_sided_relus_give_the_same_optimum_as_the_full_milp(seed, eps, deep):
    """The ReLUs a row wants small are encoded without a binary (verifiers._one_sided): the
    relaxation must have the exact MILP's optimum, and no sampled input may go below it."""
    import highspy
    g = torch.Generator().manual_seed(seed)
    hidden = [nn.Linear(3, 6), nn.ReLU()] + ([nn.Linear(6, 5), nn.ReLU()] if deep else [])
    net = random_net(g, *hidden, nn.Linear(5 if deep else 6, 3), Clamp(-100, 100))
    x0 = torch.rand(1, 3, generator=g)
    q = verify_mod._double(build_query(prop("cr_margin"), net, x0=x0, y=net(x0).argmax(1),
                                       params={"eps": eps}))
    rn = ReluNet.from_module(net, q.shape, dtype=torch.float64)
    pre = crown_preactivations(rn, q.lo, q.hi)
    cost_y = torch.randn(3, generator=g, dtype=torch.float64).numpy()
    optima = []
    for one_sided in (None, verifiers._one_sided(rn, pre, -cost_y[None])):
        col_lo, col_hi, integer, rows, prev = verifiers._encode_network(
            highspy.kHighsInf, rn, q, pre, one_sided)
        h = verifiers._highs(highspy, 20, col_lo, col_hi, integer, rows)
        h.setOptionValue("mip_rel_gap", 0.0)
        cost = [0.0] * len(col_lo)
        for c, v in zip(prev, cost_y @ rn.weights[-1].numpy()):
            cost[c] = float(v)
        h.changeColsCost(len(cost), list(range(len(cost))), cost)
        h.run()
        assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
        optima.append(h.getInfo().objective_function_value + float(cost_y @ rn.biases[-1].numpy()))
    assert optima[1] == pytest.approx(optima[0], abs=1e-6, rel=1e-6)
    xs = q.lo + (q.hi - q.lo) * torch.rand(4000, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        sampled = (rn(xs) @ torch.as_tensor(cost_y)).min()
    assert optima[0] <= float(sampled) + 1e-6


def test_one_sided_relus_are_those_the_rows_want_small_through_the_stable_clamp():
    """y = clamp(W2 relu(W1 x)): the clamp is inactive, so its ReLUs are stable and the map from
    the hidden layer to y is W2; a row asking y_0 - y_1 >= c wants the hidden units with
    W2[0] - W2[1] <= 0 small, and only the unstable ones need a binary at all."""
    import highspy
    net = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 2), Clamp(-100, 100)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [1.0], [-1.0]]))
        net[0].bias.copy_(torch.tensor([-0.5, -0.5, 0.5]))  # unstable on x in [0, 1]
        net[2].weight.copy_(torch.tensor([[1.0, -2.0, 0.0], [0.0, 1.0, 3.0]]))
        net[2].bias.zero_()
    q = verify_mod._double(build_query(prop("cr_margin"), net, x0=torch.tensor([[0.5]]),
                                       y=torch.tensor([0]), params={"eps": 0.5}))
    rn = ReluNet.from_module(net, q.shape, dtype=torch.float64)
    pre = crown_preactivations(rn, q.lo, q.hi)
    K, M = verifiers._tail_map(rn, pre)
    assert K == 0 and M == pytest.approx(net[2].weight.detach().double().numpy())
    K, mask = verifiers._one_sided(rn, pre, torch.tensor([[1.0, -1.0]], dtype=torch.float64).numpy())
    assert mask.tolist() == [False, True, True]  # coefficients 1, -3, -3
    full = verifiers._encode_network(highspy.kHighsInf, rn, q, pre)[2]
    fewer = verifiers._encode_network(highspy.kHighsInf, rn, q, pre, (K, mask))[2]
    assert len(full) == 3 and len(fewer) == 1


@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eps=st.floats(0.05, 0.5))
def test_the_joint_softmax_bound_holds_at_every_sampled_input(seed, eps):
    """verifiers.milp_softmax_upper bounds sum_{j != y} exp(F_j - F_y) over the box by the
    margins' chords, jointly: no sampled input may exceed it, and it is never looser than the
    separate bound sum_j exp(-lb_j) it starts from (the chords lie below exp(-lb_j)) but for
    HiGHS's gap (1e-4 of its objective) and the slack added for its tolerances."""
    from robustspec.runtime.verifiers import milp_softmax_upper
    g = torch.Generator().manual_seed(seed)
    net = random_net(g, nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 4), Clamp(-100, 100), scale=2.0)
    x0 = torch.rand(1, 3, generator=g)
    y0 = net(x0).argmax(1)
    q = verify_mod._double(build_query(prop("scr"), net, x0=x0, y=y0, params={"eps": eps}))
    rn = ReluNet.from_module(net, q.shape, dtype=torch.float64)
    pre = crown_preactivations(rn, q.lo, q.hi)
    lb, ub = query_row_bounds(rn, q, "crown", pre, "both")
    atom = q.softmax[0]
    upper, points = milp_softmax_upper(rn, q, pre, atom, lb[0].numpy(), ub[0].numpy(), 20)
    others = [r for k, r in enumerate(atom.margins) if k != int(y0)]
    assert upper <= float(torch.exp(-lb[0, others]).sum()) * (1 + 1e-3) + 1e-4
    xs = q.lo + (q.hi - q.lo) * torch.rand(4000, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = rn(xs)
    sampled = torch.exp(out - out[:, int(y0)].unsqueeze(1)).sum(1) - 1
    assert float(sampled.max()) <= upper * (1 + 1e-9) + 1e-12
    assert len(points) == 1 and points[0].shape == (3,)


def test_scr_proved_jointly_where_the_margins_minimised_apart_do_not_suffice():
    """F = (0, 3x - 3.5, -2x - 0.5) on x in [0, 1], label 0: the margins g1 = 3.5 - 3x and
    g2 = 2x + 0.5 reach 0.5 at opposite ends, so the separate certificate is 2 exp(-0.5) = 1.21
    > (1 - 0.52) / 0.52 = 0.92. Jointly (worked by hand): the chords are exact at the ends and
    linear in x between, so their sum peaks at x = 1 with exp(-0.5) + exp(-2.5) = 0.6886 (at
    x = 0: exp(-3.5) + exp(-0.5) = 0.6368): the point holds and only the joint bound proves it."""
    from robustspec.runtime.verifiers import milp_softmax_upper
    net = nn.Sequential(nn.Linear(1, 3)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.0], [3.0], [-2.0]]))
        net[0].bias.copy_(torch.tensor([0.0, -3.5, -0.5]))
    x0, y0 = torch.tensor([[0.5]]), torch.tensor([0])
    by_bounds = verify(net, prop("scr"), x0, y0, eps=0.5, verifier="bounds", progress=False)
    by_milp = verify(net, prop("scr"), x0, y0, eps=0.5, verifier="milp", timeout=10, progress=False)
    assert by_bounds.verdicts == ["unknown"]
    assert by_milp.verdicts == ["verified"] and by_milp.decided_by == ["milp"]
    q = verify_mod._double(build_query(prop("scr"), net, x0=x0, y=y0, params={"eps": 0.5}))
    rn = ReluNet.from_module(net, q.shape, dtype=torch.float64)
    pre = crown_preactivations(rn, q.lo, q.hi)
    lb, ub = query_row_bounds(rn, q, "crown", pre, "both")
    upper, points = milp_softmax_upper(rn, q, pre, q.softmax[0], lb[0].numpy(), ub[0].numpy(), 10)
    assert upper == pytest.approx(math.exp(-0.5) + math.exp(-2.5), abs=1e-4)
    assert points[0] == pytest.approx([1.0])  # the chords' maximiser


def test_scr_proved_by_pieces_where_the_chords_do_not_suffice():
    """F = (0, -(0.5 + 4|x - 0.5|), -(0.5 + 2x)) on x in [0, 1], label 0: the margins g1 in
    [0.5, 2.5] (least at x = 0.5) and g2 = 0.5 + 2x. Worked by hand: exp(-g1) + exp(-g2)
    rises up to x = 0.5 (derivative 4 exp(-g1) - 2 exp(-g2) > 0) and falls after it, so its
    maximum is exp(-0.5) + exp(-1.5) = 0.8297 < (1 - 0.52) / 0.52 = 0.9231: the point holds.
    The chords cannot show it: at x = 0.5 g2's chord is exp(-0.5) + (exp(-2.5) - exp(-0.5)) / 2
    = 0.3444 (the true 0.2231), a sum of 0.9509; six pieces give 0.831."""
    from robustspec.runtime.verifiers import milp_softmax_upper
    net = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 3)).eval()
    with torch.no_grad():  # h = (relu(x - 0.5), relu(0.5 - x), relu(x))
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0], [1.0]]))
        net[0].bias.copy_(torch.tensor([-0.5, 0.5, 0.0]))
        net[2].weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [-4.0, -4.0, 0.0], [0.0, 0.0, -2.0]]))
        net[2].bias.copy_(torch.tensor([0.0, -0.5, -0.5]))
    x0, y0 = torch.tensor([[0.5]]), torch.tensor([0])
    q = verify_mod._double(build_query(prop("scr"), net, x0=x0, y=y0, params={"eps": 0.5}))
    rn = ReluNet.from_module(net, q.shape, dtype=torch.float64)
    pre = crown_preactivations(rn, q.lo, q.hi)
    lb, ub = query_row_bounds(rn, q, "crown", pre, "both")
    atom = q.softmax[0]
    chords, _ = milp_softmax_upper(rn, q, pre, atom, lb[0].numpy(), ub[0].numpy(), 10, segments=1)
    pieces, _ = milp_softmax_upper(rn, q, pre, atom, lb[0].numpy(), ub[0].numpy(), 10)
    truth = math.exp(-0.5) + math.exp(-1.5)
    assert chords == pytest.approx(0.9509, abs=1e-3)
    assert truth <= pieces < 0.832
    assert verify(net, prop("scr"), x0, y0, eps=0.5, verifier="bounds",
                  progress=False).verdicts == ["unknown"]
    assert verify(net, prop("scr"), x0, y0, eps=0.5, verifier="milp", timeout=10,
                  progress=False).verdicts == ["verified"]


@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eps=st.floats(0.02, 0.4), name=st.sampled_from(["lr", "cr_margin", "sr"]))
def test_one_sided_relus_leave_the_milp_answer_unchanged(seed, eps, name):
    """milp with the one-sided ReLUs (verifiers._one_sided, LR's common rows included) answers
    as the full big-M MILP does: unsat against unsat, sat against sat, on random networks."""
    g = torch.Generator().manual_seed(seed)
    net = random_net(g, nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 3), Clamp(-100, 100))
    x0 = torch.rand(1, 3, generator=g)
    params = {"eps": eps, **({"delta": 0.5} if name == "sr" else {}), **({"L": 1.0} if name == "lr" else {})}
    q = verify_mod._double(build_query(prop(name), net, x0=x0, y=net(x0).argmax(1), params=params))
    rn = ReluNet.from_module(net, q.shape, dtype=torch.float64)
    pre = crown_preactivations(rn, q.lo, q.hi)
    lb, ub = query_row_bounds(rn, q, "crown", pre, "both")
    open_d = [d for d in range(len(q.disjuncts)) if not bool(disjunct_refuted(q, lb, ub)[0, d])]
    one_sided = verifiers._one_sided
    answers = []
    for mask in (one_sided, lambda *a, **k: None):
        verifiers._one_sided = mask
        try:
            answers.append(milp(rn, q, pre, lb, open_d, 10, ub=ub).status)
        finally:
            verifiers._one_sided = one_sided
    assert answers[0] == answers[1] and answers[0] in ("sat", "unsat"), answers


def test_margin_bounds_with_time_weights_bound_every_row_as_without():
    """milp_lower_bounds(weights=...) only shares the time differently: with time to spare every
    row gets its optimum, a weight of 0 included, the same as with equal shares, and no sampled
    input goes below it."""
    from robustspec.runtime.verifiers import milp_lower_bounds
    g = torch.Generator().manual_seed(3)
    net = random_net(g, nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 4), Clamp(-100, 100))
    x0 = torch.rand(1, 3, generator=g)
    q = verify_mod._double(build_query(prop("scr"), net, x0=x0, y=net(x0).argmax(1),
                                       params={"eps": 0.3}))
    rn = ReluNet.from_module(net, q.shape, dtype=torch.float64)
    pre = crown_preactivations(rn, q.lo, q.hi)
    rows = [r for r in q.softmax[0].margins if not verify_mod._is_label_row(q, r)]
    equal, _ = milp_lower_bounds(rn, q, pre, rows, 20)
    weighted, _ = milp_lower_bounds(rn, q, pre, rows, 20, weights=np.array([0.0, 1.0, 5.0]))
    assert np.all(np.isfinite(equal)) and weighted == pytest.approx(equal, abs=1e-6)
    xs = q.lo + (q.hi - q.lo) * torch.rand(4000, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        values = q.row_values(rn(xs), xs)[:, rows]
    assert np.all(values.min(0).values.numpy() >= weighted - 1e-9)


def _encode_per_neuron(inf, net, query, pre, one_sided=None):
    """The network's MILP encoding neuron by neuron, as `_encode_network` was written before it
    was built a layer at a time from the nonzeros (the reference it must match)."""
    n = net.inputs
    col_lo, col_hi, integer = list(query.lo[0].double().numpy()), list(query.hi[0].double().numpy()), []
    rows = verifiers._Sparse()
    prev = np.arange(n)
    for k in range(len(net.weights) - 1):
        W, b = net.dense(k).double().numpy(), net.biases[k].double().numpy()
        lk, uk = pre[k][0][0].double().numpy(), pre[k][1][0].double().numpy()
        lower_only = one_sided[1] if one_sided is not None and one_sided[0] == k else None
        cols = []
        for j in range(W.shape[0]):
            a = len(col_lo)
            cols.append(a)
            if uk[j] <= 0:
                col_lo.append(0.0)
                col_hi.append(0.0)
                continue
            col_lo.append(max(0.0, lk[j]))
            col_hi.append(max(0.0, uk[j]))
            if lk[j] >= 0:
                rows.add(np.concatenate([[a], prev]), np.concatenate([[1.0], -W[j]]), b[j], b[j])
                continue
            rows.add(np.concatenate([[a], prev]), np.concatenate([[1.0], -W[j]]), b[j], inf)
            if lower_only is not None and lower_only[j]:
                continue
            d = len(col_lo)
            col_lo.append(0.0)
            col_hi.append(1.0)
            integer.append(d)
            rows.add(np.array([a, d]), np.array([1.0, -uk[j]]), -inf, 0.0)
            rows.add(np.concatenate([[a], prev, [d]]), np.concatenate([[1.0], -W[j], [-lk[j]]]),
                     -inf, b[j] - lk[j])
        prev = np.array(cols)
    return col_lo, col_hi, integer, rows, prev


@pytest.mark.parametrize("kind", ["mlp", "cnn-dense", "cnn-sparse"])
def test_network_encoding_is_the_per_neuron_one(kind, monkeypatch):
    """_encode_network builds each layer's rows at once from its nonzeros (sparse for a CNN's
    conv and pool layers): the same columns, bounds, binaries and rows, in the same order, as
    the per-neuron encoding, with and without one-sided ReLUs."""
    import highspy

    from robustspec.runtime import bounds
    from robustspec.runtime.models import SmallCNN
    g = torch.Generator().manual_seed(0)
    if kind == "mlp":
        net = random_net(g, nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3),
                         Clamp(-2, 2))
        x0, shape = torch.rand(1, 6, generator=g), (6,)
    else:
        if kind == "cnn-sparse":
            monkeypatch.setattr(bounds, "SPARSE_MIN", 0)
        net = random_net(g, *SmallCNN(1, 4, classes=3, width=2, hidden=4), scale=0.5)
        x0, shape = torch.rand(1, 1, 4, 4, generator=g), (1, 4, 4)
    for eps in (0.02, 0.3):
        q = verify_mod._double(build_query(prop("cr_margin"), net, x0=x0, y=net(x0).argmax(1),
                                           params={"eps": eps}))
        rn = ReluNet.from_module(net, shape, dtype=torch.float64)
        assert (kind == "cnn-sparse") == any(w.layout != torch.strided for w in rn.weights)
        pre = crown_preactivations(rn, q.lo, q.hi)
        one_sided = verifiers._one_sided(rn, pre, q.cy[0, :1].numpy())
        for os_ in (None, one_sided):
            new = verifiers._encode_network(highspy.kHighsInf, rn, q, pre, os_)
            ref = _encode_per_neuron(highspy.kHighsInf, rn, q, pre, os_)
            assert new[0] == ref[0] and new[1] == ref[1] and new[2] == ref[2]
            assert new[2] or eps < 0.3  # at eps 0.3 some ReLUs need binaries
            assert np.array_equal(new[4], ref[4])
            a, b = new[3], ref[3]
            assert (a.lo, a.hi, a.starts, a.nnz) == (b.lo, b.hi, b.starts, b.nnz)
            assert np.array_equal(np.concatenate(a.idx), np.concatenate(b.idx))
            assert np.array_equal(np.concatenate(a.val), np.concatenate(b.val))
