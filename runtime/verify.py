"""Constraint satisfaction (the paper's Definition 5) by a staged pipeline, per example:

1. attack: the property's own PGD search; a point the exact checker rejects -> "falsified";
2. bounds: CROWN (or interval) bounds of the query's rows, batched -> "verified" where every
   disjunct of the negated body is ruled out;
3. complete: HiGHS MILP or Marabou on what is left, one example at a time with a timeout ->
   "verified" (unsat), "falsified" (a solver point the exact checker rejects), "boundary" (a
   solver point the checker accepts: a tie within the solver's tolerance, not a counterexample)
   or "unknown" (timeout). SCR's softmax threshold has no complete solver: its margins are
   minimised by MILP for a certificate, and the minimisers replayed as counterexamples.

Each stage runs only on what the previous ones left open. Invariants checked on every run:
verified implies no attack finds a counterexample (the bounds are computed for every example
and must not rule out an attacked one, and a second attack, another seed, runs on the verified
examples), and so satisfaction <= security. The model's train/eval mode is restored after.
"""
from __future__ import annotations

import copy
import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from robustspec.compiler.query import build_query
from robustspec.dsl.errors import InputError, MissingExtra

from .bounds import ReluNet, crown_preactivations, disjunct_refuted, interval_bounds, query_row_bounds
from .files import atomic_write, atomic_write_text
from .verifiers import SOLVERS

VERDICTS = ("verified", "falsified", "unknown", "boundary")
STAGES = ("attack", "bounds", "complete")
VERIFIERS = ("auto", "bounds", "milp", "marabou")


class InvariantError(AssertionError):
    """Two stages contradict each other: a bug, never a result."""


@dataclass
class VerifyResult:
    prop: str
    eps: float | None
    verifier: str
    verdicts: list  # per example
    decided_by: list  # stage per example ("" when unknown)
    times: dict  # stage -> [B] seconds per example
    counterexamples: dict = field(default_factory=dict)  # index -> tensor (one example's input)
    notes: list = field(default_factory=list)

    def counts(self) -> dict:
        return {v: sum(1 for x in self.verdicts if x == v) for v in VERDICTS}

    @property
    def satisfaction(self) -> float:
        return self.counts()["verified"] / max(1, len(self.verdicts))

    @property
    def security_upper(self) -> float:
        """Fraction not falsified: an upper bound of constraint security."""
        return 1 - self.counts()["falsified"] / max(1, len(self.verdicts))

    def stage_seconds(self) -> dict:
        return {s: float(sum(self.times[s])) for s in STAGES}

    def row(self) -> dict:
        n = max(1, len(self.verdicts))
        out = {"property": self.prop, "eps": self.eps, "verifier": self.verifier,
               "points": len(self.verdicts), **self.counts(),
               "satisfaction": round(self.satisfaction, 4)}
        for s, t in self.stage_seconds().items():
            out[f"{s}_s_per_point"] = round(t / n, 5)
        return out

    def to_json(self) -> dict:
        return {**self.row(), "verdicts": self.verdicts, "decided_by": self.decided_by,
                "times": {s: [round(float(t), 6) for t in v] for s, v in self.times.items()},
                "notes": self.notes}


def table(results: list[VerifyResult]) -> str:
    """One line per result: counts per verdict and seconds per point per stage."""
    head = (f"{'eps':>7} {'verified':>9} {'falsified':>10} {'unknown':>8} {'boundary':>9} "
            f"{'satisf.':>8} {'attack s/pt':>12} {'bounds s/pt':>12} {'complete s/pt':>14}")
    lines = [head]
    for r in results:
        row = r.row()
        eps = "-" if r.eps is None else f"{r.eps:g}"
        lines.append(f"{eps:>7} {row['verified']:>9} {row['falsified']:>10} {row['unknown']:>8} "
                     f"{row['boundary']:>9} {row['satisfaction']:>8.3f} "
                     f"{row['attack_s_per_point']:>12.4f} {row['bounds_s_per_point']:>12.4f} "
                     f"{row['complete_s_per_point']:>14.3f}")
    return "\n".join(lines)


def save(results: list[VerifyResult], stem: str | Path) -> dict:
    """JSON (everything), CSV (one row per eps) and counterexamples (.pt), written atomically."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    j = stem.with_suffix(".json")
    atomic_write_text(j, json.dumps([r.to_json() for r in results], indent=1))
    rows = [r.row() for r in results]
    c = stem.with_suffix(".csv")
    import io
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(c, buf.getvalue())
    p = stem.parent / (stem.name + "-counterexamples.pt")
    blob = {str(r.eps): {int(i): t for i, t in r.counterexamples.items()} for r in results}
    atomic_write(p, lambda f: torch.save(blob, f))
    return {"json": j, "csv": c, "counterexamples": p}


def pick_solver(verifier: str) -> str | None:
    if verifier == "bounds":
        return None
    if verifier in ("milp", "marabou"):
        return verifier
    try:
        import highspy  # noqa: F401
        return "milp"
    except ImportError:
        try:
            import maraboupy  # noqa: F401
            return "marabou"
        except ImportError:
            raise MissingExtra("verify", "highspy", "complete verification (--verifier auto)") from None


def verify_property(prop, model=None, *, verifier: str = "auto", timeout: float = 30.0,
                    params: dict | None = None, **kwargs) -> VerifyResult:
    """`prop.verify(model, x0=..., y=...)`: the property's arguments by name; the remaining
    keywords (eps, limit, progress, bounds, attack_steps, restarts, seed) go to `verify`."""
    kinds = dict(prop.args)
    given = {k: kwargs.pop(k) for k in list(kwargs) if k in kinds}
    x = next((v for k, v in given.items() if kinds[k].kind == "real"), None)
    y = next((v for k, v in given.items() if kinds[k].kind == "int"), None)
    if x is None:
        raise InputError(f"verify needs the property's input: pass "
                         f"{', '.join(f'{k}=...' for k in kinds)}")
    kwargs.setdefault("progress", False)
    return verify(model, prop, x, y, verifier=verifier, timeout=timeout, params=params, **kwargs)


def verify(model, prop, x: torch.Tensor, y: torch.Tensor | None = None, *, eps: float | None = None,
           verifier: str = "auto", timeout: float = 30.0, limit: int | None = None,
           progress: bool = True, params: dict | None = None, bounds: str = "crown",
           attack_steps: int = 50, restarts: int = 1, seed: int = 0, jobs: int = 1,
           device: str | torch.device | None = None) -> VerifyResult:
    """Verdicts per example (see the module docstring); `eps` overrides the spec's eps.
    device: where the attack runs (None: where the model is); bound propagation and the
    solvers always work on a CPU copy in float64 (they hand numpy arrays to HiGHS/Marabou).
    jobs: examples given to the complete solver at once (threads: HiGHS releases the GIL while
    it solves, so 2 jobs on 2 cores decide about twice as many points in the same time)."""
    if verifier not in VERIFIERS:
        raise InputError(f"verifier must be one of {', '.join(VERIFIERS)}, not {verifier!r}")
    if not timeout > 0:
        raise InputError(f"timeout must be > 0 seconds, got {timeout}")
    if not (isinstance(jobs, int) and jobs >= 1):
        raise InputError(f"jobs must be a whole number >= 1, got {jobs!r}")
    solver_name = pick_solver(verifier)
    params = dict(params or {})
    if limit is not None:  # per-example parameters (tensors of the batch's length) too
        n0 = x.shape[0]
        x, y = x[:limit], (None if y is None else y[:limit])
        params = _params_rows(params, slice(0, limit), n0)
    if eps is not None:
        params["eps"] = eps
    from .training import property_args
    args = property_args(prop, x, y) if y is not None else {prop.args[0][0]: x}
    modes = [(m, m.training) for m in model.modules()]  # each module's, e.g. a frozen BatchNorm
    model.eval()
    try:
        return _staged(model, prop, x, y, args, params, verifier, solver_name, timeout, progress,
                       bounds, attack_steps, restarts, seed, jobs, device, eps)
    finally:
        for m, was in modes:
            m.training = was


def _staged(model, prop, x, y, args, params, verifier, solver_name, timeout, progress, bounds,
            attack_steps, restarts, seed, jobs, device, eps) -> VerifyResult:
    """The three stages (module docstring) on a model in eval mode."""
    B = x.shape[0]
    times = {s: [0.0] * B for s in STAGES}
    verdicts = ["unknown"] * B
    decided = [""] * B
    cex: dict[int, torch.Tensor] = {}
    notes: list[str] = []
    from . import distributed
    dev = distributed.place(model, device)
    cpu_model = model if dev.type == "cpu" else copy.deepcopy(model).cpu()
    attack_args = {k: v.to(dev) for k, v in args.items()}
    args = {k: v.cpu() for k, v in args.items()}

    # 1. attack
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    from .arguments import pgd
    search = distributed.shard_search(pgd(attack_steps, None, restarts), None)  # CPU-drawn starts
    found = prop.search(model, search=search, params=params, generator=g, **attack_args)
    checked = prop.check(model, params=params, at=found, **attack_args)
    attacked = checked.violated.cpu()
    found = {k: found[k].detach().cpu() for k in found}
    model = cpu_model  # from here on: bounds, solvers and replays on the CPU
    dt = (time.perf_counter() - t0) / B
    var = prop.variables[0] if prop.variables else None
    for i in range(B):
        times["attack"][i] = dt
        if bool(attacked[i]):
            verdicts[i], decided[i] = "falsified", "attack"
            cex[i] = found[var][i].detach().clone()

    # 2. bounds, on every example (an attacked one ruled out would be a bug)
    t0 = time.perf_counter()
    query = build_query(prop, model, params=params, **args)
    net = ReluNet.from_module(model, query.shape, dtype=torch.float64)  # no float32 rounding
    lo, hi = query.lo.double(), query.hi.double()
    pre = crown_preactivations(net, lo, hi) if bounds == "crown" else interval_bounds(net, lo, hi)
    qd = _double(query)
    # upper bounds refute rows; lower bounds are needed only by softmax atoms (all examples)
    # and by the complete solvers (big-M; computed below for the open examples alone)
    lb, ub = query_row_bounds(net, qd, bounds, pre if bounds == "crown" else None,
                              "both" if qd.softmax else "upper")
    refuted = disjunct_refuted(qd, lb, ub)
    proved = refuted.all(1)
    dt = (time.perf_counter() - t0) / B
    bad = (proved & attacked).nonzero().flatten().tolist()
    if bad:
        raise InvariantError(f"bounds rule out a counterexample the attack found (examples {bad}): "
                             "a bug in bound propagation or the query")
    for i in range(B):
        times["bounds"][i] = dt
        if verdicts[i] == "unknown" and bool(proved[i]):
            verdicts[i], decided[i] = "verified", "bounds"

    # 3. complete solver
    open_idx = [i for i in range(B) if verdicts[i] == "unknown"]
    if open_idx and solver_name is not None and not query.linear:
        def replay(i: int, points: list):
            """The first of the solver's points that example i's exact check rejects, or None."""
            if not points:
                return None
            pts = torch.cat([_replay_point(p, qd.example(i), query.shape, x.dtype) for p in points])
            rows = torch.full((len(points),), i, dtype=torch.long)  # example i, once per point
            one = {a: v[rows] for a, v in args.items()}
            bad = prop.check(model, params=_params_rows(params, rows, B), at={var: pts},
                             **one).violated
            hit = bad.nonzero().flatten()
            return pts[int(hit[0])] if len(hit) else None

        left = _softmax_by_milp(net, qd, pre, lb, ub,
                                open_idx, bounds, timeout, jobs, times, verdicts, decided,
                                solver_name, progress, eps, replay, cex)
        if left:
            notes.append(f"{left} examples left unknown: the query has a softmax threshold, "
                         "which no complete solver takes; certified by bounds (tightened by "
                         "MILP margin bounds), falsified by attack or by the MILP's margin "
                         "minimisers")
        solver_name = "milp" if solver_name == "milp" else None
        open_idx = []
    if open_idx and solver_name is not None:
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm

        solve = SOLVERS.get(solver_name)
        bar = tqdm(total=len(open_idx), desc=f"{solver_name} eps={eps}", unit="pt", leave=False,
                   disable=not progress)

        def one_example(i: int):
            qi = qd.example(i)
            open_d = [d for d in range(len(qd.disjuncts)) if not bool(refuted[i, d])]
            pi = [(l_[i:i + 1], u_[i:i + 1]) for l_, u_ in pre]  # CROWN or interval
            one = {k: v[i:i + 1] for k, v in args.items()}
            t_lb = time.perf_counter()
            lb_i, _ = query_row_bounds(net, qi, bounds, pi if bounds == "crown" else None, "lower")
            t_lb = time.perf_counter() - t_lb
            out = solve_and_replay(solve, net, qi, pi, lb_i, open_d, timeout, model, prop, one,
                                   _params_at(params, i, B), var, query.shape, x.dtype,
                                   ub=ub[i:i + 1])
            return out, t_lb

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            solved = {i: pool.submit(one_example, i) for i in open_idx}
            for i, fut in solved.items():  # in order, so notes and verdicts are deterministic
                (verdict, point, seconds, detail), t_lb = fut.result()
                bar.update()
                times["complete"][i] = seconds + t_lb
                if verdict != "unknown":
                    verdicts[i], decided[i] = verdict, solver_name
                if point is not None and verdict == "falsified":
                    cex[i] = point[0]
                if detail:
                    notes.append(f"example {i}: {solver_name}: {detail}")
        bar.close()
    if bool(query.strict.any()) and any(d in ("milp", "marabou") and v == "verified"
                                        for d, v in zip(decided, verdicts)):
        from .verifiers import STRICT_MARGIN
        notes.append(f"the complete solver poses strict rows (g > 0) as g >= {STRICT_MARGIN:g}: "
                     "its 'verified' rules out counterexamples violating by that much or more "
                     "(bounds-stage proofs are exact)")
    t0 = time.perf_counter()
    _attack_the_verified(prop, model, args, params, var, verdicts, decided, qd, net, seed,
                         attack_steps, B, notes)
    for i in range(B):
        times["attack"][i] += (time.perf_counter() - t0) / B
    result = VerifyResult(prop.name, eps, verifier if solver_name is None else
                          (solver_name if verifier == "auto" else verifier), verdicts, decided,
                          times, cex, notes)
    if result.satisfaction > result.security_upper + 1e-12:
        raise InvariantError("constraint satisfaction exceeds constraint security")
    return result


def _attack_the_verified(prop, model, args, params, var, verdicts, decided, q, net, seed,
                         steps, B, notes) -> None:
    """The invariant "verified implies no attack finds a counterexample", checked by a second
    attack (another seed) on the verified examples alone: a counterexample there is a bug,
    raised, unless a complete solver proved the point and the violation is smaller than the
    margin its strict rows are posed with (then a note says so)."""
    idx = [i for i in range(B) if verdicts[i] == "verified"]
    if not idx or var is None:
        return
    from .arguments import pgd
    from .verifiers import STRICT_MARGIN
    sel = torch.tensor(idx)
    sub = {k: v[sel] for k, v in args.items()}
    ps = _params_rows(params, sel, B)
    g = torch.Generator().manual_seed(seed + 1)
    found = prop.search(model, search=pgd(steps, None, 1), params=ps, generator=g, **sub)
    bad = prop.check(model, params=ps, at=found, **sub).violated
    for k in bad.nonzero().flatten().tolist():
        i = idx[k]
        point = found[var][k:k + 1].detach()
        if decided[i] == "bounds" or _clear_violation(q.example(i), net, point, STRICT_MARGIN):
            raise InvariantError(f"example {i} is verified (by {decided[i]}) but an attack found "
                                 "a counterexample: a bug in the bounds, the query or the solver")
        notes.append(f"example {i}: an attack found a violation smaller than the complete "
                     f"solver's strict margin {STRICT_MARGIN:g} (or not measurable on the rows)")


SOFTMAX_TOL = 1e-6  # a softmax threshold missed by less than this is within the bounds' rounding


def _clear_violation(q, net, point, strict_margin: float) -> bool:
    """Does the point satisfy some disjunct of the negated body by the margins the complete
    solver uses (strict rows by strict_margin, softmax thresholds by SOFTMAX_TOL)? Auxiliary
    variables (LR's t) take the least value their defining rows allow; rows defining them in
    another way are not measurable here: False."""
    xf = point.reshape(1, -1).double()
    y = net(xf)
    t = None
    if q.ct is not None:
        base = q.row_values(y, xf)[0]  # without the aux terms
        ct = q.ct[0]
        t = q.aux_lo[0].clone()
        for r in q.common:
            nz = ct[r].nonzero().flatten()
            if len(nz) != 1 or ct[r, nz[0]] <= 0:
                return False
            a = int(nz[0])
            t[a] = torch.maximum(t[a], -base[r] / ct[r, a])
        t = t.unsqueeze(0)
    rows = q.row_values(y, xf, t)[0]
    need = torch.where(q.strict, torch.tensor(strict_margin, dtype=rows.dtype),
                       torch.tensor(0.0, dtype=rows.dtype))
    ok = rows >= need

    def softmax_broken(k: int) -> bool:
        a = q.softmax[k]
        i = int(a.label[0])
        m = torch.stack([rows[r] for j, r in enumerate(a.margins) if j != i])  # F_i - F_j
        p = 1.0 / (1.0 + torch.exp(-m).sum())
        thr = float(a.threshold[0])
        return p < thr - SOFTMAX_TOL if a.below else p > thr + SOFTMAX_TOL

    return any(bool(q.active[0, d]) and all(bool(ok[r]) for r in rs)
               and all(softmax_broken(k) for k in sms)
               for d, (rs, sms) in enumerate(q.disjuncts))


def _softmax_by_milp(net, qd, pre, lb, ub, open_idx, bounds, timeout, jobs, times, verdicts, decided,
                     solver_name, progress, eps, replay, cex) -> int:
    """SCR's softmax threshold has no complete solver, but its certificate (margin lower bounds,
    bounds.softmax_impossible) is only as good as the bounds: with the MILP, each open example's
    margins are minimised exactly (or to HiGHS's dual bound in the time), which proves many
    points the linear relaxation leaves open. The inputs minimising the margins are replayed by
    the exact checker (`replay`): a margin driven low is where the threshold breaks, so they
    falsify points the attack missed. Sound, not complete: what stays open is unknown.
    Returns how many stay open."""
    if solver_name != "milp":
        return len(open_idx)
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from .verifiers import milp_lower_bounds, milp_softmax_upper

    rows = sorted({r for a in qd.softmax for r in a.margins})

    def one_example(i: int):
        t0 = time.perf_counter()
        qi = qd.example(i)
        pi = [(l_[i:i + 1], u_[i:i + 1]) for l_, u_ in pre]
        lb_i, ub_i = lb[i:i + 1], ub[i:i + 1]  # the batch's row bounds (both sides: softmax)
        want = [r for r in rows if not _is_label_row(qi, r)]
        base = lb_i[0, want].clone()

        def tightened(tight) -> torch.Tensor:
            out = lb_i.clone()
            out[0, want] = torch.maximum(base, torch.as_tensor(tight, dtype=lb_i.dtype))
            return out

        def certified(tight) -> bool:
            return bool(disjunct_refuted(qi, tightened(tight), ub_i).all())
        joint = _joint_softmax_atom(qi, lb_i, ub_i)
        # the smallest margins first, each with time in proportion to its weight exp(-lb) in
        # the sum to certify (equal shares spent most of it on far classes that cannot matter:
        # 14 -> 19 of 100 proved at eps 0.05, 10 s); stop once certified. The joint bound
        # below gets the time they leave (given half of it up front, it lost 2 proofs of 14)
        weights = np.exp(-np.clip(base.numpy(), -50, 50)) \
            if all(a.below for a in qi.softmax) else None
        tight, points = milp_lower_bounds(net, qi, pi, want, timeout, start=base.numpy(),
                                          stop=certified, weights=weights)
        proved = certified(tight)
        left = timeout - (time.perf_counter() - t0)
        if not proved and joint is not None and left > 0.2:  # (HiGHS's least limit is 0.1 s)
            atom, strict = joint
            upper, more = milp_softmax_upper(net, qi, pi, atom, tightened(tight)[0].numpy(),
                                             ub_i[0].numpy(), left)
            r = float(atom.threshold[0])
            limit = (1 - r) / r
            proved = upper < limit or (strict and upper <= limit)
            points = more + points
        point = None if proved else replay(i, points)
        return proved, point, time.perf_counter() - t0

    bar = tqdm(total=len(open_idx), desc=f"milp margins eps={eps}", unit="pt", leave=False,
               disable=not progress)
    left = 0
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for i, fut in {i: pool.submit(one_example, i) for i in open_idx}.items():
            proved, point, seconds = fut.result()
            bar.update()
            times["complete"][i] = seconds
            if proved:
                verdicts[i], decided[i] = "verified", "milp"
            elif point is not None:
                verdicts[i], decided[i] = "falsified", "milp"
                cex[i] = point
            else:
                left += 1
    bar.close()
    return left


def _joint_softmax_atom(q, lb, ub):
    """(atom, strict) when example q's only open disjunct is one softmax atom alone, asking for
    softmax_i < r (SCR's negation): the case `milp_softmax_upper` bounds jointly. Else None."""
    refuted = disjunct_refuted(q, lb, ub)[0]
    open_d = [d for d in range(len(q.disjuncts)) if not bool(refuted[d])]
    if len(open_d) != 1 or q.common:
        return None
    rows, soft = q.disjuncts[open_d[0]]
    if rows or len(soft) != 1 or not q.softmax[soft[0]].below:
        return None
    atom = q.softmax[soft[0]]
    return atom, bool(atom.strict)


def _is_label_row(q, r: int) -> bool:
    """Row r is a softmax atom's own margin F_y - F_y (identically zero): nothing to bound."""
    for a in q.softmax:
        if r in a.margins and a.margins.index(r) == int(a.label[0]):
            return True
    return False


TIE_MARGIN = 1e-4


def solve_and_replay(solve, net, q, pre, lb, open_d, timeout, model, prop, args, params, var,
                     shape, dtype, ub=None):
    """One example through a complete solver: (verdict, point, seconds, detail). A solver point
    the exact checker does not reject is asked for again clear of ties (every row TIE_MARGIN
    deeper, in the time left): found and replayed -> falsified, else boundary."""
    out = solve(net, q, pre, lb, open_d, timeout, ub=ub)
    seconds = out.seconds
    if out.status == "unsat":
        return "verified", None, seconds, ""
    if out.status in ("timeout", "error"):
        return "unknown", None, seconds, out.detail if out.status == "error" else ""
    point = _replay_point(out.x, q, shape, dtype)
    v = prop.check(model, params=params, at={var: point}, **args)
    if bool(v.violated[0]):
        return "falsified", point, seconds, ""
    outside = bool(v.vacuous[0])  # e.g. a corner of the box enclosing an L2 ball
    left = timeout - seconds
    if left > 0.1:
        again = solve(net, q, pre, lb, open_d, left, extra=TIE_MARGIN, ub=ub)
        seconds += again.seconds
        if again.status == "sat":
            p2 = _replay_point(again.x, q, shape, dtype)
            if bool(prop.check(model, params=params, at={var: p2}, **args).violated[0]):
                return "falsified", p2, seconds, ""
    if outside:
        return "unknown", None, seconds, ("the solver's point lies outside the domain (an L2 "
                                          "ball is posed as its enclosing box)")
    return "boundary", point, seconds, ""


def _double(q):
    from dataclasses import replace
    return replace(q, cy=q.cy.double(), cx=None if q.cx is None else q.cx.double(),
                   ct=None if q.ct is None else q.ct.double(), c=q.c.double(),
                   lo=q.lo.double(), hi=q.hi.double(), aux_lo=q.aux_lo.double(),
                   aux_hi=q.aux_hi.double())


def _per_example(v, B: int) -> torch.Tensor | None:
    """v as a tensor when it is a per-example parameter (one value per example of a batch of
    B: a tensor, array or list of length B), else None (a value shared by the batch)."""
    if isinstance(v, (int, float, bool, str)) or v is None:
        return None
    try:
        t = torch.as_tensor(v)
    except (TypeError, ValueError, RuntimeError):
        return None
    return t if t.ndim >= 1 and t.shape[0] == B else None


def _params_rows(params: dict, rows, B: int) -> dict:
    """The parameters of examples `rows` (an index tensor or slice); shared values unchanged."""
    out = {}
    for k, v in params.items():
        t = _per_example(v, B)
        out[k] = v if t is None else t[rows]
    return out


def _params_at(params: dict, i: int, B: int) -> dict:
    return _params_rows(params, slice(i, i + 1), B)


def _replay_point(xs, q, shape, dtype) -> torch.Tensor:
    """The solver's input, clipped into the box (solvers may be 1e-9 outside), example-shaped."""
    p = torch.as_tensor(xs, dtype=torch.float64).reshape(1, -1)
    p = torch.minimum(torch.maximum(p, q.lo.double()), q.hi.double())
    return p.to(dtype).reshape((1,) + tuple(shape))


__all__ = ["verify", "VerifyResult", "table", "save", "VERDICTS", "VERIFIERS", "InvariantError"]
