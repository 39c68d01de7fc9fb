"""The speed-ups of the search loop give the same numbers as the plain code they replace.

Each fast path (the in-place PGD step, the in-place best-point update, the transpose for
`v[j]` under `forall j in classes`, the label mask of max_except, search() without the body's
evaluation) is compared here bit for bit with the computation it stands for.
"""
from __future__ import annotations

import torch
from torch import nn

from robustspec.compiler import PGD, compile_spec, get_logic
from robustspec.compiler.search import RealDomain, _Best, _keep_rows_

BITS = {torch.float32: torch.int32, torch.float64: torch.int64}


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and the same bits (NaN payloads aside: NaN matches NaN)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.contiguous(), b.contiguous()
    return bool(((a.view(BITS[a.dtype]) == b.view(BITS[b.dtype])) | (a.isnan() & b.isnan())).all())


def box(x0: torch.Tensor, eps: float) -> RealDomain:
    lo, hi = (x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1)
    return RealDomain(lo, hi, None, x0)


def test_in_place_step_is_the_plain_step_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x0 = torch.rand(6, 1, 5, 5, generator=g, dtype=dtype)
        d = box(x0, 0.1)
        for size in (0.01, 1 / 3, 2.5e-3, d.default_step(7), 0.0, 1e308, float("nan")):
            x = d.sample(g)
            grad = torch.randn(x.shape, generator=g, dtype=dtype)
            grad[0, 0, :2] = 0.0  # sign 0: the point stays
            grad[1, 0, 0, 0] = -0.0
            want = d.step(x.clone(), grad.clone(), size)
            got = d.step_(x.clone(), grad.clone(), size)
            assert bitwise_equal(got, want), (dtype, size)


def test_in_place_step_takes_expanded_gradients_and_leaves_them_alone():
    x0 = torch.rand(3, 4)
    d = box(x0, 0.2)
    x = d.sample(torch.Generator().manual_seed(1))
    grad = torch.tensor([1.0, -1.0, 0.0, 2.0]).expand(3, 4)  # stride 0: cannot be written
    want = d.step(x.clone(), grad, 0.05)
    got = d.step_(x.clone(), grad, 0.05)
    assert bitwise_equal(got, want)
    assert grad.tolist()[0] == [1.0, -1.0, 0.0, 2.0]


def test_row_keeping_is_torch_where_bit_for_bit():
    g = torch.Generator().manual_seed(2)
    for dtype in (torch.float32, torch.float64):
        dst = torch.randn(8, 2, 3, generator=g, dtype=dtype)
        src = torch.randn(8, 2, 3, generator=g, dtype=dtype)
        src[0, 0, 0], src[1, 1, 1], src[2, 0, 2] = float("nan"), -0.0, float("-inf")
        dst[3, 0, 0] = float("nan")
        better = torch.rand(8, generator=g) > 0.5
        better[:3] = True
        want = torch.where(better[:, None, None], src, dst)
        out = _keep_rows_(dst, better, src)
        assert out is dst and bitwise_equal(dst, want)


def test_row_keeping_copies_rows_as_torch_where_for_every_share_of_rows():
    """The CPU path copies only the rows kept (all of them at once, or none): the same bits
    as torch.where for none, one, some and all rows, a non-contiguous source included."""
    g = torch.Generator().manual_seed(5)
    for dtype in (torch.float32, torch.float64):
        for pattern in ("none", "one", "some", "all"):
            dst = torch.randn(6, 3, 2, generator=g, dtype=dtype)
            src = torch.randn(2, 3, 6, generator=g, dtype=dtype).permute(2, 1, 0)  # strided
            src[0, 0, 0], src[1, 1, 1] = float("nan"), -0.0
            better = {"none": torch.zeros(6, dtype=torch.bool),
                      "one": torch.arange(6) == 4,
                      "some": torch.rand(6, generator=g) > 0.5,
                      "all": torch.ones(6, dtype=torch.bool)}[pattern]
            want = torch.where(better[:, None, None], src, dst)
            out = _keep_rows_(dst, better, src)
            assert out is dst and bitwise_equal(dst, want), (dtype, pattern)


def test_best_points_keep_their_rule_with_nan_objectives():
    """Lower objective wins, ties go to the larger tie value, a NaN best is replaced by any
    number and never re-enters; the kept points are copies (the search moves its own)."""
    best = _Best()
    x = torch.zeros(4, 2)
    best.update({"x": x}, torch.tensor([1.0, float("nan"), 2.0, 0.0]), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    x += 1  # the search moves its point in place: the kept copy must not move
    assert best.points["x"].sum() == 0
    best.update({"x": x}, torch.tensor([1.0, 5.0, float("nan"), 0.0]), torch.tensor([1.0, 0.0, 0.0, 0.5]))
    assert best.points["x"][:, 0].tolist() == [1.0, 1.0, 0.0, 0.0]  # tie won, NaN replaced
    assert best.obj.tolist() == [1.0, 5.0, 2.0, 0.0] and not best.nan
    x += 1
    best.update({"x": x}, torch.tensor([float("nan"), float("nan"), 1.0, 0.0]), torch.zeros(4))
    assert best.points["x"][:, 0].tolist() == [1.0, 1.0, 2.0, 0.0]
    assert best.obj.tolist() == [1.0, 5.0, 1.0, 0.0]


PER_CLASS = """
network f : Tensor -> Tensor
param delta : Real = 0.5
property per_class(x0 : Tensor) =
  forall x . norm_inf(x - x0) <= 0.1 and 0 <= x <= 1 =>
    forall j in classes . abs(f(x)[j] - f(x0)[j]) <= delta
property shifted(x0 : Tensor) =
  forall x . norm_inf(x - x0) <= 0.1 and 0 <= x <= 1 =>
    forall j in range(3) . f(x)[j] - f(x)[j + 1] <= delta
"""


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def test_index_by_a_class_variable_is_the_gather_it_replaces():
    """f(x)[j] under `forall j in classes` (the transpose) against the same loss with the
    fast path disabled (j offset by 0 through `j + 0` is not a bare variable: gather)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4)
    x0 = torch.rand(16, 12, generator=torch.Generator().manual_seed(3))
    fast = compile_spec(PER_CLASS)["per_class"]
    slow = compile_spec(PER_CLASS.replace("f(x)[j] - f(x0)[j]", "f(x)[j + 0] - f(x0)[j + 0]"))["per_class"]
    out = []
    for prop in (fast, slow):
        model.zero_grad()
        loss = prop.loss(model, x0=x0, search=PGD(steps=5, step_size=0.02),
                         generator=torch.Generator().manual_seed(4), reduction="none")
        loss.sum().backward()
        found = prop.search(model, x0=x0, search=PGD(steps=5, step_size=0.02),
                            generator=torch.Generator().manual_seed(5))
        out.append([loss.detach(), found["x"], *_grads(model)])
    assert float(out[0][0].sum()) > 0  # violated somewhere: the gradients are not all zero
    assert all(bitwise_equal(a, b) for a, b in zip(*out))
    # a j whose values do not line up with v's (j + 1) still gathers, and range(3) < 4 outputs
    shifted = compile_spec(PER_CLASS)["shifted"]
    assert shifted.loss(model, x0=x0, search=PGD(steps=2)).ndim == 0


BOTH_DEPTHS = """
network f : Tensor -> Tensor
param delta : Real = 0.5
property both(x0 : Tensor, y : Label) =
  forall x . norm_inf(x - x0) <= 0.1 and 0 <= x <= 1 =>
    f(x)[y] >= -delta and forall j in classes . abs(f(x)[j] - f(x0)[j]) <= delta
"""


def test_a_network_outside_the_index_runs_once_for_every_depth(monkeypatch):
    """f(x) under `forall j` with x free of j runs at depth 0, shared with f(x) outside the
    quantifier: one network run per step where there were two. Against the run at the
    quantifier's depth (the hoisting turned off): where f(x) is only under the quantifier,
    the same bits throughout; where it is at both depths, the same losses and verdicts, and
    weight gradients equal up to rounding (f(x)'s two gradients are summed before one backward
    pass through the network instead of after two)."""
    from robustspec.compiler.lower import Lowering

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4)
    calls = []
    model[1].register_forward_pre_hook(lambda mod, inp: calls.append(inp[0].shape[0]))
    x0 = torch.rand(16, 12, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(4))

    def run(spec, name):
        prop = compile_spec(spec)[name]  # compiled afresh: the lowering decides then
        args = {"x0": x0, "y": y} if name == "both" else {"x0": x0}
        model.zero_grad()
        calls.clear()
        loss = prop.loss(model, **args, search=PGD(steps=3, step_size=0.02, early_stop=False),
                         generator=torch.Generator().manual_seed(5), reduction="none")
        loss.sum().backward()
        runs = len(calls)
        found = prop.search(model, **args, search=PGD(steps=3, step_size=0.02),
                            generator=torch.Generator().manual_seed(6))
        # seeded: the verdict's own search must start from the same points in both runs
        holds = prop.holds(model, **args, generator=torch.Generator().manual_seed(7)).float()
        return runs, [loss.detach(), found["x"], holds], _grads(model)
    hoisted = {k: run(spec, k) for spec, k in ((BOTH_DEPTHS, "both"), (PER_CLASS, "per_class"))}
    monkeypatch.setattr(Lowering, "_reads_index", lambda self, n: True)  # as before: per depth
    before = {k: run(spec, k) for spec, k in ((BOTH_DEPTHS, "both"), (PER_CLASS, "per_class"))}
    for k in hoisted:
        assert float(hoisted[k][1][0].sum()) > 0  # violated: the gradients are not all zero
        assert all(bitwise_equal(a, b) for a, b in zip(hoisted[k][1], before[k][1])), k
    assert all(bitwise_equal(a, b) for a, b in zip(hoisted["per_class"][2], before["per_class"][2]))
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6)
               for a, b in zip(hoisted["both"][2], before["both"][2]))
    # f(x) once instead of twice at each of the 3 steps, at the search's last point and in
    # the loss at the point found
    assert before["both"][0] - hoisted["both"][0] == 3 + 1 + 1
    assert before["per_class"][0] == hoisted["per_class"][0]


def test_search_of_one_quantifier_returns_the_points_of_the_full_walk():
    """search() no longer evaluates the body of a lone quantifier at its points: the points
    and objectives are those of walking the formula (the quantifier's handler)."""
    sr = compile_spec("specs/standard_robustness.spec")["sr"]
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    x0, y = torch.rand(10, 12), torch.zeros(10, dtype=torch.long)
    fast = sr.search(model, x0=x0, y=y, params={"delta": 0.05}, search=PGD(steps=4),
                     generator=torch.Generator().manual_seed(6))
    from robustspec.compiler.property import Found
    from robustspec.compiler.quantifiers import eval_mode

    walked = Found({})
    ctx = sr._bind(model, None, {"x0": x0, "y": y}, {"delta": 0.05})
    ctx.quant = sr._search_handler(get_logic("dl2"), PGD(steps=4), torch.Generator().manual_seed(6),
                                   record=walked, body_logic=None)
    with torch.no_grad(), eval_mode(ctx.nets):
        sr._check(ctx)
    assert float((fast.objective["x"] <= 0).float().mean()) not in (0.0, 1.0)  # found some, not all
    assert bitwise_equal(fast["x"], walked["x"])
    assert bitwise_equal(fast.objective["x"], walked.objective["x"])


def test_empty_domain_test_is_lo_above_hi_for_every_pair_of_special_values():
    """empty() reads the widths (hi - lo < 0, NaN widths not), not lo > hi: the same answer
    for zeros of both signs, subnormals, huge values, infinities and NaN, in every float."""
    import itertools

    vals = [0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45, 3e38, -3e38, float("inf"), float("-inf"),
            float("nan"), 0.5]
    pairs = list(itertools.product(vals, vals))
    lo = torch.tensor([p[0] for p in pairs]).reshape(-1, 1)
    hi = torch.tensor([p[1] for p in pairs]).reshape(-1, 1)
    for dtype in (torch.float16, torch.float32, torch.float64):
        a, b = lo.to(dtype), hi.to(dtype)
        assert torch.equal(RealDomain(a, b, None, None).empty(), (a > b).any(1)), dtype
    a = torch.tensor([[0.0, float("nan")], [1.0, float("nan")], [float("inf"), 0.0]])
    b = torch.tensor([[0.5, 0.0], [0.0, 1.0], [float("inf"), -1.0]])
    assert RealDomain(a, b, None, None).empty().tolist() == [False, True, True]


def test_non_finite_inputs_are_refused_and_huge_finite_ones_are_not():
    """The finite-input check sums first: an inf or NaN is still found (with its example),
    and values whose sum overflows are still accepted."""
    import pytest

    from robustspec.dsl.errors import InputError

    sr = compile_spec("specs/standard_robustness.spec")["sr"]
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(3, 4)
    x[1, 2] = float("inf")
    with pytest.raises(InputError, match="example 1 of 3"):
        sr.loss(model, x0=x, y=torch.zeros(3, dtype=torch.long))
    x[1, 2] = float("nan")
    with pytest.raises(InputError, match="example 1 of 3"):
        sr.loss(model, x0=x, y=torch.zeros(3, dtype=torch.long))
    big = torch.full((2, 4), 3e38)
    assert not torch.isfinite(big.sum())
    sr.loss(model, x0=big, y=torch.zeros(2, dtype=torch.long), search=PGD(steps=1))
