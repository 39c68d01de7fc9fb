"""The registry of logics: pick one by name (`logic="goedel"`), or register your own.

    from robustspec.compiler.logics import Logic, register_logic
    register_logic("mine", MyLogic)      # then logic="mine" works everywhere

Built in (see docs/logics.md): dl2, goedel, lukasiewicz, product (Reichenbach), yager (p),
stl (nu), and boolean: the exact checker, the same table with Boolean values. Options go as keywords, `get_logic("yager", p=3)`, or in the name, "yager:p=3" or
"yager(p=3)" (what `--logic` takes on the command line). `get_logic` returns one shared
instance per name and options, so a property compiles once per logic, not once per call.
"""
from __future__ import annotations

import difflib
import inspect
import math
import re
from typing import Callable

from robustspec.dsl.diagnostics import Diagnostic, SpecError

from ..registry import Registry
from .base import CLAIMS, LAWS, Logic
from .boolean import BOOLEAN, Boolean
from .dl2 import DL2
from .goedel import Goedel
from .lukasiewicz import Lukasiewicz
from .product import Product
from .stl import STL
from .yager import Yager

LOGICS: Registry = Registry("logic", aliases={
    "exact": "boolean", "checker": "boolean", "godel": "goedel", "gödel": "goedel",
    "łukasiewicz": "lukasiewicz", "reichenbach": "product", "smooth-stl": "stl"})
for _name, _cls in (("dl2", DL2), ("goedel", Goedel), ("lukasiewicz", Lukasiewicz),
                    ("product", Product), ("yager", Yager), ("stl", STL), ("boolean", Boolean)):
    LOGICS.register(_name, _cls)
_REGISTRY = LOGICS._entries  # name -> Entry (a live view: popping a name unregisters it)
_ALIASES = LOGICS._aliases
BUILTIN_LOGICS = ("dl2", "goedel", "lukasiewicz", "product", "yager", "stl")
_INSTANCES: dict[tuple, Logic] = {}


def register_logic(name: str, factory: Callable[..., Logic] | Logic) -> None:
    """Make `logic=name` available; `factory(**options)` returns a Logic instance (a Logic
    subclass is such a factory; an instance is used as is)."""
    key = name.lower()
    if not re.fullmatch(r"[a-z_][a-z0-9_\-]*", key):
        raise ValueError(f"a logic name is a word (letters, digits, _ and -), not {name!r}")
    if isinstance(factory, Logic):
        instance = factory
        factory = lambda **options: instance if not options else _no_options(name, options)  # noqa: E731
    elif not callable(factory):
        raise TypeError(f"register_logic({name!r}, ...) needs a Logic subclass, a factory "
                        f"returning a Logic, or a Logic instance; got {factory!r}")
    LOGICS.register(key, factory, help=(getattr(factory, "__doc__", None) or "").strip()
                    .split("\n")[0] or f"the logic {key}")
    for k in [k for k in _INSTANCES if k[0] == key]:
        del _INSTANCES[k]


def _no_options(name, options):
    raise TypeError(f"logic '{name}' was registered as an instance and takes no options "
                    f"(got {sorted(options)})")


def _option_names(factory) -> list[str] | None:
    """The keyword options a factory takes, or None when it takes **kwargs (or is opaque)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def available_logics() -> list[str]:
    """The logic names, the trainable ones sorted, then the exact checker ("boolean")."""
    return sorted(k for k in _REGISTRY if k != "boolean") + ["boolean"]


def _parse_name(text: str) -> tuple[str, dict]:
    """'yager:p=3,xi=0.5' or 'yager(p=3)' -> ('yager', {'p': 3.0, 'xi': 0.5})."""
    m = re.fullmatch(r"\s*([^:(),\s]+)\s*(?::(.*)|\((.*)\))?\s*", text)
    if not m:
        raise SpecError([Diagnostic("error", f"cannot read the logic {text!r}",
                                    hint="write NAME, NAME:opt=value,... or NAME(opt=value, ...), "
                                         "e.g. yager:p=3")])
    name, rest = m.group(1), m.group(2) if m.group(2) is not None else m.group(3)
    options: dict = {}
    for part in filter(None, (p.strip() for p in (rest or "").split(","))):
        if "=" not in part:
            raise SpecError([Diagnostic("error", f"logic option {part!r} is not NAME=VALUE",
                                        hint=f"e.g. {name}:p=3")])
        k, v = (s.strip() for s in part.split("=", 1))
        if k in options:
            raise SpecError([Diagnostic("error", f"logic option {k} is given twice in {text!r}")])
        try:
            options[k] = float(v)
        except ValueError:
            raise SpecError([Diagnostic("error", f"logic option {k}: {v!r} is not a number")]) from None
        if not math.isfinite(options[k]):
            raise SpecError([Diagnostic("error", f"logic option {k}: {v!r} must be finite")])
    return name, options


def get_logic(logic: str | Logic = "dl2", **options) -> Logic:
    """A Logic from a name (with options such as xi=..., p=..., nu=...) or an instance passed
    through. Unknown names are an error with a did-you-mean hint."""
    if isinstance(logic, Logic):
        if options:
            raise TypeError(f"options {sorted(options)} given with a Logic instance; set them on it")
        return logic
    name, in_name = _parse_name(str(logic))
    options = {**in_name, **options}
    key = name.lower()
    key = key if key in _REGISTRY else _ALIASES.get(key, key)  # a registered name beats an alias
    entry = _REGISTRY.get(key)
    factory = entry.value if entry is not None else None
    if factory is None:
        close = difflib.get_close_matches(key, list(_REGISTRY) + list(_ALIASES), n=3, cutoff=0.6)
        close = list(dict.fromkeys(_ALIASES.get(c, c) for c in close))
        hint = ("did you mean " + " or ".join(f"'{c}'" for c in close) + "?") if close else ""
        raise SpecError([Diagnostic(
            "error", f"unknown logic '{name}'",
            hint=hint + f"{' ' if hint else ''}(available: {', '.join(available_logics())})")])
    try:
        cache_key = (key, tuple(sorted(options.items())))
        hash(cache_key)
    except TypeError:
        cache_key = None
    if cache_key is not None and cache_key in _INSTANCES:
        return _INSTANCES[cache_key]
    known = _option_names(factory)
    bad = sorted(set(options) - set(known)) if known is not None else []
    if bad:
        raise SpecError([Diagnostic(
            "error", f"logic '{key}' has no option '{bad[0]}'",
            hint=f"its options: {', '.join(known) or 'none'}")])
    try:
        lg = factory(**options)
    except (TypeError, ValueError) as e:
        raise SpecError([Diagnostic("error", f"logic '{key}': {e}")]) from None
    if not isinstance(lg, Logic):
        raise TypeError(f"the factory registered for logic '{key}' returned {lg!r}, not a Logic")
    if cache_key is not None:
        _INSTANCES[cache_key] = lg
    return lg


__all__ = ["LOGICS", "Logic", "Boolean", "BOOLEAN", "LAWS", "DL2", "Goedel", "Lukasiewicz", "Product", "Yager", "STL", "CLAIMS",
           "BUILTIN_LOGICS", "register_logic", "get_logic", "available_logics"]
