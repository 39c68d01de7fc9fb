"""Issue 7, the shape of the compiler: phases kept as cached properties, every back end one
entry in one table, and a new back end one registration."""
import torch

from robustspec.compiler import compile_spec
from robustspec.compiler.backends import BACKENDS, lower
from robustspec.compiler.logics import BOOLEAN, get_logic
from robustspec.compiler.lower import Lowering

SPEC = "specs/standard_robustness.spec"


def test_phases_are_kept():
    spec = compile_spec(SPEC)
    assert type(spec.ast).__name__ == "Module"
    assert "sr" in spec.checked.properties and "sr" in spec.normal
    assert spec.normal["sr"] is spec["sr"].normal
    assert spec.phases.ast is spec.ast  # cached: computed once


def test_every_back_end_is_one_entry():
    assert {"loss", "checker", "objective", "sympy", "explain", "query"} <= set(BACKENDS)
    prop = compile_spec(SPEC)["sr"]
    assert prop.lower("checker") is prop._check
    assert prop.lower("loss", logic="goedel") is prop._loss_fn(get_logic("goedel"))
    assert "norm_inf" in str(prop.lower("sympy", logic="dl2"))
    assert prop.lower("explain").startswith("property sr")


def test_the_checker_is_the_boolean_logic_in_the_same_lowering():
    prop = compile_spec("property p(a : Real) = a <= 1 and not (a > 1)")["p"]
    a = torch.tensor([0.5, 2.0])
    ctx = prop._bind(None, None, {"a": a}, None)
    exact = Lowering(BOOLEAN).formula(prop.formula)(ctx)
    assert exact.dtype == torch.bool and exact.tolist() == [True, False]
    assert prop.value(None, logic="boolean", a=a).tolist() == [True, False]
    assert prop.loss(None, logic="boolean", a=a, reduction="none").tolist() == [0.0, 1.0]


def test_a_new_back_end_is_one_registration():
    BACKENDS.register("count_atoms", lambda prop: sum(1 for n in __import__(
        "robustspec.compiler.ir", fromlist=["walk"]).walk(prop.formula) if n.op == "cmp"))
    try:
        assert lower(compile_spec(SPEC)["sr"], "count_atoms") >= 2
    finally:
        BACKENDS._entries.pop("count_atoms")


def test_no_import_cycle_from_logics_to_the_lowerings():
    import ast
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1] / "compiler" / "logics"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[-1] not in ("lower", "symbolic", "property"), path
