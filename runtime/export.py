"""Export a property's verification queries to the verification ecosystem: the network as ONNX
and one VNN-LIB file per point, plus instances.csv (onnx,vnnlib,timeout), the layout of the
verification competition's (VNN-COMP) benchmarks, so any verifier can be pointed at it.

VNN-LIB states the NEGATION of the property (sat = a counterexample): the input box, then
`(assert (or (and ...) ...))` over the outputs. Version 1.0 declares scalars X_i / Y_j (what
Marabou reads); 2.0 declares the network and tensors X[0,i] / Y[0,j] (what VNN-COMP uses now).
The ONNX network is the affine/ReLU chain of runtime/bounds.py (Gemm and Relu; a Concat too where
a `Layout` adds outputs, below): the clamp of the logits is written exactly as two ReLUs, since
Marabou's ONNX reader has no Clip.
Numbers are written with repr of a Python float (round-trip exact; never numpy's repr).

Every file has the form most verifiers take: a box over the inputs X and linear rows over the
outputs Y with unit coefficients (Marabou's 1.0 reader takes no `(* c v)` inside a sum). A query
that needs more (rows reading the input, LR's auxiliary variable t, coefficients other than +-1)
is exported with a network that carries what the rows need to its outputs (`Layout`): t becomes
an extra input beside the image, and the outputs after f(x) are the scaled copies c * v of the
pixels, t and outputs the rows use (linear maps beside the network, joined by a Concat).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from robustspec.compiler.query import Query, build_query
from robustspec.dsl.diagnostics import NO_SPAN, Diagnostic, SpecError
from robustspec.dsl.errors import InputError, MissingExtra

from .bounds import ReluNet
from .files import atomic_write_text
from .verifiers import STRICT_MARGIN

FORMATS = ("vnnlib1", "vnnlib2")


def _num(v) -> str:
    return repr(float(v))


def relu_module(net: ReluNet) -> nn.Sequential:
    """The chain as Linear/ReLU modules (float32: the chain rounded once, here)."""
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


def export_onnx(net: ReluNet, path: str | Path, layout: "Layout | None" = None) -> Path:
    """The network as ONNX, input 'X' [1, n] and output 'Y' [1, m] (with a layout: its inputs
    and outputs, see `Layout.module`)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise MissingExtra("verify", "onnx", "ONNX export") from None
    path = Path(path)
    mod = relu_module(net) if layout is None else layout.module(net)
    n = net.inputs if layout is None else layout.inputs
    tmp = path.with_name(f".{path.name}.tmp")
    import warnings
    with warnings.catch_warnings():  # the TorchScript exporter: Gemm/Relu, what Marabou reads
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(mod, (torch.zeros(1, n),), str(tmp), input_names=["X"],
                          output_names=["Y"], dynamo=False)
    tmp.replace(path)
    return path


def _sum(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"(+ {' '.join(names)})"


@dataclass(frozen=True)
class Layout:
    """What the exported network takes and gives. Inputs: the image's n values, then the
    query's auxiliary variables. Outputs: f(x) (m), then `extra`, each (kind, index, scale) the
    value scale * v of the variable v = y[index] ("y"), x[index] ("x") or t[index] ("t"): every
    coefficient of every row is then +-1 on one output (`plain`: no extra outputs and no
    auxiliary inputs, the network itself)."""

    n: int
    m: int
    n_aux: int
    extra: tuple = ()

    @property
    def plain(self) -> bool:
        return not self.extra and not self.n_aux

    @property
    def inputs(self) -> int:
        return self.n + self.n_aux

    @property
    def outputs(self) -> int:
        return self.m + len(self.extra)

    @cached_property
    def _output_of(self) -> dict:
        return {key: self.m + e for e, key in enumerate(self.extra)}

    def terms(self, q: Query, r: int) -> list[tuple[float, int]]:
        """Row r of q (one example's query) as (sign, output index) pairs."""
        out = []
        for kind, coefs in (("y", q.cy), ("x", q.cx), ("t", q.ct)):
            if coefs is None:
                continue
            for i, c in enumerate(coefs[0, r].tolist()):
                if c == 0:
                    continue
                if kind == "y" and abs(c) == 1.0:
                    out.append((c, i))
                else:
                    out.append((1.0 if c > 0 else -1.0, self._output_of[(kind, i, abs(c))]))
        return out

    @classmethod
    def of(cls, q: Query) -> "Layout":
        """The layout that states every row of every example of q with unit coefficients."""
        extra = {}
        rows = sorted(set(q.common) | {r for rs, _ in q.disjuncts for r in rs})
        for kind, coefs in (("y", q.cy), ("x", q.cx), ("t", q.ct)):
            if coefs is None:
                continue
            for b, r, i in torch.nonzero(coefs[:, rows], as_tuple=False).tolist():
                c = abs(float(coefs[b, rows[r], i]))
                if kind != "y" or c != 1.0:
                    extra.setdefault((kind, i, c), None)
        return cls(q.inputs, q.outputs, q.n_aux, tuple(sorted(extra)))

    def module(self, net: ReluNet) -> nn.Module:
        """The exported network: net's chain (relu_module) reading the image part of the inputs,
        beside two linear maps giving the extra outputs, joined by one Concat: the copies of
        inputs and t from the inputs, the scaled copies of outputs from the outputs."""
        f = relu_module(net)
        if self.plain:
            return f
        first = f[0]
        with torch.no_grad():  # the auxiliary inputs enter f with weight 0
            wide = nn.Linear(self.inputs, first.out_features)
            wide.weight.copy_(torch.cat([first.weight, first.weight.new_zeros(
                first.out_features, self.n_aux)], 1))
            wide.bias.copy_(first.bias)
        f[0] = wide
        from_in = [(e, i if k == "x" else self.n + i, s)
                   for e, (k, i, s) in enumerate(self.extra) if k != "y"]
        from_out = [(e, i, s) for e, (k, i, s) in enumerate(self.extra) if k == "y"]
        # Layout.of sorts the extras by kind: t and x (from the inputs) before y (from f)
        assert [e for e, *_ in from_in + from_out] == list(range(len(self.extra)))
        return _Carried(f, _selection(self.inputs, from_in), _selection(self.m, from_out))

    def describe(self, xname, yname) -> str:
        """The variables' meaning, for the files' header (names as the file writes them)."""
        if self.plain:
            return ""
        names = {"y": yname, "x": xname, "t": lambda a: f"t_{a}"}
        parts = [f"{yname(self.m + e)} = " + (f"{_num(s)} * " if s != 1.0 else "") + names[k](i)
                 for e, (k, i, s) in enumerate(self.extra)]
        aux = ", ".join(f"{xname(self.n + a)} = t_{a}" for a in range(self.n_aux))
        head = (f"inputs {xname(0)}..{xname(self.n - 1)}: the image"
                + (f"; {aux} (auxiliary)" if aux else "")
                + f"; outputs {yname(0)}..{yname(self.m - 1)}: the network's")
        return head + f"\nextra outputs ({yname(0)}.. the network's outputs): " + ", ".join(parts)


def _selection(width: int, picks: list) -> nn.Linear | None:
    """A linear map whose output k is scale * input i, for each (_, i, scale) of picks."""
    if not picks:
        return None
    lin = nn.Linear(width, len(picks))
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        for k, (_e, i, scale) in enumerate(picks):
            lin.weight[k, i] = scale
    return lin


class _Carried(nn.Module):
    """f's outputs, then the extra outputs: Gemm/Relu, two Gemms and a Concat in ONNX."""

    def __init__(self, f: nn.Module, from_in: nn.Linear | None, from_out: nn.Linear | None):
        super().__init__()
        self.f, self.from_in, self.from_out = f, from_in, from_out

    def forward(self, X):
        y = self.f(X)
        parts = [y]
        if self.from_in is not None:
            parts.append(self.from_in(X))
        if self.from_out is not None:
            parts.append(self.from_out(y))
        return torch.cat(parts, 1)


def _row_text(q: Query, r: int, layout: Layout, xname, yname, version: int) -> str | bool:
    """The row `g > 0` (or >= 0) over the layout's outputs, written `(>= P (+ N c))`: sums of
    outputs with unit coefficients on each side. True/False when it has no variables. In 1.0
    (which has no >) a strict row is written g >= STRICT_MARGIN, as the in-process solvers pose
    it: otherwise a tie, such as x = x0 for LR, would read as a counterexample."""
    terms = layout.terms(q, r)
    const = float(q.c[0, r])
    strict = bool(q.strict[r])
    if not terms:
        return const > 0 if strict else const >= 0
    if strict and version == 1:
        const -= STRICT_MARGIN
    ge, le = (">", "<") if strict and version == 2 else (">=", "<=")
    pos = [yname(j) for c, j in terms if c > 0]
    neg = [yname(j) for c, j in terms if c < 0]
    if pos and neg:
        rhs = neg + ([_num(-const)] if const != 0 else [])
        return f"({ge} {_sum(pos)} {_sum(rhs)})"
    if pos:
        return f"({ge} {_sum(pos)} {_num(-const)})"
    return f"({le} {_sum(neg)} {_num(const)})"


def _expressible(q: Query) -> None:
    """VNN-LIB states linear rows only: a softmax threshold is refused at the operator."""
    if q.softmax:
        raise SpecError([Diagnostic(
            "error", f"cannot export '{q.prop}' to VNN-LIB: a softmax threshold is not linear",
            q.softmax[0].span or NO_SPAN,
            hint="verify it in process with `robustspec verify` (certified from MILP margin "
                 "bounds, falsified by attack)")])


def vnnlib_text(q: Query, version: int, comment: str = "", layout: Layout | None = None) -> str:
    """One example's query (batch 1) as a VNN-LIB file over the network `layout.module(net)`
    (the layout of q alone by default; `export` passes the batch's, so one network serves every
    file). Version 1.0 (no >) writes strict rows as g >= STRICT_MARGIN (see `_row_text`)."""
    if q.batch != 1:
        raise InputError("vnnlib_text takes one example's query (query.example(i))")
    _expressible(q)
    layout = Layout.of(q) if layout is None else layout
    n, m = layout.inputs, layout.outputs
    if version == 1:
        xname, yname = (lambda i: f"X_{i}"), (lambda j: f"Y_{j}")
    else:
        xname, yname = (lambda i: f"X[0,{i}]"), (lambda j: f"Y[0,{j}]")
    out = io.StringIO()
    for line in (comment + "\n" + layout.describe(xname, yname)).strip().splitlines():
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
    lo = q.lo[0].tolist() + q.aux_lo[0].tolist()
    hi = q.hi[0].tolist() + q.aux_hi[0].tolist()
    for i in range(n):
        out.write(f"(assert (<= {xname(i)} {_num(hi[i])}))\n")
        out.write(f"(assert (>= {xname(i)} {_num(lo[i])}))\n")
    texts = {}
    for r in set(q.common) | {r for rows, _ in q.disjuncts for r in rows}:
        texts[r] = _row_text(q, r, layout, xname, yname, version)
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


def dense_chain(net: ReluNet) -> None:
    """export writes the affine/ReLU chain as dense Gemm layers (what Marabou's ONNX reader
    takes); a CNN's chain keeps its large conv and pool layers sparse because their dense form
    is huge (a 28x28 SmallCNN's first pool alone: 12544 x 12544). Refused clearly, rather than
    failing deep in the export after allocating gigabytes."""
    big = [w for w in net.weights if w.layout != torch.strided]
    if big:
        sizes = ", ".join(f"{tuple(w.shape)}" for w in big[:3])
        raise InputError(f"export writes the network as dense layers, and this one's conv/pool "
                         f"layers are too large for that ({sizes}{', ...' if len(big) > 3 else ''}); "
                         "export a smaller network (e.g. --model mlp), or verify it in place with "
                         "`robustspec verify`")


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
    layout = Layout.of(q)  # one network for every example's file
    net = ReluNet.from_module(model, q.shape, dtype=torch.float64)  # rounded once, by relu_module
    dense_chain(net)
    out = Path(out)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    (out / "vnnlib").mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(net, out / "onnx" / "model.onnx", layout)
    version = 1 if fmt == "vnnlib1" else 2
    indices = list(range(q.batch)) if indices is None else indices
    rows, files = [], []
    for k in range(q.batch):
        name = f"{prop.name}_eps{_num(params.get('eps', prop.params.get('eps', 0)))}_{indices[k]}.vnnlib"
        comment = (f"robustspec export: property {prop.name} of {prop.spec_name}, example "
                   f"{indices[k]}, parameters {', '.join(f'{a}={_num(v)}' for a, v in sorted({**prop.params, **params}.items()) if _isnum(v))}\n"
                   "sat means a counterexample (the negated property)")
        text = vnnlib_text(q.example(k), version, comment, layout)
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


__all__ = ["export", "export_onnx", "vnnlib_text", "relu_module", "Layout", "FORMATS"]
