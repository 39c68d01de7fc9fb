"""The built-in logics: registry, exact operator tables, implications, and every logic with every
search and training regime."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from robustspec.compiler import compile_spec
from robustspec.compiler.logics import (BUILTIN_LOGICS, DL2, STL, Goedel, Logic, Lukasiewicz,
                                        Product, Yager, available_logics, get_logic,
                                        register_logic)
from robustspec.compiler.lower import TorchOps
from robustspec.compiler.search import FGSM, PGD, FixedPoints, RandomSampling
from robustspec.dsl.diagnostics import SpecError

T = TorchOps()
SPECS = Path(__file__).resolve().parent.parent / "specs"
D = torch.float64


def t(*xs):
    return torch.tensor(xs, dtype=D)


# ---------------------------------------------------------------- registry
def test_builtins_are_registered_by_name():
    assert set(BUILTIN_LOGICS) <= set(available_logics())
    kinds = {name: get_logic(name).kind for name in BUILTIN_LOGICS}
    assert kinds == {"dl2": "loss", "goedel": "truth", "lukasiewicz": "truth", "product": "truth",
                     "yager": "truth", "stl": "robustness"}
    assert isinstance(get_logic("godel"), Goedel) and isinstance(get_logic("Reichenbach"), Product)


def test_one_instance_per_name_and_options_so_properties_compile_once():
    assert get_logic("goedel") is get_logic("goedel")
    assert get_logic("yager", p=3) is get_logic("yager:p=3") is get_logic("yager(p=3)")
    assert get_logic("yager", p=3) is not get_logic("yager")
    prop = compile_spec("property p(a : Real, b : Real) = a <= b")["p"]
    for _ in range(3):
        prop.loss(None, a=t(1.0), b=t(0.0), logic="goedel")
    assert len(prop._loss_fns) == 1


def test_options_in_the_name():
    assert get_logic("yager:p=3").p == 3.0
    assert get_logic("stl(nu=0.5, xi=2)").options() == {"nu": 0.5, "xi": 2.0}


def test_unknown_logic_suggests_the_right_name():
    with pytest.raises(SpecError) as e:
        get_logic("godle")
    text = e.value.render()
    assert "unknown logic 'godle'" in text and "did you mean 'goedel'?" in text
    assert "available: dl2, goedel, lukasiewicz, product, stl, yager" in text


@pytest.mark.parametrize("name, message", [
    ("yager:q=3", "has no option 'q'"),
    ("yager:p=0.5", "p >= 1"),
    ("stl:nu=0", "nu > 0"),
    ("goedel:xi=0", "xi > 0"),
    ("yager:p=abc", "not a number"),
    ("yager:p=inf", "must be finite"),
    ("dl2:xi=nan", "must be finite"),
    ("yager:p=3,p=4", "given twice"),
    ("yager(p=3", "cannot read the logic"),
    ("yager p=3", "cannot read the logic"),
])
def test_bad_options_are_user_errors(name, message):
    with pytest.raises(SpecError) as e:
        get_logic(name)
    assert message in e.value.render()


class Hinge(Logic):
    """A user's logic: losses, conjunction = max, disjunction = min."""

    name = "hinge"
    kind = "loss"
    claims = frozenset({"sound", "complete", "commutative", "associative"})

    def cmp(self, T, op, a, b):
        return DL2().cmp(T, op, a, b)

    def and_(self, T, xs):
        out = xs[0]
        for x in xs[1:]:
            out = T.maximum(out, x)
        return out

    def or_(self, T, xs):
        out = xs[0]
        for x in xs[1:]:
            out = T.minimum(out, x)
        return out

    def forall(self, T, v, dim):
        return T.amax(v, dim)

    def exists(self, T, v, dim):
        return T.amin(v, dim)

    def true(self, T):
        return T.const(0.0)

    def false(self, T):
        return T.const(1.0)


def test_register_a_logic_from_python_without_touching_the_compiler():
    register_logic("hinge", Hinge)
    try:
        prop = compile_spec("property p(a : Real, b : Real, c : Real) = a <= b and c <= b")["p"]
        loss = prop.loss(None, a=t(1.0, 0.0), b=t(0.0, 0.0), c=t(3.0, 0.0), logic="hinge",
                         reduction="none")
        assert loss.tolist() == [3.0, 0.0]
        assert "hinge" in available_logics()
        register_logic("hinge", Hinge())  # an instance works too
        assert isinstance(get_logic("hinge"), Hinge)
        from robustspec.compiler.explain import explain
        assert "Max(" in explain(prop, logic="hinge")
    finally:
        from robustspec.compiler.logics import _REGISTRY
        _REGISTRY.pop("hinge", None)


def test_infinite_options_given_from_python_are_refused():
    for make in (lambda: DL2(xi=math.inf), lambda: STL(nu=math.inf), lambda: Yager(p=math.inf)):
        with pytest.raises(ValueError, match="finite"):
            make()


class SquaredHinge(Hinge):
    """A user logic overriding to_loss with the backend it is handed (the docs' promise)."""

    def to_loss(self, T, v):
        return T.relu(v) * T.relu(v)


def test_a_registered_logic_gets_the_backend_in_to_loss_and_beats_an_alias():
    register_logic("sqhinge", SquaredHinge)
    register_logic("godel", Hinge)  # an alias of goedel until a user takes the name
    try:
        sr = compile_spec(SPECS / "standard_robustness.spec", params={"delta": 0.01})["sr"]
        x0, y = torch.full((2, 4), 0.5), torch.tensor([0, 1])
        loss = sr.loss(lambda x: x, x0=x0, y=y, logic="sqhinge", steps=5)
        assert loss > 0 and torch.isfinite(loss)
        assert isinstance(get_logic("godel"), Hinge) and isinstance(get_logic("goedel"), Goedel)
    finally:
        from robustspec.compiler.logics import _REGISTRY
        _REGISTRY.pop("sqhinge", None)
        _REGISTRY.pop("godel", None)
    assert isinstance(get_logic("godel"), Goedel)


def test_register_rejects_what_is_not_a_logic():
    with pytest.raises(TypeError):
        register_logic("nothing", 42)
    with pytest.raises(ValueError):
        register_logic("two words", Hinge)


# ---------------------------------------------------------------- atoms
ATOMS = [("<=", 1.0, 0.5, False), ("<=", 0.5, 0.5, True), ("<", 0.5, 0.5, False),
         ("<", 0.25, 0.5, True), (">=", 0.5, 1.0, False), (">", 0.5, 0.5, False),
         ("==", 0.5, 0.5, True), ("==", 0.5, 0.75, False), ("!=", 0.5, 0.5, False),
         ("!=", 0.5, 0.75, True)]


@pytest.mark.parametrize("name", BUILTIN_LOGICS)
@pytest.mark.parametrize("op, a, b, holds", ATOMS)
def test_atoms_read_as_satisfied_exactly_when_they_hold(name, op, a, b, holds):
    lg = get_logic(name)
    v = lg.cmp(T, op, t(a), t(b))
    assert bool(lg.satisfied(v)) == holds
    lo, hi = lg.value_range
    assert lo <= float(v) <= hi


def test_fuzzy_atom_translation_is_one_over_one_plus_violation():
    for name in ("goedel", "lukasiewicz", "product", "yager"):
        lg = get_logic(name)
        assert float(lg.cmp(T, "<=", t(1.5), t(0.5))) == pytest.approx(0.5)
        assert float(lg.cmp(T, "<", t(0.5), t(0.5))) == pytest.approx(0.5)  # xi = 1 at equality
        assert float(lg.cmp(T, "==", t(0.0), t(3.0))) == pytest.approx(0.25)


def test_stl_atoms_are_signed_distances():
    lg = get_logic("stl")
    assert float(lg.cmp(T, "<=", t(1.0), t(3.0))) == 2.0
    assert float(lg.cmp(T, ">=", t(1.0), t(3.0))) == -2.0
    assert float(lg.cmp(T, "<", t(3.0), t(3.0))) == -1.0
    assert float(lg.cmp(T, "==", t(1.0), t(3.0))) == -2.0


# ---------------------------------------------------------------- connectives
def test_connective_tables():
    x, y = t(0.25), t(0.5)
    assert float(get_logic("goedel").and_(T, [x, y])) == 0.25
    assert float(get_logic("goedel").or_(T, [x, y])) == 0.5
    assert float(get_logic("product").and_(T, [x, y])) == 0.125
    assert float(get_logic("product").or_(T, [x, y])) == 0.625
    assert float(get_logic("lukasiewicz").and_(T, [x, y])) == 0.0
    assert float(get_logic("lukasiewicz").or_(T, [x, y])) == 0.75
    assert float(get_logic("lukasiewicz").or_(T, [y, y, y])) == 1.0
    assert float(get_logic("yager", p=2).or_(T, [x, y])) == pytest.approx(math.sqrt(0.3125))
    assert float(get_logic("yager", p=2).and_(T, [t(0.9), t(0.8)])) == \
        pytest.approx(1 - math.sqrt(0.01 + 0.04))
    stl = get_logic("stl", nu=0.5)
    assert float(stl.and_(T, [t(1.0), t(2.0)])) == pytest.approx(-0.5 * math.log(math.exp(-2) + math.exp(-4)))
    assert float(stl.or_(T, [t(1.0), t(2.0)])) == pytest.approx(0.5 * math.log((math.exp(2) + math.exp(4)) / 2))
    assert float(stl.or_(T, [t(-1.0)])) == -1.0


def test_yager_p1_is_lukasiewicz():
    y, l = get_logic("yager", p=1), get_logic("lukasiewicz")
    for xs in ([0.25, 0.5], [0.9, 0.8, 0.7], [0.0, 1.0]):
        assert float(y.and_(T, [t(x) for x in xs])) == pytest.approx(float(l.and_(T, [t(x) for x in xs])))
        assert float(y.or_(T, [t(x) for x in xs])) == pytest.approx(float(l.or_(T, [t(x) for x in xs])))


def _truth(name, text, **args):
    from robustspec.compiler.testing import formula_values
    prop = compile_spec(text)["p"]
    return formula_values(prop, name, {k: t(*v) for k, v in args.items()})


IMPL = "property p(a : Real, b : Real, c : Real) = a <= b => c <= b"


@pytest.mark.parametrize("name, implication", [
    ("goedel", lambda s, u: max(1 - s, u)),                      # Kleene-Dienes
    ("product", lambda s, u: 1 - s + s * u),                      # Reichenbach
    ("lukasiewicz", lambda s, u: min(1.0, 1 - s + u)),            # Lukasiewicz
    ("yager", lambda s, u: min(1.0, ((1 - s) ** 2 + u ** 2) ** 0.5)),  # Yager S-implication
])
def test_implication_is_the_s_implication_of_the_disjunction(name, implication):
    """A => B is (not A) or B with `not` pushed into the atom: I(s, u) = S(1 - s, u) where
    1 - s is the truth of the negated atom (a > b), not 1 minus the truth of a <= b."""
    a, b, c = [0.5, 0.0, 0.5, 0.0], [0.25, 0.0, 0.0, 0.5], [1.0, 2.0, 0.0, 1.0]
    got = _truth(name, IMPL, a=a, b=b, c=c)
    for i in range(4):
        negated = 1 / (1 + max(b[i] - a[i], 0) + (a[i] == b[i]))  # truth of a > b
        u = 1 / (1 + max(c[i] - b[i], 0))
        assert float(got[i]) == pytest.approx(implication(1 - negated, u))


def test_finite_quantifier_equals_the_connective_for_every_logic():
    text = "property p(v : Tensor[3], a : Real) = forall j in range(3) . v[j] <= a"
    text2 = "property p(v : Tensor[3], a : Real) = v[0] <= a and v[1] <= a and v[2] <= a"
    args = {"v": torch.tensor([[0.5, 1.0, -1.0], [0.0, 0.25, 3.0]], dtype=D), "a": t(0.25, 0.0)}
    from robustspec.compiler.testing import formula_values
    for name in BUILTIN_LOGICS:
        p1, p2 = compile_spec(text)["p"], compile_spec(text2)["p"]
        assert torch.allclose(formula_values(p1, name, args), formula_values(p2, name, args))


def test_true_and_false():
    for name in BUILTIN_LOGICS:
        lg = get_logic(name)
        assert bool(lg.satisfied(lg.true(T))) and not bool(lg.satisfied(lg.false(T)))
        assert float(lg.to_loss(None, lg.true(T))) == 0.0


def test_yager_gradient_is_finite_when_everything_holds():
    lg = get_logic("yager", p=3)
    xs = [torch.tensor([1.0], dtype=D, requires_grad=True) for _ in range(3)]
    for v in (lg.and_(T, xs), lg.or_(T, xs)):
        g = torch.autograd.grad(v.sum(), xs, allow_unused=True)
        assert all(gi is None or torch.isfinite(gi).all() for gi in g)


@pytest.mark.parametrize("text, want", [
    ("(forall j in range(3) . true) or (a <= b)", math.inf),
    ("(exists j in range(3) . false) and (a <= b)", -math.inf),
    ("(exists j in range(3) . false) or (exists k in range(3) . false)", -math.inf),
])
def test_stl_with_true_or_false_operands_is_infinite_not_nan(text, want):
    """STL's true and false are +-inf; the stability shift of the softmin must not make nan."""
    value = _truth("stl", f"property p(a : Real, b : Real) = {text}", a=(1.0, -1.0), b=(0.0, 0.0))
    assert value.tolist() == [want, want]


def test_stl_gradient_stays_finite_next_to_a_true_operand():
    p = compile_spec("property p(a : Real, b : Real) = (exists j in range(2) . false) or a <= b")["p"]
    a = t(1.0, -1.0).requires_grad_(True)
    p.loss(None, a=a, b=t(0.0, 0.0), logic="stl").backward()
    assert torch.isfinite(a.grad).all() and a.grad[0] > 0


@pytest.mark.parametrize("p", [2, 10, 40, 100, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_yager_is_exact_for_large_p(p, dtype):
    """`a <= b and c <= b` with truths 2/3 and 1: the Yager conjunction is 2/3 for every p
    (a p-norm of one non-zero term); taken naively, (1/3)^100 underflows and the loss is 0."""
    prop = compile_spec("property q(a : Real, b : Real, c : Real) = a <= b and c <= b")["q"]
    a = torch.tensor([0.5], dtype=dtype, requires_grad=True)
    loss = prop.loss(None, a=a, b=torch.zeros(1, dtype=dtype), c=-torch.ones(1, dtype=dtype),
                     logic=f"yager:p={p}")
    loss.backward()
    assert loss.item() == pytest.approx(1 / 3, rel=1e-5)
    assert float(a.grad) == pytest.approx(4 / 9, rel=1e-4)  # d(1 - 1/(1 + a))/da at a = 1/2


@pytest.mark.parametrize("name", BUILTIN_LOGICS)
def test_labels_and_indices_compare_crisply(name):
    """CR's margin form: the loss must not depend on how far apart the class numbers are."""
    prop = compile_spec("network f : Tensor -> Tensor[3]\nproperty m(x0 : Tensor, y : Label) = "
                        "forall j in classes . j != y => f(x0)[y] > f(x0)[j]")["m"]
    x0 = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 5.0], [5.0, 0.0, 0.0]])
    loss = prop.loss(lambda x: x, x0=x0, y=torch.tensor([1, 0, 2]), logic=name, reduction="none")
    # example 0 (y=1) and 1 (y=0) are the same situation with the labels renamed; example 2 too
    assert loss[0] == loss[1] == loss[2] > 0


def test_stl_is_stable_for_large_values():
    lg = get_logic("stl", nu=0.01)
    v = lg.and_(T, [t(100.0), t(200.0)])
    assert torch.isfinite(v) and float(v) == pytest.approx(100.0)
    w = lg.exists(T, torch.tensor([[300.0, -300.0]], dtype=D), -1)
    assert float(w) == pytest.approx(300 - 0.01 * math.log(2))


# ---------------------------------------------------------------- every search, every regime
class Net(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x).clamp(-100, 100)


SEARCHES = {"pgd": lambda: PGD(steps=3, step_size=0.05),
            "fgsm": lambda: FGSM(),
            "random": lambda: RandomSampling(samples=4),
            "points": lambda: FixedPoints({"x": torch.rand(7, 2, 4, generator=torch.Generator().manual_seed(1))})}
PROPS = [("standard_robustness.spec", "sr", {"delta": 0.05}),
         ("strong_classification_robustness.spec", "scr", {}),
         ("lipschitz_robustness.spec", "lr", {"L": 0.5}),
         ("classification_robustness.spec", "cr_margin", {})]


@pytest.mark.parametrize("name", BUILTIN_LOGICS)
@pytest.mark.parametrize("search", list(SEARCHES))
def test_every_logic_with_every_search(name, search):
    model = Net()
    x = torch.rand(7, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(7) % 3
    for file, prop_name, params in PROPS:
        prop = compile_spec(SPECS / file, params=params)[prop_name]
        gen = torch.Generator().manual_seed(0)
        loss = prop.loss(model, x0=x, y=y, logic=name, search=SEARCHES[search](), generator=gen,
                         reduction="none")
        assert loss.shape == (7,) and torch.isfinite(loss).all() and (loss >= 0).all()
        loss.mean().backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        model.zero_grad()
        found = prop.search(model, x0=x, y=y, logic=name, search=SEARCHES[search](),
                            generator=torch.Generator().manual_seed(0))
        assert (found["x"] - x).abs().max() <= prop.params["eps"] + 1e-6


@pytest.mark.parametrize("name", BUILTIN_LOGICS)
def test_every_logic_with_every_training_regime(name, tmp_path):
    training = pytest.importorskip("robustspec.runtime.training")
    x = torch.rand(16, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 3
    prop = compile_spec(SPECS / "standard_robustness.spec", params={"delta": 0.05})["sr"]
    for regime in training.REGIMES:
        model = Net()
        before = [p.detach().clone() for p in model.parameters()]
        history = training.train(model, x, y, regime, prop=prop, logic=name, epochs=1,
                                 batch_size=8, search_steps=2, lr=1e-2, progress=False)
        assert len(history) == 1 and math.isfinite(history[0]["loss"])
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_the_constraint_loss_trains_under_every_logic():
    """A few steps on the violated constraint lower its loss, whichever logic."""
    x = torch.rand(8, 4, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(8, dtype=torch.long)
    prop = compile_spec(SPECS / "strong_classification_robustness.spec", params={"eta": 0.9})["scr"]
    for name in BUILTIN_LOGICS:
        model = Net(1)
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        first = None
        for _ in range(8):
            loss = prop.loss(model, x0=x, y=y, logic=name, search=PGD(steps=2, step_size=0.05),
                             generator=torch.Generator().manual_seed(0))
            first = float(loss.detach()) if first is None else first
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert float(loss.detach()) < first, name


# ---------------------------------------------------------------- explain and the CLI
@pytest.mark.parametrize("name", BUILTIN_LOGICS)
def test_explain_every_spec_under_every_logic(name):
    from robustspec.compiler.explain import explain
    for path in sorted(SPECS.glob("*.spec")):
        spec = compile_spec(path)
        for prop in spec:
            text = explain(spec[prop], logic=name, latex=True)
            assert f"loss under {name}" in text


def test_cli_explain_with_a_logic_and_latex(capsys):
    from robustspec.runtime.cli import main
    assert main(["explain", str(SPECS / "standard_robustness.spec"), "--logic", "goedel",
                 "--latex"]) == 0
    out = capsys.readouterr().out
    assert "loss under goedel" in out and "LaTeX: " in out and r"\frac{1}" in out
    assert main(["explain", str(SPECS / "standard_robustness.spec"), "--logic", "yager:p=3"]) == 0


def test_cli_logic_typo_says_did_you_mean(capsys):
    from robustspec.runtime.cli import main
    assert main(["explain", str(SPECS / "standard_robustness.spec"), "--logic", "lukasievicz"]) == 2
    assert "did you mean 'lukasiewicz'?" in capsys.readouterr().err


def test_describe_and_repr():
    assert repr(get_logic("yager", p=3)) == "<logic yager p=3 xi=1>"
    assert get_logic("stl").describe().startswith("stl(nu=1, xi=1): values in (-inf, inf)")
    for cls in (DL2, Goedel, Lukasiewicz, Product, Yager, STL):
        # the claim names the kit knows (the Boolean laws joined them in issue 7)
        assert cls.claims <= {"sound", "complete", "commutative", "associative", "shadow_lifting",
                              "idempotent", "identity", "absorbing"}
