"""robustspec.compiler: check, normalise and lower specs to losses, checkers and searches."""
from robustspec.dsl.diagnostics import Diagnostic, SpecError

from .logics import DL2, Logic, available_logics, get_logic, register_logic
from .property import Found, Property, Verdict
from .search import FGSM, PGD, FixedPoints, RandomSampling, Search
from .spec import CompiledSpec, check_file, compile_spec

__all__ = ["compile_spec", "check_file", "CompiledSpec", "Property", "Found", "Verdict",
           "SpecError", "Diagnostic", "Logic", "DL2", "get_logic", "register_logic",
           "available_logics", "PGD", "FGSM", "RandomSampling", "FixedPoints", "Search"]
