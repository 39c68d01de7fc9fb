"""Export a property's verification queries to the verification ecosystem: the network as ONNX
and one VNN-LIB file per point, plus instances.csv (onnx,vnnlib,timeout), the layout of the
verification competition's (VNN-COMP) benchmarks, so any verifier can be pointed at it.

VNN-LIB states the NEGATION of the property (sat = a counterexample): the input box, then
`(assert (or (and ...) ...))` over the outputs. Version 1.0 declares scalars X_i / Y_j (what
Marabou reads); 2.0 declares the network and tensors X[0,i] / Y[0,j] (what VNN-COMP uses now).
The ONNX network is the affine/ReLU chain of runtime/bounds.py (Gemm and Relu only): the clamp
of the logits is written exactly as two ReLUs, since Marabou's ONNX reader has no Clip.
Numbers are written with repr of a Python float (round-trip exact; never numpy's repr).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import torch
from torch import nn

from robustspec.compiler.query import Query, build_query
from robustspec.dsl.errors import InputError, MissingExtra

from .bounds import ReluNet
from .files import atomic_write_text

FORMATS = ("vnnlib1", "vnnlib2")


def _num(v) -> str:
    return repr(float(v))


def relu_module(net: ReluNet) -> nn.Sequential:
    """The chain as Linear/ReLU modules (float32)."""
    layers: list[nn.Module] = []
    for i, (w, b) in enumerate(zip(net.weights, net.biases)):
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w.float())
            lin.bias.copy_(b.float())
        layers.append(lin)
        if i < len(net.weights) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def export_onnx(net: ReluNet, path: str | Path) -> Path:
    """The network as ONNX, input 'X' [1, n] and output 'Y' [1, m]."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise MissingExtra("verify", "onnx", "ONNX export") from None
    path = Path(path)
    mod = relu_module(net)
    tmp = path.with_name(f".{path.name}.tmp")
    import warnings
    with warnings.catch_warnings():  # the TorchScript exporter: Gemm/Relu, what Marabou reads
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(mod, (torch.zeros(1, net.inputs),), str(tmp), input_names=["X"],
                          output_names=["Y"], dynamo=False)
    tmp.replace(path)
    return path


def _linear(coefs: list[tuple[float, str]]) -> str:
    terms = [name if c == 1.0 else f"(* {_num(c)} {name})" for c, name in coefs]
    if not terms:
        return "0.0"
    return terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})"


def _sum(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"(+ {' '.join(names)})"


def _row_text(q: Query, r: int, xname, yname, version: int) -> str | bool:
    """The row `g > 0` (or >= 0) as an atom; True/False when it has no variables. With unit
    coefficients (every spec here) it is written `(>= P (+ N c))`, sums of variables on each
    side: Marabou's 1.0 reader takes no `(* c v)` inside a sum."""
    cy = q.cy[0, r].tolist()
    cx = q.cx[0, r].tolist() if q.cx is not None else []
    coefs = [(c, yname(j)) for j, c in enumerate(cy) if c != 0]
    coefs += [(c, xname(i)) for i, c in enumerate(cx) if c != 0]
    const = float(q.c[0, r])
    strict = bool(q.strict[r]) and version == 2
    if not coefs:
        return const > 0 if q.strict[r] else const >= 0
    ge, le = (">", "<") if strict else (">=", "<=")
    if all(abs(c) == 1.0 for c, _ in coefs):
        pos = [v for c, v in coefs if c > 0]
        neg = [v for c, v in coefs if c < 0]
        if pos and neg:
            rhs = neg + ([_num(-const)] if const != 0 else [])
            return f"({ge} {_sum(pos)} {_sum(rhs)})"
        if pos:
            return f"({ge} {_sum(pos)} {_num(-const)})"
        return f"({le} {_sum(neg)} {_num(const)})"
    return f"({ge} {_linear(coefs)} {_num(-const)})"


def _expressible(q: Query) -> None:
    if q.n_aux:
        raise InputError(f"'{q.prop}' needs an auxiliary variable (a norm of the input on the "
                         "side that must stay small, as in LR), which VNN-LIB cannot declare; "
                         "verify it in-process with `robustspec verify`")
    if q.softmax:
        raise InputError(f"'{q.prop}' has a softmax threshold, which is not linear: VNN-LIB "
                         "cannot state it; verify it in-process with `robustspec verify`")


def vnnlib_text(q: Query, version: int, comment: str = "") -> str:
    """One example's query (batch 1) as a VNN-LIB file. Version 1.0 writes strict rows with
    >= (the 1.0 tools take only <= and >=): there a tie is a sat answer, a boundary case."""
    if q.batch != 1:
        raise InputError("vnnlib_text takes one example's query (query.example(i))")
    _expressible(q)
    n, m = q.inputs, q.outputs
    if version == 1:
        xname, yname = (lambda i: f"X_{i}"), (lambda j: f"Y_{j}")
    else:
        xname, yname = (lambda i: f"X[0,{i}]"), (lambda j: f"Y[0,{j}]")
    out = io.StringIO()
    for line in comment.splitlines():
        out.write(f"; {line}\n")
    if version == 1:
        for i in range(n):
            out.write(f"(declare-const X_{i} Real)\n")
        for j in range(m):
            out.write(f"(declare-const Y_{j} Real)\n")
    else:
        out.write("(vnnlib-version <2.0>)\n")
        out.write(f"(declare-network N\n  (declare-input X float32 [1,{n}])\n"
                  f"  (declare-output Y float32 [1,{m}])\n)\n")
    lo, hi = q.lo[0].tolist(), q.hi[0].tolist()
    for i in range(n):
        out.write(f"(assert (<= {xname(i)} {_num(hi[i])}))\n")
        out.write(f"(assert (>= {xname(i)} {_num(lo[i])}))\n")
    texts = {}
    for r in set(q.common) | {r for rows, _ in q.disjuncts for r in rows}:
        texts[r] = _row_text(q, r, xname, yname, version)
    for r in q.common:
        if texts[r] is False:
            return out.getvalue() + f"(assert (<= {xname(0)} -1.0))\n(assert (>= {xname(0)} 1.0))\n"
        if isinstance(texts[r], str):
            out.write(f"(assert {texts[r]})\n")
    alts = []
    for d, (rows, _sm) in enumerate(q.disjuncts):
        if not bool(q.active[0, d]):
            continue
        atoms = [texts[r] for r in rows]
        if any(a is False for a in atoms):
            continue
        atoms = [a for a in atoms if isinstance(a, str)]
        if not atoms:  # always true on the box: a counterexample everywhere
            atoms = [f"(>= {xname(0)} {_num(lo[0])})"]
        alts.append(f"(and {' '.join(atoms)})")
    if not alts:  # no disjunct can hold: an unsatisfiable query
        alts = [f"(and (<= {xname(0)} {_num(lo[0] - 1.0)}))"]
    out.write("(assert (or\n  " + "\n  ".join(alts) + "\n))\n")
    return out.getvalue()


def export(model, prop, x: torch.Tensor, y: torch.Tensor | None, out: str | Path, *,
           fmt: str = "vnnlib1", eps: float | None = None, params: dict | None = None,
           timeout: float = 30.0, indices: list[int] | None = None) -> dict:
    """Write model.onnx, one .vnnlib per example and instances.csv under `out`."""
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    from .training import property_args
    params = dict(params or {})
    if eps is not None:
        params["eps"] = eps
    args = property_args(prop, x, y) if y is not None else {prop.args[0][0]: x}
    q = build_query(prop, model, params=params, **args)
    _expressible(q)
    net = ReluNet.from_module(model, q.shape)
    out = Path(out)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    (out / "vnnlib").mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(net, out / "onnx" / "model.onnx")
    version = 1 if fmt == "vnnlib1" else 2
    indices = list(range(q.batch)) if indices is None else indices
    rows, files = [], []
    for k in range(q.batch):
        name = f"{prop.name}_eps{_num(params.get('eps', prop.params.get('eps', 0)))}_{indices[k]}.vnnlib"
        comment = (f"robustspec export: property {prop.name} of {prop.spec_name}, example "
                   f"{indices[k]}, parameters {', '.join(f'{a}={_num(v)}' for a, v in sorted({**prop.params, **params}.items()) if _isnum(v))}\n"
                   "sat means a counterexample (the negated property)")
        text = vnnlib_text(q.example(k), version, comment)
        p = out / "vnnlib" / name
        atomic_write_text(p, text)
        files.append(p)
        rows.append((f"onnx/{onnx_path.name}", f"vnnlib/{name}", _num(timeout)))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    atomic_write_text(out / "instances.csv", buf.getvalue())
    return {"onnx": onnx_path, "vnnlib": files, "instances": out / "instances.csv"}


def _isnum(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


__all__ = ["export", "export_onnx", "vnnlib_text", "relu_module", "FORMATS"]
