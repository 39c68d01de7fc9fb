"""runtime/export.py: ONNX + VNN-LIB in the VNN-COMP layout. The 2.0 files parse with the
`vnnlib` package; Marabou on the exported 1.0 files (read_onnx + the property file, in process)
agrees with the in-process pipeline; the ONNX network computes the model's outputs."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from robustspec.compiler import compile_spec
from robustspec.dsl.errors import InputError
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
         ("classification_robustness", "cr_margin", {}, 0.3)]


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
    """The agreement test above is not vacuous: these cases include both verdicts."""
    net, x, y = _setup()
    seen = set()
    for spec, name, params, eps in CASES:
        p = compile_spec(SPECS / f"{spec}.spec")[name]
        seen |= set(verify(net, p, x, y, eps=eps, verifier="milp", progress=False,
                           params=params).verdicts)
    assert {"verified", "falsified"} <= seen


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


@pytest.mark.parametrize("spec,name,word", [("lipschitz_robustness", "lr", "auxiliary"),
                                            ("strong_classification_robustness", "scr", "softmax")])
def test_what_vnnlib_cannot_state_is_refused(tmp_path, spec, name, word):
    net, x, y = _setup()
    p = compile_spec(SPECS / f"{spec}.spec")[name]
    with pytest.raises(InputError, match=word):
        export(net, p, x, y, tmp_path, eps=0.1)
