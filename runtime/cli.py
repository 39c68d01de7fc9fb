"""The `robustspec` command line.

    robustspec check FILE...                      exit 0, or 2 with diagnostics
    robustspec explain FILE [--property NAME] [--logic dl2]
    robustspec train | evaluate | attack | data | demo ...   (runtime/commands.py)

User errors (bad specs, missing data, bad options, broken checkpoints: every RobustspecError,
dsl/errors.py) print a clear message and exit 2; they never end in a traceback.

Adding a subcommand is one registration in your own module (runtime/options.py's registry):

    from .options import command

    @command("report", help="write the report", arguments=lambda p: p.add_argument("--out"))
    def cmd_report(args) -> int:
        ...
        return 0

and, if the module is new, its name in COMMAND_MODULES below (a listed module that does not
exist yet is skipped). Raise an error from dsl/errors.py (or options.UserError) for anything
the user can fix. Choices and defaults come from the registries and TrainConfig, never lists
kept by hand.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from robustspec.dsl.errors import RobustspecError

from .options import (COMMANDS, UserError, add_logic_option, add_param_option, command, count,
                      parse_params, search_names)

# the modules whose @command registrations make up the CLI, in the order of `robustspec -h`
COMMAND_MODULES = ("robustspec.runtime.commands", "robustspec.runtime.verify_cli",
                   "robustspec.runtime.reproduce", "robustspec.runtime.report")

USER_ERRORS = (RobustspecError, OSError)


def _check_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("files", nargs="+", metavar="FILE")
    add_param_option(c)


@command("check", help="parse and check spec files; exit 2 on errors", arguments=_check_arguments)
def cmd_check(args: argparse.Namespace) -> int:
    from robustspec.compiler import check_file

    params = parse_params(args.param)
    status = 0
    for path in args.files:
        spec, diags = check_file(path, params)
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


def _explain_arguments(e: argparse.ArgumentParser) -> None:
    e.add_argument("file", metavar="FILE")
    e.add_argument("--property", metavar="NAME")
    add_logic_option(e)
    e.add_argument("--search", default="pgd", choices=search_names())
    e.add_argument("--steps", type=count(0), help="PGD steps (default 50)")
    e.add_argument("--samples", type=count(1), help="random samples (default 100)")
    e.add_argument("--latex", action="store_true", help="also print the loss in LaTeX")
    add_param_option(e)


@command("explain", help="show the normalised formula, domains, searches and loss",
         arguments=_explain_arguments)
def cmd_explain(args: argparse.Namespace) -> int:
    from robustspec.compiler import compile_spec
    from robustspec.compiler.explain import explain
    from robustspec.compiler.search import make_search

    spec = compile_spec(args.file, parse_params(args.param))
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


def load_command_modules() -> None:
    """Import every module of COMMAND_MODULES (each registers its commands); skip those that do
    not exist, never hide an error inside one."""
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise


def build_parser() -> argparse.ArgumentParser:
    load_command_modules()
    p = argparse.ArgumentParser(prog="robustspec",
                                description="State a robustness property once; train for it, "
                                            "attack it and measure it.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        entry = COMMANDS.entry(name)
        parser = sub.add_parser(name, help=entry.help)
        if entry.value.add_arguments is not None:
            entry.value.add_arguments(parser)
    return p


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return e.args[0] if e.args and isinstance(e.args[0], str) else str(e)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(None if argv is None else [str(a) for a in argv])
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS.get(args.command).run(args) or 0
    except USER_ERRORS as e:
        render = getattr(e, "render", None)  # SpecError: file:line:col, the line, a caret
        print(render() if callable(render) else f"error: {_message(e)}", file=sys.stderr)
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
