"""The `robustspec` command line.

    robustspec check FILE...                      exit 0, or 2 with diagnostics
    robustspec explain FILE [--property NAME] [--logic dl2]

User errors (bad specs, missing data, bad options) print a clear message and exit 2; they never
end in a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from robustspec.dsl.diagnostics import SpecError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


class UserError(Exception):
    """An error the user can fix; printed without a traceback, exit status 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [UserError, OSError]
    try:
        from .data import DataError
        from .training import TrainingError
        errors += [DataError, TrainingError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


USER_ERRORS = _user_errors()


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register


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


def _params(pairs: list[str] | None) -> dict[str, float]:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise UserError(f"--param takes NAME=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise UserError(f"--param {k}: {v!r} is not a number") from None
    return out


@command("check")
def cmd_check(args: argparse.Namespace) -> int:
    from robustspec.compiler import check_file

    status = 0
    for path in args.files:
        spec, diags = check_file(path, _params(args.param))
        for d in diags:
            print(d.render(), file=sys.stderr)
            print(file=sys.stderr)
        if spec is None:
            status = 2
            n = sum(d.severity == "error" for d in diags)
            print(f"{path}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        else:
            w = len(spec.warnings)
            print(f"{path}: ok, {len(spec)} propert{'ies' if len(spec) != 1 else 'y'} "
                  f"({', '.join(spec.properties)})" + (f", {w} warning{'s' if w != 1 else ''}" if w else ""))
    return status


@command("explain")
def cmd_explain(args: argparse.Namespace) -> int:
    from robustspec.compiler import compile_spec
    from robustspec.compiler.explain import explain
    from robustspec.compiler.search import make_search

    spec = compile_spec(args.file, _params(args.param))
    names = [args.property] if args.property else list(spec.properties)
    if args.steps is not None and args.search != "pgd":
        raise UserError(f"--steps is for --search pgd; {args.search} takes "
                        + ("--samples" if args.search == "random" else "no count (one step)"))
    if args.samples is not None and args.search != "random":
        raise UserError("--samples is for --search random")
    options = ({"steps": args.steps} if args.steps is not None else {}) if args.search == "pgd" \
        else ({"samples": args.samples} if args.samples is not None else {})
    strategy = make_search(args.search, **options)
    for i, name in enumerate(names):
        if i:
            print("\n" + "-" * 78 + "\n")
        try:
            prop = spec[name]
        except KeyError as e:
            raise UserError(e.args[0]) from None
        print(explain(prop, logic=args.logic, search=strategy, latex=args.latex))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robustspec",
                                description="State a robustness property once; train for it, "
                                            "attack it and measure it.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("check", help="parse and check spec files; exit 2 on errors")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--param", action="append", metavar="NAME=VALUE", help="override a parameter")

    e = sub.add_parser("explain", help="show the normalised formula, domains, searches and loss")
    e.add_argument("file", metavar="FILE")
    e.add_argument("--property", metavar="NAME")
    e.add_argument("--logic", default="dl2", help="dl2 | goedel | lukasiewicz | product | "
                   "yager[:p=2] | stl[:nu=1] (options as NAME:k=v)")
    e.add_argument("--search", default="pgd", choices=["pgd", "fgsm", "random"])
    e.add_argument("--steps", type=count(0), help="PGD steps (default 50)")
    e.add_argument("--samples", type=count(1), help="random samples (default 100)")
    e.add_argument("--latex", action="store_true", help="also print the loss in LaTeX")
    e.add_argument("--param", action="append", metavar="NAME=VALUE")

    try:
        from . import commands  # the runtime's commands (train, evaluate, attack, data, demo)
        commands.add_parsers(sub)
    except ImportError as err:  # pragma: no cover - only while the runtime is incomplete
        if "commands" not in str(err):
            raise
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args) or 0
    except SpecError as e:
        print(e.render(), file=sys.stderr)
        return 2
    except USER_ERRORS as e:
        if isinstance(e, OSError) and e.strerror:
            msg = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
        else:
            msg = e.args[0] if e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as e:
        # the Python API's checks of its inputs (shapes, parameters, search options) say what is
        # wrong in their message; a traceback helps only when debugging robustspec itself
        if os.environ.get("ROBUSTSPEC_DEBUG"):
            raise
        print(f"error: {e}\n(set ROBUSTSPEC_DEBUG=1 to see where it came from)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
