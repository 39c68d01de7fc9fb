"""The property-test kit (robustspec.compiler.testing), run on every built-in logic, and on
logics a user might write (broken ones included: the kit must catch them)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from robustspec.compiler import compile_spec
from robustspec.compiler.logics import BUILTIN_LOGICS, Goedel, Lukasiewicz, get_logic
from robustspec.compiler.testing import (CHECKS, check_associativity, check_commutativity,
                                         check_range, check_shadow_lifting, check_soundness,
                                         compiled, formulas, reference, render, rows,
                                         run_kit, run_kit_matrix, spec_text, to_args)

N = 25  # examples per check here; docs/logics.md is generated with 200

# what each built-in logic is expected to fail (everything else holds); the Boolean laws
# (idempotent, identity, absorbing) are checked on compiled formulas (issue 7, defect 1)
EXPECTED_FAILURES = {
    "dl2": {"idempotent", "absorbing"},
    "goedel": {"shadow_lifting"},
    "lukasiewicz": {"sound", "shadow_lifting", "idempotent"},
    "product": {"idempotent"},
    "yager": {"sound", "shadow_lifting", "idempotent"},
    "stl": {"complete", "associative", "idempotent", "identity"},
}


def test_the_exact_checker_is_a_logic_the_kit_tests():
    report = run_kit("boolean", max_examples=N, shrink=False,
                     checks=[c for c in CHECKS if c not in ("shadow_lifting", "search_sound")])
    assert not [r for r in report.results.values() if not r.holds], str(report)


@pytest.fixture(scope="module")
def reports():
    return {name: run_kit(name, max_examples=N, shrink=False) for name in BUILTIN_LOGICS}


@pytest.mark.parametrize("name", BUILTIN_LOGICS)
def test_every_claim_of_every_builtin_logic_holds(reports, name):
    report = reports[name]
    assert set(report.results) == set(CHECKS)
    assert not report.broken_claims, "\n".join(str(r) for r in report.broken_claims)


@pytest.mark.parametrize("name", BUILTIN_LOGICS)
def test_the_failures_are_the_expected_ones_with_counterexamples(reports, name):
    report = reports[name]
    failed = {c for c, r in report.results.items() if not r.holds and c != "search_sound"}
    assert failed == EXPECTED_FAILURES[name], str(report)
    for c in failed:
        assert report[c].counterexample and not report[c].claimed
    print(report)


def test_soundness_directions(reports):
    """DL2 both ways; Goedel and product sound (and complete); Lukasiewicz and Yager complete
    but not sound, with the counterexample shown; STL sound but not complete."""
    for name in ("dl2", "goedel", "product", "stl"):
        assert reports[name]["sound"].holds and reports[name]["sound"].claimed
    for name in ("dl2", "goedel", "product", "lukasiewicz", "yager"):
        assert reports[name]["complete"].holds and reports[name]["complete"].claimed
    for name in ("lukasiewicz", "yager"):
        r = reports[name]["sound"]
        assert not r.holds and "but the checker says false" in r.counterexample
        assert "truth 1 (loss 0)" in r.counterexample
        print(name, r.counterexample)
    assert "the checker says true but robustness" in reports["stl"]["complete"].counterexample


def test_counterexamples_are_shrunk_and_reproducible():
    a = check_soundness("lukasiewicz", max_examples=N, seed=3)
    assert "a=0, b=0, c=0" in a.counterexample  # shrunk towards 0
    b = check_shadow_lifting("goedel", max_examples=N, seed=3)
    assert b.counterexample == check_shadow_lifting("goedel", max_examples=N, seed=3).counterexample


def test_the_counterexample_is_real():
    """Re-run a reported counterexample through the public API: loss 0, checker false."""
    prop = compile_spec("property p(a : Real, b : Real) = a < b or b < a")["p"]
    a = b = torch.zeros(1)
    assert float(prop.loss(None, a=a, b=b, logic="lukasiewicz")) == 0.0
    assert not bool(prop.check(None, a=a, b=b).holds)
    assert float(prop.loss(None, a=a, b=b, logic="goedel")) > 0


# ---------------------------------------------------------------- logics a user writes
class LeakyGoedel(Goedel):
    """Claims soundness but uses the Lukasiewicz disjunction: the kit must catch it."""

    name = "leaky"
    or_ = Lukasiewicz.or_
    exists = Lukasiewicz.exists


class OrderedAnd(Goedel):
    """A non-commutative conjunction that claims commutativity."""

    name = "ordered"

    def and_(self, T, xs):
        out = xs[0]
        for x in xs[1:]:
            out = 0.5 * out + 0.5 * T.minimum(out, x)
        return out


class Crashing(Goedel):
    name = "crashing"

    def or_(self, T, xs):
        raise RuntimeError("or_ is not written yet")


def test_a_broken_claim_is_reported_as_such():
    r = check_soundness(LeakyGoedel(), max_examples=50, shrink=False)
    assert r.claimed and not r.holds and r.broken_claim
    assert r.cell().startswith("**fails")
    r = check_commutativity(OrderedAnd(), max_examples=50, shrink=False)
    assert r.broken_claim and "and[" in r.counterexample
    assert not check_associativity(OrderedAnd(), max_examples=50, shrink=False).holds


def test_a_crash_is_a_failure_with_the_error():
    r = check_range(Crashing(), max_examples=30, shrink=False)
    assert not r.holds and "RuntimeError: or_ is not written yet" in r.counterexample
    r = check_commutativity(Crashing(), max_examples=10, shrink=False)
    assert not r.holds and "RuntimeError" in r.counterexample


def test_unclaimed_checks_say_so():
    r = check_shadow_lifting("goedel", max_examples=N)
    assert not r.claimed and not r.holds
    assert r.cell().startswith("not claimed; fails: d and[")


def test_matrix_is_markdown_with_notes():
    text = run_kit_matrix(["dl2", "lukasiewicz"], max_examples=10,
                          checks=["range", "sound", "shadow_lifting"], shrink=False)
    lines = text.splitlines()
    assert lines[0] == "| logic | range | sound | shadow_lifting |"
    assert lines[2] == "| dl2 | holds | holds | holds |"
    assert lines[3].startswith("| lukasiewicz(xi=1) | holds | fails [1] (not claimed) |")
    assert any(line.startswith("1. lukasiewicz(xi=1), sound: `") for line in lines)


def test_unknown_check_name():
    with pytest.raises(ValueError, match="did you mean 'sound'"):
        run_kit("dl2", checks=["snd"])


def test_kit_options_of_a_logic_are_in_its_name():
    assert run_kit(get_logic("yager", p=3), max_examples=5, checks=["range"]).logic == "yager(p=3, xi=1)"


# ---------------------------------------------------------------- the strategies, in a user's @given
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(f=formulas(), rws=rows(3))
def test_strategies_give_well_typed_formulas_the_checker_agrees_with(f, rws):
    prop = compiled(spec_text(f))
    got = prop.check(None, **to_args(rws)).holds.tolist()
    assert got == [reference(f, r) for r in rws], render(f)


def test_render_is_fully_parenthesised():
    f = ("implies", ("forall", "j", ("cmp", "<=", ("elem", "j"), ("var", "a"))),
         ("vcmp", "!=", ("const", -0.5)))
    assert render(f) == "((forall j in range(3) . (v[j] <= a)) => (v != (-0.5)))"
