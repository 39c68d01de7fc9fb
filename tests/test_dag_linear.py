"""Issue 8 item 4: every IR walk is memoised on nodes, so compiling and running a formula is
linear in its DAG size; a nested `<=>` of depth 16 (a tree of 2^16 leaves) runs in well under a
second."""
import time

import torch

from robustspec.compiler import compile_spec
from robustspec.compiler.ir import dag_text, walk
from robustspec.compiler.symbolic import value_expression


def nested_iff(depth: int) -> str:
    f = "f(x0)[0] <= 1"
    for i in range(depth):
        f = f"({f} <=> f(x0)[{i % 3}] >= 0)"
    return "network f : Tensor -> Tensor[3]\nproperty p(x0 : Tensor) = " + f + "\n"


def test_nested_iff_depth_16_compiles_and_runs_fast():
    compile_spec(nested_iff(2))  # the parser's tables are built once per process
    start = time.perf_counter()
    prop = compile_spec(nested_iff(16))["p"]
    x0 = torch.tensor([[0.5, -1.0, 2.0], [2.0, 1.0, 1.0]])
    loss = prop.loss(lambda x: x, x0=x0, reduction="none")
    holds = prop.holds(lambda x: x, x0=x0)
    prop.fingerprint()
    value_expression(prop.formula, "dl2", evaluate=False)  # sympy's own algebra is not ours
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, elapsed
    # the same verdicts as a direct evaluation of the nested <=> (depth 16, exact booleans)
    want = []
    for row in x0.tolist():
        v = row[0] <= 1
        for i in range(16):
            v = v == (row[i % 3] >= 0)
        want.append(v)
    assert holds.tolist() == want
    assert [bool(v == 0) for v in loss.tolist()] == want  # DL2 is sound and complete


def test_compile_time_grows_linearly():
    compile_spec(nested_iff(2))
    times = {}
    for d in (10, 20):
        start = time.perf_counter()
        prop = compile_spec(nested_iff(d))["p"]
        prop.loss(lambda x: x, x0=torch.zeros(1, 3))
        times[d] = time.perf_counter() - start
    assert times[20] < 10 * times[10] + 0.2, times  # a tree walk would be 1024 times slower


def test_walk_and_dag_text_visit_each_node_once():
    prop = compile_spec(nested_iff(12))["p"]
    nodes = list(walk(prop.formula))
    assert len(nodes) == len({id(n) for n in nodes}) < 400
    assert len(dag_text(prop.formula).splitlines()) == len(list(walk(prop.formula,
                                                                      into_domains=True)))
