"""runtime/export.py: ONNX + VNN-LIB in the VNN-COMP layout. The 2.0 files parse with the
`vnnlib` package; Marabou on the exported 1.0 files (read_onnx + the property file, in process)
agrees with the in-process pipeline; the ONNX network computes the model's outputs."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from robustspec.compiler import compile_spec
from robustspec.dsl.diagnostics import SpecError
from robustspec.runtime.export import export
from robustspec.runtime.models import PaperMLP
from robustspec.runtime.verify import verify

SPECS = Path(__file__).resolve().parents[1] / "specs"


def _setup(seed=0):
    torch.manual_seed(seed)
    net = PaperMLP(12, 6, 3).eval()
    x = torch.rand(4, 12)
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, y


CASES = [("standard_robustness", "sr", {"delta": 0.2}, 0.1),
         ("classification_robustness", "cr_margin", {}, 0.05),
         ("classification_robustness", "cr_margin", {}, 0.3),
         # LR: its auxiliary t an extra input, the rows over the outputs [f(x), t, L t, x]
         ("lipschitz_robustness", "lr", {"L": 0.5}, 0.05),
         ("lipschitz_robustness", "lr", {"L": 2.0}, 0.3)]


@pytest.mark.parametrize("spec,name,params,eps", CASES)
def test_marabou_on_exported_vnnlib1_agrees_with_the_pipeline(tmp_path, spec, name, params, eps):
    from maraboupy import Marabou

    net, x, y = _setup()
    p = compile_spec(SPECS / f"{spec}.spec")[name]
    out = export(net, p, x, y, tmp_path, fmt="vnnlib1", eps=eps, params=params, timeout=10)
    rows = list(csv.reader(open(out["instances"])))
    assert len(rows) == 4 and all(r[0] == "onnx/model.onnx" and r[2] == "10.0" for r in rows)
    inline = verify(net, p, x, y, eps=eps, verifier="milp", timeout=10, progress=False, params=params)
    answers = []
    for row in rows:
        nw = Marabou.read_onnx(str(tmp_path / row[0]))
        code, _vals, _stats = nw.solve(verbose=False, propertyFilename=str(tmp_path / row[1]),
                                       options=Marabou.createOptions(verbosity=0, timeoutInSeconds=10))
        answers.append(code)
    expect = {"verified": "unsat", "falsified": "sat"}
    assert answers == [expect[v] for v in inline.verdicts], (answers, inline.verdicts)


def test_both_answers_occur_among_the_cases(tmp_path):
    """The agreement test above is not vacuous: its cases include both verdicts, for LR too."""
    net, x, y = _setup()
    seen = {}
    for spec, name, params, eps in CASES:
        p = compile_spec(SPECS / f"{spec}.spec")[name]
        seen.setdefault(name, set()).update(verify(net, p, x, y, eps=eps, verifier="milp",
                                                   progress=False, params=params).verdicts)
    assert {"verified", "falsified"} <= seen["lr"]
    assert {"verified", "falsified"} <= seen["sr"] | seen["cr_margin"]


def test_vnnlib2_files_parse_and_state_the_box(tmp_path):
    import vnnlib

    net, x, y = _setup()
    p = compile_spec(SPECS / "classification_robustness.spec")["cr_margin"]
    out = export(net, p, x, y, tmp_path, fmt="vnnlib2", eps=0.05, indices=[10, 11, 12, 13])
    assert [f.name for f in out["vnnlib"]] == [f"cr_margin_eps0.05_{i}.vnnlib" for i in (10, 11, 12, 13)]
    for f, x0 in zip(out["vnnlib"], x):
        q = vnnlib.parse_query_file(str(f))
        assert [n.name for n in q.networks] == ["N"]
        text = [str(a) for a in q.assertions]
        assert len(text) == 2 * 12 + 1  # the box, then the negated body
        assert text[-1].startswith("(assert (or")
        assert "np.float" not in f.read_text()
        # the bound of X[0,0] is x0 + eps clipped to [0, 1], written exactly
        hi = min(1.0, float(torch.tensor(float(x0[0])) + torch.tensor(0.05)))
        assert f"(<= X[0,0] {float(torch.tensor(hi))!r})" in f.read_text()
    with pytest.raises(vnnlib.VNNLibException):
        vnnlib.parse_query_string(out["vnnlib"][0].read_text().replace("declare-output", "declare-outptu"))


def test_onnx_network_computes_the_model(tmp_path):
    import onnxruntime as ort

    net, x, y = _setup()
    p = compile_spec(SPECS / "standard_robustness.spec")["sr"]
    out = export(net, p, x, y, tmp_path, eps=0.1)
    sess = ort.InferenceSession(str(out["onnx"]))
    for i in range(4):
        got = sess.run(None, {"X": x[i:i + 1].numpy()})[0]
        np.testing.assert_allclose(got, net(x[i:i + 1]).detach().numpy(), atol=1e-5)
    import onnx
    ops = {n.op_type for n in onnx.load(str(out["onnx"])).graph.node}
    assert "Clip" not in ops and "Relu" in ops


def test_what_vnnlib_cannot_state_is_refused_at_the_operator(tmp_path):
    net, x, y = _setup()
    p = compile_spec(SPECS / "strong_classification_robustness.spec")["scr"]
    with pytest.raises(SpecError, match="softmax threshold is not linear") as err:
        export(net, p, x, y, tmp_path, eps=0.1)
    text = str(err.value)
    line = next(n for n, t in enumerate((SPECS / "strong_classification_robustness.spec")
                                        .read_text().split("\n"), 1) if "softmax(" in t and not t.startswith("#"))
    assert f"strong_classification_robustness.spec:{line}:" in text
    assert "^" in text and "hint: verify it in process" in text


@pytest.mark.parametrize("hidden", [True, False])
def test_lr_network_carries_its_inputs_and_t_to_the_outputs(tmp_path, hidden):
    """LR's exported network takes [x, t] and gives f(x), then t, L t and every pixel (the
    rows' variables with unit coefficients), exactly, on inputs of either sign."""
    import onnxruntime as ort

    torch.manual_seed(1)
    net = PaperMLP(12, 6, 3).eval() if hidden else torch.nn.Sequential(torch.nn.Linear(12, 3))
    x = torch.rand(4, 12)
    with torch.no_grad():
        y = net(x).argmax(1)
    p = compile_spec(SPECS / "lipschitz_robustness.spec")["lr"]
    out = export(net, p, x, y, tmp_path, eps=0.1, params={"L": 3.0})
    sess = ort.InferenceSession(str(out["onnx"]))
    probe = torch.cat([torch.rand(5, 12) * 4 - 2, torch.rand(5, 1) - 0.5], 1)  # [x, t]
    got = torch.cat([torch.tensor(sess.run(None, {"X": row.numpy()})[0]) for row in probe.split(1)])
    with torch.no_grad():
        want = torch.cat([net(probe[:, :12]), probe[:, 12:], 3.0 * probe[:, 12:], probe[:, :12]], 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    text = out["vnnlib"][0].read_text()
    assert "(* " not in text and "Y_4 = 3.0 * t_0" in text
    t_hi = float(re.search(r"\(assert \(<= X_12 ([0-9.e-]+)\)\)", text).group(1))
    assert 0.1 <= t_hi < 0.1 + 1e-6 and "(assert (>= X_12 0.0))" in text  # t's box: [0, eps]


def test_lr_vnnlib2_parses(tmp_path):
    import vnnlib

    net, x, y = _setup()
    p = compile_spec(SPECS / "lipschitz_robustness.spec")["lr"]
    out = export(net, p, x, y, tmp_path, fmt="vnnlib2", eps=0.05)
    q = vnnlib.parse_query_file(str(out["vnnlib"][0]))
    text = [str(a) for a in q.assertions]
    assert len(text) == 2 * 13 + 2 * 12 + 1  # the box of [x, t], t's rows, the negated body
    assert text[-1].startswith("(assert (or") and "(> " in text[-1]
