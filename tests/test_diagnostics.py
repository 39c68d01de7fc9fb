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



# ---------------------------------------------------------------- issue 8: hostile input
import math  # noqa: E402
import time  # noqa: E402

from robustspec.compiler import checker as _checker  # noqa: E402
from robustspec.dsl import parse_file  # noqa: E402

NET = "network f : Tensor -> Tensor[3]\n"


def _tiny(x):
    return x[..., :3]


def _runs(text: str) -> None:
    """What check accepts must compile and run: loss and holds on a tiny model."""
    spec = compile_spec(text)
    for name in spec:
        prop = spec[name]
        args = {a: (torch.randint(0, 3, (2,)) if ty.kind == "int" else torch.rand(2, 3))
                for a, ty in prop.args}
        assert prop.holds(_tiny, **args, steps=2).shape == (2,)
        assert torch.isfinite(prop.loss(_tiny, **args, steps=2))


def _error_at(text: str, line: int, col: int, message: str) -> str:
    with pytest.raises(SpecError) as info:
        compile_spec(text, filename="t.spec")
    first = info.value.diagnostics[0]
    rendered = first.render()
    assert rendered.startswith(f"t.spec:{line}:{col}: error: "), rendered
    assert message in first.message, rendered
    assert first.hint, rendered
    return rendered


@pytest.mark.parametrize("default, col, message", [
    ("inf", 17, "parameter 'n' must be a finite number, but its value is inf"),
    ("1e400", 17, "the number 1e400 is too large for a float"),
    ("9" * 400, 17, "the whole number 99999999999999999999... is too large to be exact"),
    ("1e308 * 10", 17, "must be a finite number, but its value is inf"),
    ("2.5", 17, "is Nat but its value is 2.5"),
])
def test_nat_parameter_values_that_cannot_be_a_whole_number(default, col, message):
    _error_at(NET + f"param n : Nat = {default}\nproperty p(x0 : Tensor) = f(x0)[0] <= n", 2, col,
              message)


@pytest.mark.parametrize("default, message", [
    ("inf - inf", "must be a finite number, but its value is nan"),
    ("1e400", "the number 1e400 is too large"),
    ("-inf", "must be a finite number, but its value is -inf"),
    ("1 / 0", "division by zero"),
    ("1e-400", "the number 1e-400 is too small for a float: it would be 0"),
])
def test_real_parameter_defaults_are_finite(default, message):
    _error_at(NET + f"param eps : Real = {default}\nproperty p(x0 : Tensor) = f(x0)[0] <= eps",
              2, 20, message)


@pytest.mark.parametrize("value, message", [
    (float("nan"), "parameter 'eps' must be a finite number, but params gives nan"),
    (float("inf"), "parameter 'eps' must be a finite number, but params gives inf"),
    (10 ** 400, "parameter 'eps' is too large: params gives an integer of about 401 digits"),
])
def test_parameter_overrides_are_finite(value, message):
    text = NET + "param eps : Real = 0.1\nproperty p(x0 : Tensor) = f(x0)[0] <= eps"
    with pytest.raises(SpecError) as info:
        compile_spec(text, params={"eps": value})
    assert message in str(info.value)
    spec, diags = __import__("robustspec.compiler", fromlist=["check_file"]).check_file(
        GOLDEN / "warn_scr_eta.spec", params={"eta": value})
    assert spec is None and "parameter 'eta'" in diags[0].message and diags[0].hint


def test_a_huge_nat_override_is_a_spec_error():
    text = NET + "param n : Nat = 1\nproperty p(x0 : Tensor) = f(x0)[0] <= n"
    with pytest.raises(SpecError, match="parameter 'n' is too large"):
        compile_spec(text, params={"n": 10 ** 400})
    with pytest.raises(SpecError, match="parameter 'n' must be a finite number"):
        compile_spec(text, params={"n": float("inf")})


def test_huge_literals_in_a_body_are_diagnosed_at_the_literal():
    _error_at(NET + "property p(x0 : Tensor) = f(x0)[" + "9" * 400 + "] <= 1", 2, 33,
              "is too large to be exact")
    # norm(v, 1e400) is no longer norm_inf in disguise
    _error_at(NET + "property p(x0 : Tensor) = norm(f(x0), 1e400) <= 1", 2, 39, "1e400 is too large")
    _error_at(NET + "property p(x0 : Tensor) = f(x0)[0] <= 1e400", 2, 39, "1e400 is too large")
    _runs(NET + "property p(x0 : Tensor) = norm(f(x0), inf) <= 9007199254740992")


def test_a_huge_tensor_dimension_is_a_diagnostic():
    with pytest.raises(SpecError) as info:
        parse("network f : Tensor[" + "9" * 5000 + "] -> Tensor", "t.spec")
    assert str(info.value).startswith("t.spec:1:20: error: the dimension 99999999999999999999... is too large")


@pytest.mark.parametrize("kind, make", [
    ("sum", lambda n: " + ".join(["x0[0]"] * n) + " <= 1"),
    ("implies", lambda n: " => ".join(["x0[0] <= 1"] * n)),
    ("not", lambda n: "not " * n + "x0[0] <= 1"),
    ("minus", lambda n: "-" * n + "x0[0] <= 1"),
    ("calls", lambda n: "abs(" * n + "x0[0]" + ")" * n + " <= 1"),
    ("and/or", lambda n: "".join(f"(x0[0] <= 1 {'and' if i % 2 else 'or'} " for i in range(n))
     + "x0[0] <= 1" + ")" * n),
    ("exists", lambda n: "".join(f"exists y{i} . norm_inf(y{i} - x0) <= 0.1 and " for i in range(n))
     + "f(x0)[0] <= 1"),
])
def test_deep_nesting_is_a_diagnostic_and_the_accepted_depth_runs(kind, make):
    body = lambda n: NET + "property p(x0 : Tensor) = " + make(n)  # noqa: E731
    with pytest.raises(SpecError) as info:
        compile_spec(body(500), filename="t.spec")
    d = info.value.diagnostics[0]
    assert d.span.line == 2 and d.hint and len(info.value.diagnostics) == 1, str(info.value)
    assert "nested more than" in d.message
    # the deepest accepted nesting compiles and runs: find it from below
    n = 1
    while True:
        try:
            compile_spec(body(n + 1))
        except SpecError:
            break
        n += 1
    assert n >= {"exists": 2}.get(kind, 20), n
    _runs(body(n))


def test_long_and_or_chains_and_comparison_chains_have_no_depth_limit():
    for op in ("and", "or"):
        _runs(NET + "property p(x0 : Tensor) = " + f" {op} ".join(["f(x0)[0] <= 1"] * 2000))
    _runs(NET + "property p(x0 : Tensor) = " + " <= ".join(["f(x0)[0]"] * 500))
    _runs(NET + "property p(x0 : Tensor) = " + "(" * 500 + "f(x0)[0]" + ")" * 500 + " <= 1")


def test_nesting_built_by_helpers_is_diagnosed_after_inlining():
    text = NET + "def h0(v) = v + 1\n" + "".join(
        f"def h{i}(v) = h{i - 1}(h{i - 1}(v))\n" for i in range(1, 9)) + \
        "property p(x0 : Tensor) = h8(f(x0)[0]) <= 1"
    with pytest.raises(SpecError, match="nested more than 100 levels deep once helpers are inlined"):
        compile_spec(text)
    _runs(text.replace("h8(f(x0)", "h6(f(x0)"))


@pytest.mark.parametrize("size, message", [("-1", "range(-1) has a negative size"),
                                           ("10000000000", "range(10000000000) is too large"),
                                           ("n", "range(-2) has a negative size")])
def test_range_sizes_are_checked(size, message):
    text = NET + "param n : Int = -2\nproperty p(x0 : Tensor) = forall j in range(" + size + \
        ") . f(x0)[0] <= 1"
    _error_at(text, 3, 45, message)


def test_the_largest_range_runs():
    _runs(NET + f"property p(x0 : Tensor) = forall j in range({_checker.MAX_INDEX_COMBINATIONS}) . "
          "j >= 0 and f(x0)[0] <= 1")
    _runs(NET + "property p(x0 : Tensor) = forall j in range(0) . j >= 0")


def test_a_range_whose_size_depends_on_data_is_a_diagnostic():
    _error_at(NET + "property p(x0 : Tensor, y : Label) = forall j in range(y) . f(x0)[j] <= 1",
              2, 56, "must be known before the property runs")
    _error_at(NET + "property p(x0 : Tensor) = forall i in range(3) . forall j in range(i) . "
              "f(x0)[j] <= 1", 2, 68, "must be known before the property runs")


def test_finite_quantifier_nesting_limit():
    def nested(n, size=1):
        return NET + "property p(x0 : Tensor) = " + "".join(
            f"forall j{i} in range({size}) . " for i in range(n)) + "f(x0)[0] <= 1"
    k = _checker.MAX_FINITE_NESTING
    _runs(nested(k))
    _runs(nested(k, size=2))  # 2**16 index combinations
    def col(text, var):
        return text.split("\n")[1].index(f"forall {var} in") + len("forall ") + 1
    _error_at(nested(k + 1), 2, col(nested(k + 1), f"j{k}"),
              "finite quantifiers are nested more than 16 deep")
    _error_at(nested(65), 2, col(nested(65), f"j{k}"), "nested more than 16 deep")
    _error_at(nested(3, size=200), 2, col(nested(3, size=200), "j2"),
              "enumerate 8000000 index combinations")


def test_search_nesting_limit():
    q = "forall y{0} . norm_inf(y{0} - x0) <= 0.1 => "
    _runs(NET + "property p(x0 : Tensor) = " + q.format(0) + q.format(1) + "f(y1)[0] <= 1")
    _error_at(NET + "property p(x0 : Tensor) = " + q.format(0) + q.format(1) + q.format(2)
              + "f(y2)[0] <= 1", 2, 27 + 2 * len(q.format(0)) + len("forall "),
              "quantifiers over tensors are nested more than 2 deep")


def test_a_tensor_type_of_too_many_dimensions():
    _error_at("network f : Tensor[" + ", ".join(["1"] * 40) + "] -> Tensor\n"
              "property p(x0 : Tensor) = f(x0)[0] <= 1", 1, 13, "at most 32 dimensions")


@pytest.mark.parametrize("n", [20000, 30000])
def test_the_syntax_hint_is_linear_in_a_long_name(n):
    # the regex search this replaced took 18.6 s on `"a" * 20000 + " "` alone
    for text in ("a" * n + " b", "c = 1\n" + "a" * n + " 2", "a" * n + "(x) b"):
        start = time.perf_counter()
        with pytest.raises(SpecError) as info:
            parse(text, "t.spec")
        assert time.perf_counter() - start < 1.0
        assert "\nhint: " in str(info.value)
    with pytest.raises(SpecError, match="a property or helper is defined with '='"):
        parse("a" * n + "(x) b", "t.spec")


@pytest.mark.parametrize("sep", ["\x0c", "\x0b", "\x85", "\u2028", "\u2029", "\x1c"])
def test_the_line_shown_is_the_line_counted_after_odd_line_breaks(sep):
    text = f"# a{sep} b\nnetwork f : Tensor -> Tensor\nproperty p(x0 : Tensor) = f(x0)[0] >= epz"
    with pytest.raises(SpecError) as info:
        compile_spec(text, filename="t.spec")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("t.spec:3:39: error: unknown name 'epz'")
    assert lines[1] == "   3 | property p(x0 : Tensor) = f(x0)[0] >= epz"
    assert lines[2] == "     | " + " " * 38 + "^^^"
    # a syntax error at the end of such a file
    with pytest.raises(SpecError) as info:
        parse(f"# a{sep} b\nproperty p(x0 : Tensor) = f(x0) <=", "t.spec")
    assert str(info.value).startswith("t.spec:2:35: error: unexpected end of file")
    assert "   2 | property p(x0 : Tensor) = f(x0) <=" in str(info.value)


def test_carets_line_up_under_tabs():
    text = "network f : Tensor -> Tensor\nproperty p(x0 : Tensor) =\n\t\tf(x0)[0] >=\tepz"
    with pytest.raises(SpecError) as info:
        compile_spec(text, filename="t.spec")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("t.spec:3:15: error: unknown name 'epz'")
    assert lines[1] == "   3 | \t\tf(x0)[0] >=\tepz"
    assert lines[2] == "     | \t\t" + " " * 11 + "\t^^^"
    # whatever the tab width, the caret sits under the name
    for width in (2, 4, 8):
        src, caret = lines[1].expandtabs(width), lines[2].expandtabs(width)
        assert src[caret.index("^"):].startswith("epz")


def test_a_file_that_is_not_utf8_is_located_at_its_first_bad_byte(tmp_path):
    path = tmp_path / "bad.spec"
    path.write_bytes("network f : Tensor -> Tensor\n# caf\u00e9 ok\nparam e\xe9 : Real = 1\n"
                     .encode("utf-8").replace(b"e\xc3\xa9 :", b"e\xe9 :"))
    with pytest.raises(SpecError) as info:
        parse_file(path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}:3:8: error: {path} is not UTF-8 text: byte 0xe9 cannot be decoded " \
                       "(invalid continuation byte)"
    assert lines[1] == "   3 | param e\ufffd : Real = 1"
    assert lines[2] == "     |        ^"
    assert lines[-1].startswith("hint: ")


@pytest.mark.parametrize("text, message", [
    ("network f : Tensor -> Tensor\nproperty p(y : Label) = f(y)[0] <= 1",
     "the input of 'f' must be a tensor, not Label"),
    ("network f : Tensor -> Tensor\nproperty p(x0 : Tensor) = f(f) <= 1", "'f' is a network"),
    ("property p(a : Real) = a <= range(3)", "must be a value, but this is a finite set"),
    ("property p(a : Label, b : Label) = a / b <= 1", "cannot divide indices"),
    ("property p(a : Tensor[2], b : Tensor[3]) = max(a, b) <= 1", "shape mismatch in max"),
    ("property p(a : Label) = abs(a) <= 1", "'abs' needs a real value, not an index"),
    ("h(v : Tensor[2]) = v[0] <= 1\nproperty p(a : Tensor[3]) = h(a)", "should be Tensor[2]"),
    ("h(v : Label) = v == 1\nproperty p(a : Real) = h(a)", "should be Label"),
])
def test_messages_that_had_no_hint_have_one(text, message):
    with pytest.raises(SpecError) as info:
        compile_spec(text)
    assert any(message in d.message for d in info.value.diagnostics), str(info.value)
    assert all(d.hint for d in info.value.diagnostics), str(info.value)
