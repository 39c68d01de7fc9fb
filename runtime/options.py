"""What every CLI command shares: the command registry, option types and common options.

cli.py builds the parser from COMMANDS and runs the chosen entry; the command modules
(commands.py and any other) register into it with `@command(...)`. Option types check values
with runtime/arguments.py, the same checks the Python API runs, so `--eps -1` is refused by
every command exactly as `attack(..., eps=-1)` is.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Callable

from robustspec.compiler.registry import Registry
from robustspec.dsl.errors import InputError

from . import arguments


class UserError(InputError):
    """An error the user can fix on the command line; printed without a traceback, exit 2."""


@dataclass(frozen=True)
class Command:
    """A subcommand: `run(args) -> exit status` and `add_arguments(parser)`."""

    run: Callable[[argparse.Namespace], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    help: str = ""


COMMANDS: Registry[Command] = Registry("command", UserError)


def command(name: str, help: str = "", arguments: Callable[[argparse.ArgumentParser], None]
            | None = None):
    """Register `fn(args) -> int` as the subcommand `name`:

        @command("report", help="...", arguments=lambda p: p.add_argument("--out"))
        def cmd_report(args): ...
    """
    def register(fn):
        COMMANDS.register(name, Command(fn, arguments, help), help=help or (
            (fn.__doc__ or "").strip().split("\n")[0]))
        return fn
    return register


# ------------------------------------------------------------------ option types

def _typed(check: Callable, *args):
    """An argparse type from a runtime/arguments.py check: its InputError becomes argparse's
    usage error (exit 2, the option named)."""
    def parse(text: str):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        try:
            return check(value, *args)
        except InputError as e:
            raise argparse.ArgumentTypeError(re.sub(r" \(a radius[^)]*\)", "", str(e))) from None
    return parse


def count(minimum: int):
    """An argparse type: an integer >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


radius = _typed(arguments.radius, "the value")       # finite and >= 0 (--eps, --alpha, --beta)
step = _typed(arguments.step_size, "the value")      # finite and > 0 (--step-size, --lr)


def radii(text: str) -> list[float]:
    """--eps of evaluate: numbers >= 0 separated by commas."""
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
        return arguments.radii(values)
    except (ValueError, InputError):
        raise UserError(f"--eps takes numbers >= 0 separated by commas, e.g. 0,0.05,0.1; "
                        f"got {text!r}") from None


def load_property(spec: str | None, name: str | None, params: dict | None = None):
    """--spec FILE --property NAME: the compiled property (None without --spec); a file with
    one property needs no --property."""
    from robustspec.compiler import compile_spec

    if spec is None:
        return None
    compiled = compile_spec(spec, params or None)
    if len(compiled) == 0:
        raise UserError(f"{spec} defines no property: add `property NAME(args) = ...`")
    if name is None:
        if len(compiled) != 1:
            raise UserError(f"{spec} has several properties ({', '.join(compiled.properties)}): "
                            "choose one with --property NAME")
        name = next(iter(compiled.properties))
    try:
        return compiled[name]
    except KeyError as e:
        raise UserError(e.args[0]) from None


def parse_params(pairs: list[str] | None) -> dict[str, float]:
    """--param NAME=VALUE (repeatable): finite numbers; eps also >= 0 (runtime/arguments.py)."""
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise UserError(f"--param takes NAME=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        k = k.strip()
        try:
            out[k] = float(v)
        except ValueError:
            raise UserError(f"--param {k}: {v!r} is not a number") from None
        try:
            arguments.params({k: out[k]}, what="")
        except InputError as e:
            raise UserError(f"--param {e}") from None
    return out


def add_param_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="override a spec parameter (a finite number; eps >= 0); repeatable")


def search_names() -> list[str]:
    """The compiler's searches a command line can name (all but 'points', which needs tensors)."""
    from robustspec.compiler import search

    table = getattr(search, "SEARCHES", None) or search.STRATEGIES
    return [name for name in table if name != "points"]


def add_logic_option(p: argparse.ArgumentParser) -> None:
    from robustspec.compiler.logics import available_logics

    p.add_argument("--logic", default="dl2", help=" | ".join(available_logics())
                   + " (options as NAME:k=v, e.g. yager:p=2; default dl2)")


def add_data_options(p: argparse.ArgumentParser,
                     limit_help: str = "use only N examples (spread over the split)") -> None:
    p.add_argument("--data-dir", metavar="DIR", help="where the datasets are (else $ROBUSTSPEC_DATA, "
                   "the user cache, /usr/share/datasets); a folder holding any of a dataset's "
                   "files is the one used")
    p.add_argument("--limit", type=count(1), metavar="N", help=limit_help)
    p.add_argument("--no-verify", action="store_true", help="skip checksum verification of the data")


__all__ = ["COMMANDS", "Command", "UserError", "command", "count", "radius", "step", "radii",
           "load_property",
           "parse_params", "add_param_option", "add_data_options", "add_logic_option",
           "search_names"]
