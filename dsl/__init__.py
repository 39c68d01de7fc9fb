"""robustspec.dsl: the spec language's grammar, AST and diagnostics. Imports neither torch nor the compiler."""
from .diagnostics import Diagnostic, DiagnosticBag, Source, Span, SpecError, did_you_mean
from .parser import parse, parse_file

__all__ = ["parse", "parse_file", "Diagnostic", "DiagnosticBag", "Source", "Span", "SpecError",
           "did_you_mean"]
