"""compile_spec: a `.spec` file in, named compiled properties out (parse, check, normalise).

Compiling takes milliseconds and happens once; properties are then called many times.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from robustspec.dsl import parse, parse_file
from robustspec.dsl.diagnostics import Diagnostic, DiagnosticBag, SpecError, did_you_mean

from .checker import check
from .ir import N, walk
from .normalise import normalise
from .property import Property


class Phases:
    """One compilation, phase by phase, each a cached property computed on first use (as in
    Vyper's CompilerData): `ast` (dsl) -> `checked` (names, types, IR) -> `normal` (domains,
    NNF, search objectives) -> `properties` (compiled Property objects). Back ends read the
    normalised properties (compiler/backends.py)."""

    def __init__(self, source: str | os.PathLike, params: dict | None = None,
                 filename: str | None = None):
        self.source, self.params, self.filename = source, params, filename

    @functools.cached_property
    def name(self) -> str:
        return str(self.source) if _looks_like_path(self.source) else (self.filename or "<string>")

    @functools.cached_property
    def ast(self):
        if _looks_like_path(self.source):
            return parse_file(self.source)
        return parse(str(self.source), self.name)

    @functools.cached_property
    def _checked(self):
        return check(self.ast, self.params)

    @property
    def checked(self):
        """The checked module (IR per property, parameters, networks)."""
        return self._checked[0]

    @property
    def diagnostics(self) -> DiagnosticBag:
        return self._checked[1]

    @functools.cached_property
    def normal(self) -> dict:
        # also on a module with errors, to report them all at once
        return normalise(self.checked, self.diagnostics)

    @functools.cached_property
    def properties(self) -> dict[str, Property]:
        normal = self.normal
        self.diagnostics.raise_if_errors()
        _warn(self.checked, normal, self.diagnostics)
        return {k: Property(v, self.checked.networks, self.checked.params, self.name)
                for k, v in normal.items()}


class CompiledSpec:
    """The properties of one spec, by name: `spec["sr"]`; `spec.phases` keeps every phase
    (`spec.ast`, `spec.checked`, `spec.normal`)."""

    def __init__(self, name: str, properties: dict[str, Property], params: dict, networks: dict,
                 warnings: list[Diagnostic], phases: Phases | None = None):
        self.name = name
        self.properties = properties
        self.params = params
        self.networks = networks
        self.warnings = warnings
        self.phases = phases

    @property
    def ast(self):
        return self.phases.ast if self.phases else None

    @property
    def checked(self):
        return self.phases.checked if self.phases else None

    @property
    def normal(self) -> dict | None:
        return self.phases.normal if self.phases else None

    def __getitem__(self, name: str) -> Property:
        try:
            return self.properties[name]
        except KeyError:
            hint = did_you_mean(name, self.properties)
            raise KeyError(f"{self.name} has no property '{name}'"
                           + (f"; {hint}" if hint else "")
                           + f" (properties: {', '.join(self.properties) or 'none'})") from None

    def __iter__(self):
        return iter(self.properties)

    def __len__(self) -> int:
        return len(self.properties)

    def __repr__(self) -> str:
        return f"<spec {self.name}: {', '.join(self.properties)}>"


def _looks_like_path(source: str | os.PathLike) -> bool:
    if isinstance(source, os.PathLike):
        return True
    return "\n" not in source and (source.endswith(".spec") or os.path.exists(source))


def compile_spec(source: str | os.PathLike, params: dict | None = None, *,
                 filename: str | None = None) -> CompiledSpec:
    """Compile a spec file (a path) or spec text. Raises SpecError with every diagnostic.

    params overrides the spec's parameter defaults, e.g. {"eps": 0.05}; properties also take
    params= per call, so one compiled spec serves a sweep over eps.
    """
    phases = Phases(source, params, filename)
    props = phases.properties
    checked = phases.checked
    return CompiledSpec(phases.name, props, {k: v for k, (_t, v) in checked.params.items()},
                        checked.networks, phases.diagnostics.warnings, phases)


def _warn(checked, normal, diags: DiagnosticBag) -> None:
    """Warnings the paper gives reasons for: SCR with eta <= 0.5 no longer implies CR."""
    params = {k: v for k, (_t, v) in checked.params.items()}

    def value(n: N):
        if n.op in ("const", "int"):
            return n.attr
        if n.op == "var" and n.attr[1] == "param":
            return params.get(n.attr[0])
        return None

    def is_softmax_score(n: N) -> bool:
        return n.op == "index" and n.args[0].op == "softmax"

    for p in normal.values():
        for n in walk(p.original):
            if n.op != "cmp":
                continue
            op, _ = n.attr
            a, b = n.args
            eta = None
            if op in (">=", ">") and is_softmax_score(a):
                eta = value(b)
            elif op in ("<=", "<") and is_softmax_score(b):
                eta = value(a)
            if eta is not None and eta <= 0.5:
                diags.warning(f"a softmax score above {eta:g} does not make its class the argmax: "
                              "with eta <= 0.5 this no longer implies classification robustness",
                              n.span, hint="use eta > 0.5 (the paper and DL2 use 0.52)")


def check_file(path: str | Path, params: dict | None = None) -> tuple[CompiledSpec | None, list[Diagnostic]]:
    """Compile and return (spec or None, all diagnostics): what `robustspec check` prints."""
    try:
        spec = compile_spec(path, params)
        return spec, list(spec.warnings)
    except SpecError as e:
        return None, e.diagnostics
