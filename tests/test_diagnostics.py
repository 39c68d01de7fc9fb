"""Diagnostics: golden files of the exact rendered messages, and the shape every message has.

Each tests/golden/errors/NAME.spec is compiled (from that directory, with a relative path, so
the file names in the messages are stable) and the rendered text compared with NAME.expected:

  * NAME.spec that fails to compile: `str(SpecError)`;
  * loss_*.spec: compiles; `.loss` of every property is called on a tiny model and the
    rendered errors of those that cannot be lowered are expected;
  * warn_*.spec: compiles; the rendered warnings are expected.

Regenerate the .expected files with `UPDATE_GOLDEN=1 pytest tests/test_diagnostics.py`
(then read the diff: a golden file is only worth keeping when the message is good).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from robustspec.compiler import compile_spec
from robustspec.dsl import SpecError, parse

GOLDEN = Path(__file__).parent / "golden" / "errors"
CASES = sorted(p.name for p in GOLDEN.glob("*.spec"))
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

HEAD = re.compile(r"^(?P<file>[^\s:]+\.spec):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning): \S")
SOURCE = re.compile(r"^ *(?P<line>\d+) \| ")
CARET = re.compile(r"^ +\| (?P<pad> *)(?P<carets>\^+)$")


def _args_for(prop, batch: int = 7, n_in: int = 4, n_out: int = 3):
    g = torch.Generator().manual_seed(0)
    args = {}
    for name, ty in prop.args:
        if ty.kind == "int":
            args[name] = torch.randint(0, n_out, (batch,), generator=g)
        else:
            args[name] = torch.rand(batch, n_in, generator=g)
    return args


def render_case(name: str) -> str:
    """What the user sees for one golden spec (paths relative to the golden directory)."""
    if name.startswith("warn_"):
        spec = compile_spec(name)
        assert spec.warnings, f"{name}: expected warnings"
        return "\n\n".join(w.render() for w in spec.warnings)
    if name.startswith("loss_"):
        spec = compile_spec(name)
        model = torch.nn.Linear(4, 3)
        out = []
        for pname in spec:
            prop = spec[pname]
            try:
                prop.loss(model, **_args_for(prop), steps=2)
            except SpecError as e:
                out.append(str(e))
        assert out, f"{name}: expected a property that cannot be lowered to a loss"
        return "\n\n".join(out)
    with pytest.raises(SpecError) as info:
        compile_spec(name)
    return str(info.value)


def errors_of(name: str) -> list:
    if name.startswith("loss_"):
        spec = compile_spec(name)
        diags = []
        for pname in spec:
            prop = spec[pname]
            try:
                prop.loss(torch.nn.Linear(4, 3), **_args_for(prop), steps=2)
            except SpecError as e:
                diags += e.diagnostics
        return diags
    if name.startswith("warn_"):
        return list(compile_spec(name).warnings)
    with pytest.raises(SpecError) as info:
        compile_spec(name)
    return info.value.diagnostics


@pytest.fixture
def in_golden(monkeypatch):
    monkeypatch.chdir(GOLDEN)


@pytest.mark.parametrize("name", CASES)
def test_golden(name, in_golden):
    got = render_case(name)
    expected_path = GOLDEN / (name[:-5] + ".expected")
    if UPDATE:  # rewriting is not testing: say so instead of comparing with what was just written
        old = expected_path.read_text(encoding="utf-8") if expected_path.exists() else None
        expected_path.write_text(got + "\n", encoding="utf-8")
        pytest.skip(f"{expected_path.name} {'unchanged' if old == got + chr(10) else 'REWRITTEN'}"
                    " (UPDATE_GOLDEN=1): read the diff")
    assert expected_path.exists(), f"missing {expected_path.name}: run with UPDATE_GOLDEN=1"
    assert got + "\n" == expected_path.read_text(encoding="utf-8")


def test_every_golden_spec_has_an_expected_file():
    specs = {p.stem for p in GOLDEN.glob("*.spec")}
    expected = {p.stem for p in GOLDEN.glob("*.expected")}
    assert specs == expected


def test_at_least_15_distinct_diagnostics(in_golden):
    messages = set()
    for name in CASES:
        for d in errors_of(name):
            # the message up to the first quoted name identifies the kind of diagnostic
            messages.add(re.sub(r"'[^']*'|\d+(\.\d+)?|Tensor\[[^\]]*\]|Real|Label", "_", d.message))
    assert len(messages) >= 15, sorted(messages)


@pytest.mark.parametrize("name", CASES)
def test_every_diagnostic_has_location_caret_and_hint(name, in_golden):
    diags = errors_of(name)
    assert diags
    src_lines = (GOLDEN / name).read_text(encoding="utf-8").splitlines()
    for d in diags:
        lines = d.render().splitlines()
        head = HEAD.match(lines[0])
        assert head, lines[0]
        assert head["file"] == name
        line, col = int(head["line"]), int(head["col"])
        assert 1 <= line <= len(src_lines) + 1 and col >= 1
        # the source line is quoted, and a caret line underlines the span at its column
        src = SOURCE.match(lines[1])
        assert src and int(src["line"]) == line, lines[1]
        assert lines[1][src.end():] == (src_lines[line - 1] if line <= len(src_lines) else "")
        caret = CARET.match(lines[2])
        assert caret, lines[2]
        assert len(caret["pad"]) == col - 1
        assert any(ln.startswith("hint: ") and len(ln) > len("hint: ") + 3 for ln in lines[3:]), \
            d.render()


def test_several_errors_reported_at_once(in_golden):
    with pytest.raises(SpecError) as info:
        compile_spec("multiple_errors.spec")
    err = info.value
    errors = [d for d in err.diagnostics if d.severity == "error"]
    assert len(errors) >= 3
    assert str(err).endswith(f"\n\n{len(errors)} errors")
    # in source order, each on its own line
    lines = [d.span.line for d in errors]
    assert lines == sorted(lines) and len(set(lines)) == len(lines)
    for d in errors:
        assert d.render() in str(err)


def test_syntax_errors_stop_at_the_first_one(in_golden):
    with pytest.raises(SpecError) as info:
        compile_spec("syntax_missing_dot.spec")
    assert len(info.value.diagnostics) == 1
    assert not str(info.value).endswith("errors")


def test_no_warning_for_eta_above_half_but_one_for_an_override():
    path = Path(__file__).parents[1] / "specs" / "strong_classification_robustness.spec"
    assert compile_spec(path).warnings == []
    spec = compile_spec(path, params={"eta": 0.5})
    assert len(spec.warnings) == 1
    w = spec.warnings[0]
    assert w.severity == "warning" and "0.5" in w.message and w.hint
    assert "softmax(f(x))[y]" in w.render()


def test_error_in_a_spec_given_as_text_names_the_filename():
    with pytest.raises(SpecError) as info:
        compile_spec("network f : Tensor -> Tensor\nproperty p(x0 : Tensor) = f(x0) <= epz\n",
                     filename="inline.spec")
    assert str(info.value).startswith("inline.spec:2:36: error: unknown name 'epz'")
    with pytest.raises(SpecError) as info:
        compile_spec("property p(a : Real) = a <= b\n")
    assert str(info.value).startswith("<string>:1:29: error: unknown name 'b'")


def test_missing_spec_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="no such spec file") as info:
        compile_spec(tmp_path / "nope.spec")
    assert "hint:" in str(info.value)


def test_params_override_unknown_name_is_reported_with_did_you_mean(in_golden):
    with pytest.raises(SpecError) as info:
        compile_spec("warn_scr_eta.spec", params={"etta": 0.6})
    assert "unknown parameter 'etta'" in str(info.value)
    assert "did you mean 'eta'?" in str(info.value)


def test_unknown_logic_has_a_did_you_mean_hint():
    from robustspec.compiler import get_logic
    with pytest.raises(SpecError) as info:
        get_logic("dl3")
    assert str(info.value).startswith("error: unknown logic 'dl3'\nhint: did you mean 'dl2'? (available: dl2")


# ---------------------------------------------------------------- messages that are not good yet
@pytest.mark.parametrize("text", [
    "property p(a : Real) = a <= 1 1",
    "property p(a : Real) = a <= 1 1 <= 2",
])
def test_no_misleading_bracket_hint(text):
    with pytest.raises(SpecError) as info:
        parse(text, "t.spec")
    assert "'[' is not closed" not in str(info.value)


@pytest.mark.parametrize("text", [
    "property p(a : Real) = a <= 1 )",           # a stray ')'
    "property p(a : Real) a <= 1",               # missing '=' after the signature
    "property p(a : Real) = a <= $",             # an unknown character
    "property p(a : Real) = forall . a <= 1",    # quantifier without a variable
    "property p(a : Real) = a a <= 1",           # two terms in a row
])
def test_every_syntax_error_has_a_hint(text):
    with pytest.raises(SpecError) as info:
        parse(text, "t.spec")
    assert "\nhint: " in str(info.value)


def test_missing_dot_hint_after_a_typed_quantifier_variable():
    with pytest.raises(SpecError) as info:
        parse("c = forall x : Tensor[2] f(x) <= 1", "t.spec")
    assert "hint: a quantifier is written 'forall x . body'" in str(info.value)

