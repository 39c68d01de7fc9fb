"""Complete verifiers for one example's query: HiGHS MILP (highspy) and Marabou (maraboupy),
both in-process, both optional (the `verify` extra).

Each gets the network as an affine/ReLU chain (runtime/bounds.py ReluNet), the example's query,
the pre-activation bounds from bound propagation (big-M constants for the MILP, variable bounds
for Marabou) and which disjuncts the bounds left open. It answers "unsat" (no counterexample:
verified), "sat" with the input found (replayed by the caller before anything is claimed),
"timeout" or "error". Strict rows (g > 0) are posed as g >= STRICT_MARGIN, a margin above the
solvers' feasibility tolerances (else x = x0 would be a false counterexample of LR).
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from robustspec.compiler.registry import Registry
from robustspec.dsl.errors import InputError, MissingExtra

STRICT_MARGIN = 1e-5
# HiGHS meets its constraints to 1e-7 (its feasibility tolerance), so an objective bound it
# reports may be off by that times the objective's coefficients: bounds handed on are widened
# by BOUND_SLACK per unit of the objective's scale (`_slack`), to stay sound
BOUND_SLACK = 1e-6
# HiGHS's feasibility tolerance for queries with auxiliary variables (LR's t >= +-(x_i - x0_i),
# one row per pixel). At its default 1e-7 a solution may leave t's ball by 1e-7 in every pixel,
# which moves the outputs by up to 1e-7 times the network's row sums (hundreds for the FASHION
# MLP): more than STRICT_MARGIN, so a tie near x = x0 passed for a counterexample and every LR
# point ended `boundary`. At 1e-9 that error is below the margin (docs/verification.md).
AUX_FEASIBILITY_TOLERANCE = 1e-9


def _slack(cost: np.ndarray, col_lo, col_hi, const: float = 0.0) -> float:
    """How much to widen a HiGHS objective bound: BOUND_SLACK times the objective's scale (its
    coefficients times the largest column magnitude, and its constant)."""
    big = max(1.0, float(np.max(np.abs(col_lo))), float(np.max(np.abs(col_hi))))
    return BOUND_SLACK * (1.0 + float(np.abs(cost).sum()) * big + abs(const))


@dataclass
class Outcome:
    status: str  # unsat | sat | timeout | error
    x: np.ndarray | None  # [n] the input of a sat answer
    seconds: float
    detail: str = ""


def _need(pkg: str, purpose: str):
    try:
        return __import__(pkg)
    except ImportError:
        raise MissingExtra("verify", pkg, purpose) from None


def _example_rows(query, lb: torch.Tensor, open_d: list[int], extra: float = 0.0):
    """Rows of one example (batch 1) as numpy: coefficient blocks and the right-hand sides, the
    rows each open disjunct needs, the common rows, and each row's lower bound. `extra` asks
    every disjunct row for that much more (a search for a counterexample clear of ties)."""
    cy = query.cy[0].double().numpy()
    cx = None if query.cx is None else query.cx[0].double().numpy()
    ct = None if query.ct is None else query.ct[0].double().numpy()
    c = query.c[0].double().numpy()
    margin = np.where(query.strict.numpy(), max(STRICT_MARGIN, extra), extra)
    margin[list(query.common)] = 0.0  # definitions of auxiliary variables: exact
    low = lb[0].double().numpy()
    need = [[r for r in query.disjuncts[d][0] if low[r] < margin[r]] for d in open_d]
    common = [r for r in query.common if low[r] < margin[r]]
    free = [i for i, rs in enumerate(need) if not rs]
    if free:  # a disjunct the bounds show always satisfiable: pose it alone
        need = [need[free[0]]]
    return cy, cx, ct, c, margin, low, need, common


_QUIET_LOCK = threading.Lock()
_QUIET = {"depth": 0, "saved": -1, "devnull": -1}


@contextlib.contextmanager
def _quiet_stdout():
    """Silence what a solver's C code writes to file descriptor 1. Re-entrant across the
    threads of `verify(jobs=N)`: the first one in redirects, the last one out restores."""
    import sys
    with _QUIET_LOCK:
        if _QUIET["depth"] == 0:
            sys.stdout.flush()
            _QUIET["devnull"] = os.open(os.devnull, os.O_WRONLY)
            _QUIET["saved"] = os.dup(1)
            os.dup2(_QUIET["devnull"], 1)
        _QUIET["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET["depth"] -= 1
            if _QUIET["depth"] == 0:
                os.dup2(_QUIET["saved"], 1)
                os.close(_QUIET["saved"])
                os.close(_QUIET["devnull"])


class _Sparse:
    """Row-wise sparse constraints lo <= A v <= hi, collected for HiGHS."""

    def __init__(self):
        self.lo, self.hi, self.starts, self.idx, self.val = [], [], [], [], []
        self.nnz = 0

    def add(self, cols: np.ndarray, vals: np.ndarray, lo: float, hi: float):
        if len(cols) != len(np.unique(cols)):  # a column twice (e.g. no hidden layer: the
            cols, inv = np.unique(cols, return_inverse=True)  # inputs are the last activations)
            vals = np.bincount(inv, weights=vals, minlength=len(cols))
        keep = vals != 0
        cols, vals = cols[keep], vals[keep]
        self.starts.append(self.nnz)
        self.idx.append(cols.astype(np.int32))
        self.val.append(vals.astype(np.float64))
        self.nnz += len(cols)
        self.lo.append(lo)
        self.hi.append(hi)

    def add_block(self, lo: np.ndarray, hi: np.ndarray, lengths: np.ndarray, cols: np.ndarray,
                  vals: np.ndarray):
        """Many rows at once, row i being the next lengths[i] entries of cols/vals: what `add`
        does row by row, for rows whose columns are distinct (a network's: thousands of them)."""
        keep = vals != 0
        if not keep.all():
            row = np.repeat(np.arange(len(lengths)), lengths)
            lengths = np.bincount(row[keep], minlength=len(lengths))
            cols, vals = cols[keep], vals[keep]
        self.starts.extend((self.nnz + np.cumsum(lengths) - lengths).tolist())
        self.idx.append(cols.astype(np.int32))
        self.val.append(vals.astype(np.float64))
        self.nnz += len(cols)
        self.lo.extend(np.asarray(lo, dtype=np.float64).tolist())
        self.hi.extend(np.asarray(hi, dtype=np.float64).tolist())


def _dense_np(net, k: int) -> np.ndarray:
    """Layer k's matrix as a dense numpy array (for the last layer: a few outputs wide)."""
    return net.dense(k).double().numpy()


def _rows_np(net, k: int):
    """(indptr, indices, data): layer k's nonzero coefficients row by row, in column order."""
    w = net.weights[k]
    if w.layout == torch.strided:
        W = w.double().numpy()
        r, c = np.nonzero(W)
        return np.concatenate([[0], np.cumsum(np.bincount(r, minlength=W.shape[0]))]), c, W[r, c]
    w = w.double()
    indptr, indices, data = (w.crow_indices().numpy(), w.col_indices().numpy(),
                             w.values().numpy())
    keep = data != 0
    if not keep.all():
        row = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row[keep], minlength=len(indptr) - 1))])
        indices, data = indices[keep], data[keep]
    return indptr, indices, data


def _times(M: np.ndarray, net, k: int) -> np.ndarray:
    """M @ weights[k] for a dense numpy M [r, out]: [r, in]."""
    w = net.weights[k]
    if w.layout == torch.strided:
        return M @ w.double().numpy()
    return net.apply_t(k, torch.from_numpy(np.ascontiguousarray(M)).to(w.dtype)).double().numpy()


def _segments(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The concatenation of arange(s, s + c) for each start s and count c."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)


def _tail_map(net, pre) -> tuple[int, np.ndarray] | None:
    """(K, M): K the last hidden layer with an unstable ReLU, M [outputs, width of K] the exact
    linear map from K's activations to the outputs through the later layers, all of whose ReLUs
    the bounds show stable (e.g. PaperMLP's inactive logit clamp). None without unstable ReLUs."""
    K = None
    for k in range(len(net.weights) - 1):
        lk, uk = pre[k][0][0].double().numpy(), pre[k][1][0].double().numpy()
        if np.any((lk < 0) & (uk > 0)):
            K = k
    if K is None:
        return None
    M = _dense_np(net, -1)
    for k in range(len(net.weights) - 2, K, -1):  # through the stable layers, last first
        # as `_encode_network` encodes a stable ReLU: u <= 0 fixed at 0, else (l >= 0) identity
        active = (pre[k][0][0].double().numpy() >= 0) & (pre[k][1][0].double().numpy() > 0)
        M = _times(M * active, net, k)
    return K, M


def _one_sided(net, pre, coeffs: np.ndarray) -> tuple[int, np.ndarray] | None:
    """Which ReLUs of the last unstable layer need no binary for constraints `coeffs @ y >= ...`
    ([rows, outputs]): those that every row wants small (coefficient <= 0 through the stable
    tail). Dropping constraints only relaxes the MILP, so its infeasibility proves the exact
    one infeasible whatever the mask; the mask makes a feasible answer exact too: lowering such
    an a to relu(z) keeps every row satisfied and makes the network exact, so the relaxation's
    solution is a counterexample (replayed by the caller anyway). Fewer binaries, same answer:
    `milp`'s disjuncts decide faster (CR margin at eps 0.05, 10 s: 83 -> 89% of 100 points
    decided). Not used where a dual bound under a time limit is the result (see
    `milp_lower_bounds`)."""
    tail = _tail_map(net, pre)
    if tail is None:
        return None
    K, M = tail
    return K, np.all(coeffs @ M <= 0, axis=0)


def _encode_network(inf: float, net, query, pre, one_sided=None):
    """The network as big-M MILP constraints over the query's input box (batch 1): column
    bounds, integer columns, rows, and the columns of the last hidden layer's activations.
    one_sided (K, mask): layer K's ReLUs under mask are encoded as a >= z, a >= 0 only (see
    `_one_sided`). Per neuron z = W a_prev + b with bounds [l, u]: u <= 0 a column fixed at 0;
    l >= 0 a = z; else a >= z, and (with its binary d) a <= u d, a <= z - l (1 - d). Built a
    layer at a time from the nonzeros of W (a CNN's layers are thousands of sparse rows)."""
    n = net.inputs
    col_lo, col_hi, integer = list(query.lo[0].double().numpy()), list(query.hi[0].double().numpy()), []
    rows = _Sparse()
    prev = np.arange(n)  # columns of the previous layer's activations
    for k in range(len(net.weights) - 1):
        indptr, indices, data = _rows_np(net, k)
        b = net.biases[k].double().numpy()
        lk = pre[k][0][0].double().numpy()
        uk = pre[k][1][0].double().numpy()
        dead = uk <= 0
        unstable = ~dead & (lk < 0)
        binary = unstable.copy()
        if one_sided is not None and one_sided[0] == k:
            binary &= ~one_sided[1]  # a >= max(0, z): exact here (`_one_sided`)
        # columns: each neuron's activation a, followed by its binary d where it has one
        base = len(col_lo)
        ncol = 1 + binary.astype(np.int64)
        a = base + np.cumsum(ncol) - ncol
        d = a + 1
        lo_c, hi_c = np.empty(int(ncol.sum())), np.empty(int(ncol.sum()))
        lo_c[a - base] = np.where(dead, 0.0, np.maximum(0.0, lk))
        hi_c[a - base] = np.where(dead, 0.0, np.maximum(0.0, uk))
        lo_c[d[binary] - base], hi_c[d[binary] - base] = 0.0, 1.0
        col_lo.extend(lo_c.tolist())
        col_hi.extend(hi_c.tolist())
        integer.extend(d[binary].tolist())
        # rows, in neuron order: a = z (l >= 0) or a >= z; then a <= u d, a <= z - l (1 - d)
        live = np.nonzero(~dead)[0]
        bi = np.nonzero(binary)[0]
        count = (~dead).astype(np.int64) + 2 * binary
        first = np.cumsum(count) - count
        nnz = np.diff(indptr)

        def z_rows(J, tail):
            """Rows [a_j, prev...] with values [1, -W_j] (and [d_j] with -l_j when tail)."""
            lengths = 1 + nnz[J] + tail
            starts = np.cumsum(lengths) - lengths
            idx = np.empty(int(lengths.sum()), dtype=np.int64)
            val = np.empty(len(idx))
            idx[starts], val[starts] = a[J], 1.0
            src, dst = _segments(indptr[J], nnz[J]), _segments(starts + 1, nnz[J])
            idx[dst], val[dst] = prev[indices[src]], -data[src]
            if tail:
                idx[starts + lengths - 1], val[starts + lengths - 1] = d[J], -lk[J]
            return lengths, idx, val
        l1, i1, v1 = z_rows(live, 0)
        l3, i3, v3 = z_rows(bi, 1)
        keys = np.concatenate([first[live], first[bi] + 1, first[bi] + 2])
        lengths = np.concatenate([l1, np.full(len(bi), 2), l3])
        idx = np.concatenate([i1, np.stack([a[bi], d[bi]], 1).reshape(-1), i3])
        val = np.concatenate([v1, np.stack([np.ones(len(bi)), -uk[bi]], 1).reshape(-1), v3])
        lo = np.concatenate([b[live], np.full(len(bi), -inf), np.full(len(bi), -inf)])
        hi = np.concatenate([np.where(unstable[live], inf, b[live]), np.zeros(len(bi)),
                             b[bi] - lk[bi]])
        order = np.argsort(keys, kind="stable")
        starts = np.cumsum(lengths) - lengths
        take = _segments(starts[order], lengths[order])
        rows.add_block(lo[order], hi[order], lengths[order], idx[take], val[take])
        prev = a
    return col_lo, col_hi, integer, rows, prev


def _highs(highspy, timeout: float, col_lo, col_hi, integer, rows, tolerance: float | None = None):
    with _quiet_stdout():  # HiGHS prints its banner on the C stdout
        h = highspy.Highs()
    h.silent()
    h.setOptionValue("time_limit", float(max(timeout, 0.1)))
    h.setOptionValue("threads", 1)
    if tolerance is not None:  # see AUX_FEASIBILITY_TOLERANCE
        h.setOptionValue("primal_feasibility_tolerance", tolerance)
        h.setOptionValue("mip_feasibility_tolerance", tolerance)
    h.addVars(len(col_lo), np.array(col_lo), np.array(col_hi))
    if integer:
        h.changeColsIntegrality(len(integer), np.array(integer, dtype=np.int32),
                                np.array([highspy.HighsVarType.kInteger] * len(integer)))
    if rows.lo:
        st = h.addRows(len(rows.lo), np.array(rows.lo), np.array(rows.hi), rows.nnz,
                       np.array(rows.starts, dtype=np.int32), np.concatenate(rows.idx),
                       np.concatenate(rows.val))
        if st == highspy.HighsStatus.kError:  # HiGHS refuses a malformed row and adds none
            # (a warning, e.g. for tiny coefficients it drops, still adds the rows)
            raise RuntimeError(f"HiGHS did not take the rows ({st}): a bug in the encoding")
    return h


def _minimise(highspy, net, encoding, cost_last: np.ndarray, const: float, timeout: float,
              cost_cols: dict | None = None) -> tuple[float, np.ndarray | None]:
    """Minimise cost_last . a + const over the MILP `encoding` (_encode_network's, `a` its last
    activations): the proved lower bound (-inf when HiGHS proves none), widened by `_slack`,
    and the incumbent's input (None without one). With integer columns the "optimal" objective
    is the incumbent, an upper bound within HiGHS's gap, so the dual bound is taken in every
    case; a pure LP (no unstable ReLU) gives its optimum, to tolerance. cost_cols: costs of
    columns added after the network's (column -> cost)."""
    col_lo, col_hi, integer, rows, prev = encoding
    S = highspy.HighsModelStatus
    h = _highs(highspy, timeout, col_lo, col_hi, integer, rows)
    nc = len(col_lo)
    cost = np.zeros(nc)
    cost[prev] = cost_last
    for col, v in (cost_cols or {}).items():
        cost[col] += v
    h.changeColsCost(nc, np.arange(nc, dtype=np.int32), cost)
    h.run()
    status, info = h.getModelStatus(), h.getInfo()
    bound = -np.inf
    if integer:
        if status in (S.kOptimal, S.kTimeLimit, S.kInterrupt) and np.isfinite(info.mip_dual_bound):
            bound = info.mip_dual_bound
    elif status == S.kOptimal:
        bound = info.objective_function_value
    bound += const - _slack(cost, col_lo, col_hi, const)
    point = np.array(h.getSolution().col_value[:net.inputs]) \
        if info.primal_solution_status == 2 else None  # a feasible incumbent
    return float(bound), point


def milp_lower_bounds(net, query, pre, rows_wanted: list[int], timeout: float,
                      start: np.ndarray | None = None, stop=None,
                      weights: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sound lower bounds of the query's rows `rows_wanted` (rows over the outputs alone, batch
    1), each minimised over the exact MILP encoding of the network: the optimum, or HiGHS's
    dual bound where its share of the time runs out. Certifies SCR's softmax threshold where
    the linear relaxation's margin bounds are too loose (sound, not complete). Also returns the
    inputs of the incumbents found (each row's best point so far): candidates for the caller to
    replay as counterexamples, since a margin driven low is where the softmax threshold breaks.
    start: the rows' bounds so far (the lowest is minimised first: it weighs most in the softmax
    certificate); stop(bounds) -> True ends the work early (certified); each row gets the time
    left divided by the rows left, or, with `weights` (how much each row's bound matters, e.g.
    its exp(-start) in the softmax sum), the time left in proportion to its weight among the
    rows left."""
    highspy = _need("highspy", "MILP bounds")
    t0 = time.perf_counter()
    WL, bL = _dense_np(net, -1), net.biases[-1].double().numpy()
    cy, c = query.cy[0].double().numpy(), query.c[0].double().numpy()
    # Every ReLU keeps its binary here: the ReLUs a row wants small need none for the optimum
    # (`_one_sided`), but HiGHS's cuts on them raise the dual bound a short time limit leaves
    # (margin 5 of test point 34 at eps 0.05: 1.78 with them, 1.20 without, at 1-4 s): the
    # bound, not the optimum, is what SCR's certificate uses
    encoding = _encode_network(highspy.kHighsInf, net, query, pre)
    out = np.full(len(rows_wanted), -np.inf)
    points = []
    order = list(range(len(rows_wanted))) if start is None else list(np.argsort(start, kind="stable"))
    for done, k in enumerate(order):
        r = rows_wanted[k]
        left = timeout - (time.perf_counter() - t0)
        if left <= 0.05:
            break
        if query.cx is not None and bool(query.cx[0][r].any()):
            continue  # a row that reads the input too: only rows over the outputs are bounded
        if weights is None:
            share = 1.0 / (len(order) - done)
        else:
            rest = float(np.sum(weights[order[done:]]))
            share = float(weights[k]) / rest if rest > 0 else 1.0 / (len(order) - done)
        # a fresh model per row: each run gets its own time limit whatever HiGHS's version
        # counts (older ones count an object's runs together)
        out[k], point = _minimise(highspy, net, encoding, cy[r] @ WL, float(c[r] + cy[r] @ bL),
                                  left * share)
        if point is not None:
            points.append(point)
        if stop is not None and stop(out):
            break
    return out, points


SOFTMAX_SEGMENTS = 6  # pieces of exp(-g) per margin in `milp_softmax_upper`


def _breakpoints(lo: float, hi: float, k: int) -> np.ndarray:
    """k pieces on [lo, hi], each twice as wide as the one before: exp(-g) bends most at lo,
    where the margins of a point near the threshold are."""
    widths = 2.0 ** np.arange(k)
    return lo + (hi - lo) * np.concatenate([[0.0], np.cumsum(widths)]) / widths.sum()


def milp_softmax_upper(net, query, pre, atom, lb: np.ndarray, ub: np.ndarray, timeout: float,
                       segments: int = SOFTMAX_SEGMENTS) -> tuple[float, list[np.ndarray]]:
    """A sound upper bound of sum_{j != i} exp(-g_j(x)) over the input box, g_j the softmax
    atom's margins F_i - F_j (batch 1), by one MILP: exp(-g) is convex, so on g's range [lb_j,
    ub_j] it lies below its piecewise-linear interpolation at `segments` + 1 breakpoints
    (`_breakpoints`; one segment: the chord), and the maximum of the interpolations' sum over
    the exact network (HiGHS's dual bound where time runs out) bounds the sum from above.
    Unlike the margins' separate minima this bounds them jointly (they are not all small at one
    x). The interpolation is the incremental form: g_j = lb_j + sum_k d_jk, 0 <= d_jk <= w_k,
    filled in order by binaries (d_jk >= w_k b_jk, d_j,k+1 <= w_k+1 b_jk); its LP relaxation is
    the chord, each branch tightens it (the SR-trained FASHION MLP's open SCR points at eps 0.05,
    30 s: 1.13 / 3.60 / 1.32 against the chords' 1.92 / 16.7 / 5.47, docs/verification.md).
    Margins whose exp(-lb_j) is below 1e-9 of the sum enter as that constant. Returns the bound
    (inf when HiGHS proves nothing) and the incumbent's input (the maximiser so far: a
    candidate, not necessarily where the softmax is lowest) for the caller to replay. The
    atom's own class `label` (the softmax's index i) is left out of the sum."""
    highspy = _need("highspy", "MILP softmax bounds")
    label = int(atom.label[0])
    js = [r for k, r in enumerate(atom.margins) if k != label]
    cy, c = query.cy[0].double().numpy(), query.c[0].double().numpy()
    lo, hi = lb[js], ub[js]
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(lo < -50) \
            or (query.cx is not None and bool(query.cx[0][js].any())):
        # unbounded margins, exp(-lo) beyond any useful certificate (the threshold is a sum of
        # at most ~1e22 then), or margins that read the input too: not bounded here
        return np.inf, []
    inf = highspy.kHighsInf
    # every ReLU with its binary, as in `milp_lower_bounds` (a dual bound is what counts)
    encoding = _encode_network(inf, net, query, pre)
    col_lo, col_hi, integer, rows, prev = encoding  # the pieces are appended to these
    WL, bL = _dense_np(net, -1), net.biases[-1].double().numpy()
    top = float(np.sum(np.exp(-lo)))
    const, gains = 0.0, {}  # the maximised sum: const + sum of gains[col] * col
    for j, r in enumerate(js):
        const += float(np.exp(-lo[j]))
        if np.exp(-lo[j]) < 1e-9 * top or hi[j] - lo[j] <= 1e-12:
            continue  # at most exp(-lo_j): a constant
        bp = _breakpoints(float(lo[j]), float(hi[j]), segments)
        w = np.diff(bp)
        slope = (np.exp(-bp[1:]) - np.exp(-bp[:-1])) / np.maximum(w, 1e-300)
        d0 = len(col_lo)
        col_lo.extend([0.0] * len(w))
        col_hi.extend(w.tolist())
        gains.update({d0 + k: float(slope[k]) for k in range(len(w))})
        b0 = len(col_lo)
        for k in range(len(w) - 1):  # fill piece k before piece k + 1
            col_lo.append(0.0)
            col_hi.append(1.0)
            integer.append(b0 + k)
            rows.add(np.array([d0 + k, b0 + k]), np.array([1.0, -w[k]]), 0.0, inf)
            rows.add(np.array([d0 + k + 1, b0 + k]), np.array([1.0, -w[k + 1]]), -inf, 0.0)
        # g_j = cy_j . (WL a + bL) + c_j = lo_j + sum_k d_jk
        rest = float(lo[j] - c[r] - cy[r] @ bL)
        rows.add(np.concatenate([prev, d0 + np.arange(len(w))]),
                 np.concatenate([cy[r] @ WL, -np.ones(len(w))]), rest, rest)
    # the maximum is minus the minimum of the negated sum
    lowest, point = _minimise(highspy, net, encoding, np.zeros(len(prev)), -const, timeout,
                              {col: -g for col, g in gains.items()})
    return -lowest, [] if point is None else [point]


def milp(net, query, pre, lb, open_d: list[int], timeout: float, extra: float = 0.0,
         ub=None) -> Outcome:
    """HiGHS MILP: big-M ReLUs with the pre-activation bounds `pre` ([(l, u)] per layer, batch 1).
    Each open disjunct is its own MILP, most promising first (the highest upper bound `ub` of its
    tightest row, when given): one that is feasible is a counterexample and ends the search;
    unsat needs every one infeasible. (One MILP with a selector binary per disjunct, its rows
    relaxed by big-M, has a far weaker relaxation: it timed out on CR's margin form.) Each
    disjunct gets the time left divided by the disjuncts left."""
    highspy = _need("highspy", "MILP verification")
    t0 = time.perf_counter()
    inf = highspy.kHighsInf
    cy, cx, ct, c, margin, low, need, common = _example_rows(query, lb, open_d, extra)
    n = net.inputs
    WL, bL = _dense_np(net, -1), net.biases[-1].double().numpy()
    tolerance = AUX_FEASIBILITY_TOLERANCE if query.n_aux else None

    def model_for(rs):
        """The MILP of one disjunct: the network (the ReLUs all its rows want small without a
        binary), the auxiliary columns, the common rows and the disjunct's rows."""
        col_lo, col_hi, integer, rows, prev = _encode_network(
            inf, net, query, pre, _one_sided(net, pre, cy[list(rs) + list(common)]))
        aux0 = len(col_lo)
        for a in range(query.n_aux):
            col_lo.append(float(query.aux_lo[0, a]))
            col_hi.append(float(query.aux_hi[0, a]))
        for r in list(common) + list(rs):
            cols = [prev, np.arange(n)]
            vals = [cy[r] @ WL, cx[r] if cx is not None else np.zeros(n)]
            if ct is not None:
                cols.append(aux0 + np.arange(query.n_aux))
                vals.append(ct[r])
            const = c[r] + cy[r] @ bL
            rows.add(np.concatenate(cols), np.concatenate(vals), margin[r] - const, inf)
        return col_lo, col_hi, integer, rows
    if ub is not None and len(need) > 1:  # the likeliest counterexample first
        up = ub[0].double().numpy()
        need = sorted(need, key=lambda rs: -min(up[r] - margin[r] for r in rs))
    S = highspy.HighsModelStatus
    pending = need
    for _round in range(2):  # the second round gives what timed out the time others left
        later = []
        for k, rs in enumerate(pending):
            left = timeout - (time.perf_counter() - t0)
            if left <= 0.05:
                later.extend(pending[k:])
                break
            # a fresh model per disjunct: no state carried between solves
            h = _highs(highspy, left / (len(pending) - k), *model_for(rs), tolerance=tolerance)
            h.run()
            status = h.getModelStatus()
            if status == S.kOptimal:
                vals = np.array(h.getSolution().col_value[:n])
                return Outcome("sat", vals, time.perf_counter() - t0)
            if status in (S.kTimeLimit, S.kInterrupt):
                later.append(rs)
            elif status != S.kInfeasible:
                return Outcome("error", None, time.perf_counter() - t0,
                               h.modelStatusToString(status))
        progressed, pending = len(later) < len(pending), later
        if not pending or not progressed or timeout - (time.perf_counter() - t0) <= 0.05:
            break
    return Outcome("timeout" if pending else "unsat", None, time.perf_counter() - t0)


def marabou(net, query, pre, lb, open_d: list[int], timeout: float, extra: float = 0.0,
            ub=None) -> Outcome:
    """Marabou in-process: the network built from the weights (no ONNX, so no Clip problem:
    the clamp is already two ReLUs, stable and eliminated when the bounds show it inactive)."""
    _need("maraboupy", "Marabou verification")
    from maraboupy import MarabouCore, Marabou
    t0 = time.perf_counter()
    cy, cx, ct, c, margin, low, need, common = _example_rows(query, lb, open_d, extra)
    n = net.inputs
    q = MarabouCore.InputQuery()
    lows, highs = list(query.lo[0].double().numpy()), list(query.hi[0].double().numpy())
    eqs = []
    prev = list(range(n))
    EQ, GE = MarabouCore.Equation.EQ, MarabouCore.Equation.GE
    relus = []

    def new(lo, hi):
        lows.append(lo)
        highs.append(hi)
        return len(lows) - 1
    for k in range(len(net.weights) - 1):
        indptr, indices, data = _rows_np(net, k)
        b = net.biases[k].double().numpy()
        lk = pre[k][0][0].double().numpy()
        uk = pre[k][1][0].double().numpy()
        cols = []
        for j in range(len(b)):
            z = new(float(lk[j]), float(uk[j]))
            a = new(0.0, float(max(0.0, uk[j])))
            e = MarabouCore.Equation(EQ)
            for i, v in zip(indices[indptr[j]:indptr[j + 1]], data[indptr[j]:indptr[j + 1]]):
                e.addAddend(float(v), prev[i])
            e.addAddend(-1.0, z)
            e.setScalar(float(-b[j]))
            eqs.append(e)
            relus.append((z, a))
            cols.append(a)
        prev = cols
    WL, bL = _dense_np(net, -1), net.biases[-1].double().numpy()
    aux = [new(float(query.aux_lo[0, a]), float(query.aux_hi[0, a])) for a in range(query.n_aux)]

    def row_eq(r):
        e = MarabouCore.Equation(GE)
        wa = cy[r] @ WL
        for i in np.nonzero(wa)[0]:
            e.addAddend(float(wa[i]), prev[i])
        if cx is not None:
            for i in np.nonzero(cx[r])[0]:
                e.addAddend(float(cx[r, i]), i)
        if ct is not None:
            for i in np.nonzero(ct[r])[0]:
                e.addAddend(float(ct[r, i]), aux[i])
        e.setScalar(float(margin[r] - c[r] - cy[r] @ bL))
        return e
    q.setNumberOfVariables(len(lows))
    for v, (lo, hi) in enumerate(zip(lows, highs)):
        q.setLowerBound(v, lo)
        q.setUpperBound(v, hi)
    for e in eqs:
        q.addEquation(e)
    for z, a in relus:
        MarabouCore.addReluConstraint(q, z, a)
    for r in common:
        q.addEquation(row_eq(r))
    if len(need) == 1:
        for r in need[0]:
            q.addEquation(row_eq(r))
    else:
        MarabouCore.addDisjunctionConstraint(q, [[row_eq(r) for r in rs] for rs in need])
    for i in range(n):
        q.markInputVariable(i, i)
    opts = Marabou.createOptions(timeoutInSeconds=max(1, int(round(timeout))), verbosity=0)
    with _quiet_stdout():  # Marabou prints to the C stdout
        code, vals, stats = MarabouCore.solve(q, opts, "")
    dt = time.perf_counter() - t0
    if code == "unsat":
        return Outcome("unsat", None, dt)
    if code == "sat":
        return Outcome("sat", np.array([vals[i] for i in range(n)]), dt)
    if code == "TIMEOUT" or stats.hasTimedOut():
        return Outcome("timeout", None, dt)
    return Outcome("error", None, dt, str(code))


SOLVERS: Registry = Registry("verifier", InputError)
SOLVERS.register("milp", milp, help="HiGHS MILP, big-M ReLUs with the bound-propagation bounds")
SOLVERS.register("marabou", marabou, help="Marabou (maraboupy) in-process")

__all__ = ["Outcome", "milp", "milp_lower_bounds", "milp_softmax_upper", "marabou", "SOLVERS", "STRICT_MARGIN"]
