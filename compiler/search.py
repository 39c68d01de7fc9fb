"""Quantifier search: find, per example, the worst point of a domain for an objective.

A forall is searched for a counterexample by descending the loss of its negated body; an exists
for a witness by descending the loss of its body. Every strategy is batched over the whole
batch, keeps the best point per example (ties broken towards the larger violation), and never
leaves the domain: PGD projects after every step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from robustspec.dsl.errors import InputError

from . import native
from .lower import SplitNormInf
from .registry import Registry

Objective = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor | None]]


def _rows(t: torch.Tensor) -> torch.Tensor:
    """[batch, everything else], also for a scalar variable ([batch])."""
    return t.reshape(t.shape[0], -1)


# what the searches' uniform numbers are, for records of a run (runtime/reproduce.py);
# "torch.rand" before 5 December 2026
UNIFORM_NUMBERS = "splitmix64"

# SplitMix64's constants (Steele, Lea and Flood 2014), as signed 64-bit integers for torch
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


def uniform(shape, dtype: torch.dtype, device, gen: torch.Generator | None) -> torch.Tensor:
    """Uniform numbers in [0, 1) for the searches' random starts and samples: element i is
    the (i + 1)-th output of SplitMix64 seeded by one draw from `gen` (the default generator
    when None), its top bits (24 for float32, 53 for float64: torch.rand's resolution) times
    2^-bits. Not torch.rand's numbers: torch's CPU generator is serial, about 3 ns a number,
    where the native kernel (compiler/native_kernels.cpp) takes a tenth of that; torch's
    integer ops give the same bits on other devices and without the kernels, so a drawn seed
    gives the same numbers everywhere (the seed itself comes from the generator, whose streams
    differ between CPU and CUDA). An L2 ball's start still uses torch.randn and torch.rand."""
    seed = torch.randint(0, 1 << 62, (), generator=gen, dtype=torch.int64,
                         device=gen.device if gen is not None else device)
    shape = tuple(shape)
    if dtype in (torch.float32, torch.float64) and torch.device(device).type == "cpu":
        kernel = native.uniform()
        if kernel is not None:
            out = torch.empty(shape, dtype=dtype)
            kernel(out, int(seed))
            return out
    return uniform_reference(shape, dtype, device, seed)


def _shift_right(z: torch.Tensor, k: int) -> torch.Tensor:
    """z >> k as an unsigned 64-bit shift (torch shifts int64 arithmetically)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def uniform_reference(shape, dtype: torch.dtype, device, seed: torch.Tensor | int) -> torch.Tensor:
    """`uniform`'s numbers from a given seed with torch's int64 ops (which wrap on overflow, as
    SplitMix64's arithmetic modulo 2^64 needs; the reference outputs in tests/test_native.py
    check it)."""
    n = math.prod(int(d) for d in shape)
    seed = torch.as_tensor(seed, dtype=torch.int64).to(device)
    z = torch.arange(1, n + 1, dtype=torch.int64, device=device).mul_(_GOLDEN).add_(seed)
    z.bitwise_xor_(_shift_right(z, 30)).mul_(_MIX1)
    z.bitwise_xor_(_shift_right(z, 27)).mul_(_MIX2)
    z.bitwise_xor_(_shift_right(z, 31))
    # the significand's bits (24 for float32, 53 for float64; eps = 2^(1 - bits)): an integer
    # below 2^bits converts exactly, and so does its scaling by 2^-bits
    bits = 1 - int(round(math.log2(torch.finfo(dtype).eps)))
    return (_shift_right(z, 64 - bits).to(dtype) * 2.0 ** -bits).reshape(shape)


class RealDomain:
    """A domain with its bounds evaluated: box [lo, hi] and/or an L2 ball, per example."""

    def __init__(self, lo: torch.Tensor | None, hi: torch.Tensor | None,
                 l2: tuple[torch.Tensor, torch.Tensor] | None, center: torch.Tensor | None,
                 known: tuple | None = None):
        """known: (width, empty rows, is it one point) where the bounds' maker computed them
        (compiler/domains.py's one-pass box kernel), so they are not computed again."""
        if l2 is None and (lo is None or hi is None):
            raise ValueError("unbounded domain")  # the compiler rejects these first
        self.lo, self.hi, self.l2, self.center = lo, hi, l2, center
        ref = next(t for t in (lo, hi, center, l2[0] if l2 else None) if t is not None)
        self.shape = ref.shape
        self.ref_device = ref.device
        self._empty = self._point = None
        if known is not None and l2 is None:
            self.width, self._empty, self._point = known
        else:
            self.width = hi - lo if l2 is None else None

    @property
    def requires_grad(self) -> bool:
        """Do the bounds depend on something being differentiated (an outer search's point)?"""
        ts = (self.lo, self.hi, self.center) + (tuple(self.l2) if self.l2 is not None else ())
        return any(t is not None and t.requires_grad for t in ts)

    def detached(self) -> "RealDomain":
        """The same domain, cut from the autograd graph (what a search descends in)."""
        if not self.requires_grad:
            return self
        det = (lambda t: None if t is None else t.detach())  # noqa: E731
        return RealDomain(det(self.lo), det(self.hi),
                          None if self.l2 is None else (self.l2[0].detach(), self.l2[1].detach()),
                          det(self.center))

    def relative(self, x: torch.Tensor) -> torch.Tensor:
        """A point found in this domain, as a function of the domain's bounds: the same value,
        but its gradient follows the bounds, x = lo + t * (hi - lo) with t held fixed (in an L2
        ball without a box, x = c + (x - c) with the offset held fixed). So an outer search sees
        how an inner quantifier's optimum moves with the outer variable (issue 7, defect 2)."""
        if not self.requires_grad:
            return x
        x = x.detach()
        if self.lo is not None and self.hi is not None:
            w = (self.hi - self.lo).detach()
            t = torch.where(w > 0, (x - self.lo.detach()) / torch.where(w > 0, w, 1), 0)
            moved = self.lo + t * (self.hi - self.lo)
        else:
            c = self.l2[0]
            moved = c + (x - c.detach())
        return x + (moved - moved.detach())  # the value of x exactly, the gradient of `moved`

    @property
    def is_point(self) -> bool:
        """eps = 0: nothing to search, the start is the only point."""
        if self.l2 is not None:
            r = self.l2[1]
            return bool(r.amax() <= 0)
        if self._point is not None:
            return bool(self._point)
        return bool(self.width.amax() <= 0)

    def empty(self) -> torch.Tensor:
        """Bool [batch]: the premises cannot all hold (e.g. x0 outside [0, 1] and eps small);
        a forall is then vacuously true and an exists false, whatever point is searched."""
        if self._empty is not None:
            return self._empty.clone()
        out = torch.zeros(self.shape[0], dtype=torch.bool, device=self.ref_device)
        if self.lo is not None and self.hi is not None:
            # lo > hi exactly where hi - lo < 0 (a NaN width, from NaN or equal infinite bounds,
            # is not: made 0); a float min is 3x faster than the any() of a bool tensor
            w = self.width if self.width is not None else self.hi - self.lo
            out |= _rows(w).nan_to_num(nan=0.0).amin(1) < 0
        if self.l2 is not None:
            r = self.l2[1]
            out |= (r.flatten() < 0) if r.ndim else (r < 0)
        return out

    def contains(self, x: torch.Tensor) -> torch.Tensor:
        """Bool [batch]: is x in the domain? Exact for boxes (projection clamps exactly); an L2
        ball allows the rounding of a norm (64 float epsilons, relative)."""
        ok = ~self.empty()
        if self.lo is not None:
            ok &= _rows(x >= self.lo).all(1)
        if self.hi is not None:
            ok &= _rows(x <= self.hi).all(1)
        if self.l2 is not None:
            c, r = self.l2
            r = r.flatten() if r.ndim else r
            tol = 64 * torch.finfo(x.dtype).eps * (1 + r)
            ok &= _rows(x - c).norm(dim=1) <= r + tol
        return ok

    def project(self, x: torch.Tensor) -> torch.Tensor:
        if self.l2 is not None:
            c, r = self.l2
            d = x - c
            n = d.flatten(1).norm(dim=1).clamp_min(1e-12)
            factor = torch.clamp(r.flatten() / n, max=1.0) if r.ndim else torch.clamp(r / n, max=1.0)
            x = c + d * factor.reshape((-1,) + (1,) * (d.ndim - 1))
        if self.lo is not None or self.hi is not None:
            x = torch.clamp(x, self.lo, self.hi)
        return x

    def sample(self, gen: torch.Generator | None) -> torch.Tensor:
        """A uniform sample (uniform in the box; in an L2 ball, uniform in the ball then clipped)."""
        if self.l2 is not None:
            c, r = self.l2
            flat = c.flatten(1)
            direction = torch.randn(flat.shape, generator=gen, dtype=c.dtype, device=c.device)
            direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
            u = torch.rand(flat.shape[0], 1, generator=gen, dtype=c.dtype, device=c.device)
            rr = r.flatten().unsqueeze(1) if r.ndim else r
            x = c + (direction * rr * u.pow(1.0 / flat.shape[1])).reshape(c.shape)
            return self.project(x)
        u = uniform(self.shape, self.lo.dtype, self.lo.device, gen)
        return torch.addcmul(self.lo, self.width, u)

    def start(self) -> torch.Tensor:
        """A deterministic start: the ball's center (clipped into the box) or the box's middle."""
        if self.center is not None:
            return self.project(self.center.expand(self.shape).clone())
        return (self.lo + self.hi) / 2

    def default_step(self, steps: int) -> torch.Tensor:
        """Madry et al.'s choice: 2.5 * radius / steps, so the search can cross the domain."""
        if self.l2 is not None:
            return 2.5 * self.l2[1] / steps
        return 2.5 * (self.hi - self.lo) / 2 / steps

    def step(self, x: torch.Tensor, g: torch.Tensor, size) -> torch.Tensor:
        """Descend: signed steps in a box (L-infinity geometry), normalised ones in an L2 ball."""
        if self.l2 is not None:
            n = g.flatten(1).norm(dim=1).clamp_min(1e-12).reshape((-1,) + (1,) * (g.ndim - 1))
            s = size.reshape((-1,) + (1,) * (g.ndim - 1)) if torch.is_tensor(size) and size.ndim else size
            return self.project(x - s * g / n)
        return self.project(x - size * g.sign())

    def step_(self, x: torch.Tensor, g: torch.Tensor, size) -> torch.Tensor:
        """`step` in place: overwrites x (and g, when it is contiguous) and returns x. The same
        numbers as `step` (size * sign(g) is exact, so x - size * sign(g) rounds once either
        way); in a box it is three passes over x instead of four, and no new tensors."""
        if self.l2 is not None or not x.is_contiguous():
            return self.step(x, g, size)
        s = g.sign_() if g.is_contiguous() else g.sign()  # a gradient may be an expanded view
        if torch.is_tensor(size):
            x.addcmul_(size, s, value=-1)
        elif abs(size) <= torch.finfo(x.dtype).max:
            x.sub_(s, alpha=size)
        else:  # a step beyond the dtype's range (or NaN): an infinite one, as in `step`
            x.sub_(s.mul_(size))
        return x.clamp_(self.lo, self.hi)


def _keep_rows_(dst: torch.Tensor, better: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """dst[i] = src[i] where better[i], in place (no new tensor per step). On the CPU only the
    rows that changed are copied (finding them is no device sync there): 3-53 us against
    torch.where's 61-86 us on a batch of 128 images, by the share of rows kept; elsewhere a
    `where` (no host sync per step). An exact bit-select (dst ^= (dst ^ src) & mask) was
    tried: faster on its own, not inside the PGD loop."""
    if dst.device.type == "cpu" and better.device.type == "cpu" and src.device.type == "cpu":
        rows = better.reshape(-1).nonzero().squeeze(1)
        if rows.numel() == dst.shape[0]:
            return dst.copy_(src)
        if rows.numel():
            dst.index_copy_(0, rows, src.index_select(0, rows))
        return dst
    return torch.where(better.reshape((-1,) + (1,) * (dst.ndim - 1)), src, dst, out=dst)


def _native_keeps(p: torch.Tensor, v: torch.Tensor, better: torch.Tensor) -> bool:
    """Can the native kernel copy v's improved rows into the best point p (CPU float32/64,
    both contiguous, one shape and dtype; `better` a CPU flag per row of v)?"""
    return (v.device.type == "cpu" and p.device.type == "cpu" and better.device.type == "cpu"
            and v.dtype in (torch.float32, torch.float64) and v.ndim >= 1
            and p.shape == v.shape and p.dtype == v.dtype and v.is_contiguous()
            and p.is_contiguous() and better.ndim == 1 and better.shape[0] == v.shape[0])


def _native_steps(domain: "RealDomain", v: torch.Tensor, g: torch.Tensor | None, size) -> bool:
    """...and step v in the same pass: a box domain with bounds shaped as v, a gradient shaped
    as v, and one finite step size for every element."""
    if g is None or domain.l2 is not None or domain.lo is None or domain.hi is None:
        return False
    if torch.is_tensor(size) or not isinstance(size, (int, float)) \
            or not abs(size) <= torch.finfo(v.dtype).max:
        return False
    return all(t.shape == v.shape and t.dtype == v.dtype and t.is_contiguous()
               and t.device == v.device for t in (g, domain.lo, domain.hi))


class _Best:
    """Best point per example: lowest objective; ties go to the larger violation."""

    def __init__(self) -> None:
        self.obj: torch.Tensor | None = None
        self.tie: torch.Tensor | None = None
        self.nan = False  # some best objective is NaN
        self.points: dict[str, torch.Tensor] = {}  # copies: updated in place
        # norm_inf(point - x0) of a stepped point, from the step's kernel (lower.SplitNormInf)
        self.known: dict[str, tuple] = {}

    def _first(self, points, obj, tie, copy: bool = True) -> None:
        """The first points are the best so far (copied, unless the caller copies them)."""
        self.obj, self.tie = obj.clone(), (tie.clone() if tie is not None else None)
        self.points = {k: v.detach().clone() for k, v in points.items()} if copy else {}
        self.nan = bool(torch.isnan(self.obj).any())

    def _better(self, obj: torch.Tensor, tie: torch.Tensor | None) -> torch.Tensor:
        """Bool [batch]: which examples improved; the best objective and tie updated."""
        kernel = native.better() if (
            obj.device.type == "cpu" and self.obj.device.type == "cpu" and obj.ndim == 1
            and obj.dtype == self.obj.dtype and obj.dtype in (torch.float32, torch.float64)
            and obj.shape == self.obj.shape and self.obj.is_contiguous()
            and (tie is None) == (self.tie is None)
            and (tie is None or all(t.shape == obj.shape and t.dtype == obj.dtype
                                    and t.device.type == "cpu" for t in (tie, self.tie))
                 and self.tie.is_contiguous())) else None
        if kernel is not None:  # one call, in place (self.obj and self.tie are our copies)
            better = kernel(obj, tie, self.obj, self.tie)
            if self.nan:
                self.nan = bool(torch.isnan(self.obj).any())
            return better
        better = obj < self.obj
        if self.nan:  # a NaN best is replaced by any number, and no update makes a new one
            better |= torch.isnan(self.obj) & ~torch.isnan(obj)
        if tie is not None:
            better |= (obj == self.obj) & (tie > self.tie)
        self.obj = torch.where(better, obj, self.obj)
        if tie is not None:
            self.tie = torch.where(better, tie, self.tie)
        if self.nan:
            self.nan = bool(torch.isnan(self.obj).any())
        return better

    def _keep(self, k: str, v: torch.Tensor, better: torch.Tensor) -> None:
        p = self.points[k]
        if p.shape == v.shape and p.dtype == v.dtype:
            _keep_rows_(p, better, v)
        else:
            m = better.reshape((-1,) + (1,) * (v.ndim - 1))
            self.points[k] = torch.where(m, v, p)

    def update(self, points: dict[str, torch.Tensor], obj: torch.Tensor, tie: torch.Tensor | None):
        self.update_and_step(points, obj, tie)

    def fusable(self, k: str, v: torch.Tensor, g, domain: "RealDomain", size, obj: torch.Tensor,
                fold: tuple) -> bool:
        """Can the step of point k fold its norm's gradient in itself (native keep_fold_step_):
        a box step the kernels take, kept natively, x0 shaped as the point, the norm per row?"""
        gn, b, norm, ties, first, ndims = fold
        v = v.detach()
        if native.keep_fold_step() is None or g is None or obj.ndim != 1 or v.ndim < 1 \
                or obj.device.type != "cpu" or v.device.type != "cpu" \
                or v.dtype not in (torch.float32, torch.float64) or not v.is_contiguous() \
                or obj.shape[0] != v.shape[0] or ndims != v.ndim - 1 \
                or not _native_steps(domain, v, g, size):
            return False
        p = self.points.get(k) if self.obj is not None else v
        return p is not None and p.shape == v.shape and p.dtype == v.dtype \
            and p.is_contiguous() and b.shape == v.shape and b.dtype == v.dtype \
            and b.device == v.device and b.is_contiguous() and norm.shape == (v.shape[0],) \
            and (gn is None or gn.shape == norm.shape)

    def update_and_step(self, points: dict[str, torch.Tensor], obj: torch.Tensor,
                        tie: torch.Tensor | None, grads=None, domains: dict | None = None,
                        sizes: dict | None = None, folds: dict | None = None
                        ) -> dict[str, torch.Tensor]:
        """Keep the improved rows of each point; given `grads` (PGD), then step each point in
        place (`RealDomain.step_`; a point without a gradient stays). Returns the points. On
        the CPU the native kernels keep (and step) in one pass over each point where they can.
        `folds`: per point `fusable` accepted, its norm's gradient to fold into its step (the
        norm of the stepped point is then kept in `known`)."""
        obj = obj.detach()
        tie = tie.detach() if tie is not None else None
        first = self.obj is None
        self.known = {}
        if first:
            # the first points are copied into the best ones by the step's kernel where it
            # steps them (every row "improved": one pass instead of a copy and three passes)
            self._first(points, obj, tie, copy=False)
            keep = native.keep_step() if grads is not None and obj.ndim == 1 else None
            better = torch.ones(obj.shape, dtype=torch.bool, device=obj.device) \
                if keep is not None or folds else None
        else:
            better = self._better(obj, tie)
            keep = native.keep_step() if better.ndim == 1 else None
        out = {}
        for i, (k, v) in enumerate(points.items()):
            v = v.detach()
            g = grads[i] if grads is not None else None
            fold = folds.get(k) if folds else None
            if fold is not None:  # checked by fusable: the kernel takes it
                gn, b, norm, ties, first_tie, ndims = fold
                if first:
                    self.points[k] = torch.empty_like(v)
                d = domains[k]
                m, c, f = native.keep_fold_step()(
                    v, self.points[k], better, g, d.lo, d.hi, float(sizes[k]), b,
                    None if gn is None else gn.detach(), norm, ties, first_tie)
                self.known[k] = (v, v._version, b, m, c, f, ndims)
                out[k] = v
                continue
            if first:
                if keep is not None and g is not None and _native_keeps(v, v, better) \
                        and _native_steps(domains[k], v, g, sizes[k]):
                    self.points[k] = torch.empty_like(v)
                    keep(v, self.points[k], better, g, domains[k].lo, domains[k].hi,
                         float(sizes[k]))
                    out[k] = v
                    continue
                self.points[k] = v.clone()
            elif keep is not None and _native_keeps(self.points[k], v, better):
                if g is not None and _native_steps(domains[k], v, g, sizes[k]):
                    keep(v, self.points[k], better, g, domains[k].lo, domains[k].hi,
                         float(sizes[k]))
                    out[k] = v
                    continue
                keep(v, self.points[k], better, None, None, None, 0.0)
            elif not first:
                self._keep(k, v, better)
            out[k] = domains[k].step_(v, g, sizes[k]) if g is not None else v
        return out

    def all_found(self) -> bool:
        return bool((self.obj <= 0).all())


def _evaluate(objective: Objective, points, batch: int):
    obj, tie = objective(points)
    if obj.ndim == 0:
        obj = obj.expand(batch)
    if tie is not None and tie.ndim == 0:
        tie = tie.expand(batch)
    return obj, tie


def _single_point(objective, domains, batch):
    """Every domain is one point (eps = 0): evaluate it once instead of searching."""
    if not all(d.is_point for d in domains.values()):
        return None
    best = _Best()
    x = {k: d.start() for k, d in domains.items()}
    with torch.no_grad():
        obj, tie = _evaluate(objective, x, batch)
    best.update(x, obj, tie)
    return best.points, best.obj


class Search:
    """Base class of search strategies. `run` returns (best points, objective at them); the
    objective may be None where a strategy does not evaluate its points (PGD(keep="last"))."""

    name = "search"

    def run(self, objective: Objective, domains: dict[str, RealDomain], batch: int,
            generator: torch.Generator | None = None):
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


@dataclass
class PGD(Search):
    """Projected gradient descent on the objective from a uniform random start in the domain.

    steps: gradient steps per restart; step_size: per-element step (default 2.5 * radius /
    steps); restarts: independent starts, the worst point per example is kept; early_stop:
    stop once every example has a point with objective 0 (a counterexample or witness),
    looked at every CHECK_EVERY steps and after each restart (one host sync each time).
    keep: "best" returns each example's best point of every one evaluated, the last one too
    (one more forward pass, which also gives the objective there); "last" returns the last
    iterate, as torchattacks' PGD and Madry et al.'s `use_best=False` do: no pass after the
    last step, so no objective (Found.objective stays empty), one start and no early stop.
    """

    steps: int = 50
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    early_stop: bool = True
    keep: str = "best"
    name = "pgd"
    # early stopping looks every this many steps (and after each restart), so the loop does
    # not wait for the device at every step (issue 11)
    CHECK_EVERY: ClassVar[int] = 10

    def __post_init__(self):
        if self.steps < 0 or self.restarts < 1:
            raise InputError(f"PGD needs steps >= 0 and restarts >= 1 (got {self.steps}, {self.restarts})")
        if self.restarts > 1 and not self.random_start:
            raise InputError("PGD restarts without a random start would repeat the same run: "
                             "use random_start=True or restarts=1")
        if self.keep not in ("best", "last"):
            raise InputError(f"PGD keeps the 'best' point or the 'last' iterate, not {self.keep!r}")
        if self.keep == "last" and (self.restarts > 1 or self.early_stop):
            raise InputError("PGD(keep='last') returns the last iterate without evaluating it, "
                             "so it cannot choose between restarts or see that every example is "
                             "found: use restarts=1 and early_stop=False, or keep='best'")

    def run(self, objective, domains, batch, generator=None):
        point = _single_point(objective, domains, batch)
        if point is not None:
            return point
        sizes = {k: (self.step_size if self.step_size is not None else d.default_step(max(self.steps, 1)))
                 for k, d in domains.items()}
        if self.keep == "last":
            return self._last_iterate(objective, domains, batch, generator, sizes), None
        best = _Best()
        ones = None  # the gradient of sum(obj) without a sum node per step
        for _ in range(self.restarts):
            x = self._start(domains, generator)
            fusable: dict[str, bool] = {}  # per point, asked once a restart (shapes stay)
            for step in range(self.steps):
                xs = {k: v.requires_grad_(True) for k, v in x.items()}
                folds = None
                # a norm_inf(x - x0) of a point comes back as a leaf of its own, its gradient
                # added into x's (lower.SplitNormInf: no full-size gradient of it): by the
                # step's kernel where it takes the point, which also takes the next step's norm
                with torch.enable_grad(), SplitNormInf(xs, best.known) as split:
                    obj, tie = _evaluate(objective, xs, batch)
                    if obj.requires_grad:
                        if ones is None or ones.shape != obj.shape or ones.dtype != obj.dtype:
                            ones = torch.ones(obj.shape, dtype=obj.dtype, device=obj.device)
                        norms = split.leaves()
                        grads = torch.autograd.grad((obj,), tuple(xs.values()) + norms, (ones,),
                                                    allow_unused=True)
                        if norms:
                            by_name = dict(zip(xs, grads))
                            folds = split.deferrable(grads[len(xs):])
                            for k, f in folds.items():
                                if k not in fusable:
                                    fusable[k] = best.fusable(k, xs[k], by_name[k], domains[k],
                                                              sizes[k], obj, f)
                            folds = {k: f for k, f in folds.items() if fusable[k]}
                            grads = list(split.fold(by_name, grads[len(xs):], ones, skip=folds)
                                         .values())
                    else:
                        grads = [None] * len(xs)
                # in place: the best points are copies (see _Best) and the graph is freed
                x = best.update_and_step(xs, obj, tie, grads, domains, sizes, folds)
                # asking "all found?" copies a flag to the host: only every CHECK_EVERY steps
                # (the stepped x is dropped: the best points are what is returned)
                if self.early_stop and (step + 1) % self.CHECK_EVERY == 0 and best.all_found():
                    return best.points, best.obj
            with torch.no_grad():
                obj, tie = _evaluate(objective, x, batch)
            best.update(x, obj, tie)
            if self.early_stop and best.all_found():
                break
        return best.points, best.obj

    def _start(self, domains, generator) -> dict:
        """A restart's first points: uniform in each domain, or its center."""
        return {k: (d.sample(generator) if self.random_start else d.start())
                for k, d in domains.items()}

    def _last_iterate(self, objective, domains, batch, generator, sizes) -> dict:
        """keep="last": the points after `steps` projected steps, none of them compared."""
        x = self._start(domains, generator)
        ones = None
        for _ in range(self.steps):
            xs = {k: v.requires_grad_(True) for k, v in x.items()}
            with torch.enable_grad():
                obj, _ = _evaluate(objective, xs, batch)
                if not obj.requires_grad:  # the objective does not depend on the points
                    return {k: v.detach() for k, v in xs.items()}
                if ones is None or ones.shape != obj.shape or ones.dtype != obj.dtype:
                    ones = torch.ones(obj.shape, dtype=obj.dtype, device=obj.device)
                grads = torch.autograd.grad((obj,), tuple(xs.values()), (ones,),
                                            allow_unused=True)
            # in place: the graph is freed, and nothing else holds the points
            x = {k: (domains[k].step_(v.detach(), g, sizes[k]) if g is not None else v.detach())
                 for (k, v), g in zip(xs.items(), grads)}
        return x

    def describe(self):
        step = "2.5*radius/steps" if self.step_size is None else f"{self.step_size:g}"
        start = "a uniform random start" if self.random_start else "the domain's center"
        return (f"PGD, {self.steps} gradient steps of {step} (signed in a box, normalised in an "
                f"L2 ball), {self.restarts} restart(s) from {start}, projected onto the domain "
                "after every step" + ("; the last iterate is kept" if self.keep == "last" else ""))


@dataclass
class FGSM(Search):
    """One signed-gradient step from the domain's center to its boundary (Goodfellow et al.)."""

    step_size: float | None = None
    random_start: bool = False  # start at a uniform random point instead of the center
    name = "fgsm"

    def run(self, objective, domains, batch, generator=None):
        best = _Best()
        x = {k: (d.sample(generator) if self.random_start else d.start()).requires_grad_(True)
             for k, d in domains.items()}
        with torch.enable_grad():
            obj, tie = _evaluate(objective, x, batch)
            grads = torch.autograd.grad(obj.sum(), list(x.values()), allow_unused=True) \
                if obj.requires_grad else [None] * len(x)
        best.update(x, obj, tie)
        new = {}
        for (k, v), g in zip(x.items(), grads):
            d = domains[k]
            if g is None:
                new[k] = v.detach()
                continue
            size = self.step_size
            if size is None:
                size = 2 * d.l2[1] if d.l2 is not None else (d.hi - d.lo)
            new[k] = d.step(v.detach(), g, size)
        with torch.no_grad():
            obj, tie = _evaluate(objective, new, batch)
        best.update(new, obj, tie)
        return best.points, best.obj

    def describe(self):
        start = "a uniform random point" if self.random_start else "the domain's center"
        return f"FGSM: one signed-gradient step from {start} to the domain's boundary"


@dataclass
class RandomSampling(Search):
    """`samples` uniform samples from the domain per example; the worst is kept."""

    samples: int = 100
    name = "random"

    def __post_init__(self):
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise InputError(f"random search needs samples >= 1 (a whole number), got "
                             f"{self.samples!r}")

    def run(self, objective, domains, batch, generator=None):
        point = _single_point(objective, domains, batch)
        if point is not None:
            return point
        best = _Best()
        with torch.no_grad():
            for _ in range(self.samples):
                x = {k: d.sample(generator) for k, d in domains.items()}
                obj, tie = _evaluate(objective, x, batch)
                best.update(x, obj, tie)
        return best.points, best.obj

    def describe(self):
        return f"uniform random sampling, {self.samples} samples per example"


@dataclass
class FixedPoints(Search):
    """Deterministic: try the given candidates ([batch, n, *shape] per variable), keep the worst.

    Candidates are projected onto the domain first, so the result always lies in it.
    """

    points: dict
    name = "points"

    def run(self, objective, domains, batch, generator=None):
        best = _Best()
        if not isinstance(self.points, dict) and len(domains) > 1:
            raise TypeError(f"this search covers {sorted(domains)} jointly: give "
                            f"FixedPoints({{name: candidates}}) with one entry each")
        pts = self.points if isinstance(self.points, dict) else {next(iter(domains)): self.points}
        missing = [k for k in domains if k not in pts]
        if missing:
            raise TypeError(f"FixedPoints has no candidates for {missing} (it has {sorted(pts)})")
        pts = {k: torch.as_tensor(pts[k]) for k in domains}
        counts = set()
        for k, p in pts.items():
            want = tuple(domains[k].shape)
            if p.ndim != len(want) + 1 or p.shape[0] != want[0] or tuple(p.shape[2:]) != want[1:]:
                raise ValueError(f"FixedPoints candidates for '{k}' should have shape "
                                 f"[batch, n, {', '.join(map(str, want[1:]))}] = "
                                 f"[{want[0]}, n, ...], got {list(p.shape)}")
            counts.add(p.shape[1])
        if len(counts) != 1:
            raise ValueError(f"FixedPoints gives different numbers of candidates per variable: "
                             f"{ {k: p.shape[1] for k, p in pts.items()} }")
        n = counts.pop()
        with torch.no_grad():
            for i in range(n):
                x = {k: domains[k].project(pts[k][:, i]) for k in domains}
                obj, tie = _evaluate(objective, x, batch)
                best.update(x, obj, tie)
        return best.points, best.obj

    def describe(self):
        return "fixed candidate points"


SEARCHES: Registry = Registry("search", error=InputError)
for _cls in (PGD, FGSM, RandomSampling, FixedPoints):
    SEARCHES.register(_cls.name, _cls)
STRATEGIES = SEARCHES  # the name this table had before it was a Registry


def register_search(name: str, cls: type[Search]) -> None:
    """Make `search=name` available: `cls(**options)` is a Search (a dataclass: its fields are
    the options)."""
    SEARCHES.register(name, cls)


def make_search(search: str | Search = "pgd", **options) -> Search:
    """A strategy from a name and options (steps=, step_size=, restarts=, samples=, points=)."""
    if isinstance(search, Search):
        if options:
            raise TypeError(f"options {sorted(options)} given with a Search object; set them on it")
        return search
    cls = SEARCHES.get(str(search))
    allowed = set(cls.__dataclass_fields__)
    if cls is FixedPoints and "points" not in options:
        raise TypeError("search='points' needs the candidates: points=tensor [batch, n, ...] "
                        "(or {name: tensor} for several variables)")
    bad = set(options) - allowed
    if bad:
        raise TypeError(f"search '{search}' takes no option(s) {sorted(bad)}; it takes {sorted(allowed)}")
    return cls(**options)


__all__ = ["PGD", "FGSM", "RandomSampling", "FixedPoints", "Search", "RealDomain", "make_search",
           "SEARCHES", "register_search"]
