"""Fuzz the spec front end: mutate specs/*.spec and check that every mutant is either cleanly
accepted (and then compiles and runs) or cleanly refused (a SpecError whose diagnostics say
file:line:col), never another exception and never a hang.

    .venv/bin/python bench/fuzz_specs.py --iterations 5000 --seed 1

Mutations (seeded, random.Random(seed)): delete, duplicate or swap tokens; insert keywords,
operators, odd numbers (1e400, 400-digit integers, -1, 1e-400), unicode and control characters
(tabs, form feeds, U+2028, NUL); truncate; nest deeply (not, -, parentheses, calls, sums,
quantifiers, finite quantifiers). Mutants go through `robustspec.compiler.check_file`, the
entry point of `robustspec check`; every accepted mutant's properties run `holds` and `loss`
on a tiny model. tests/test_fuzz.py runs a few hundred of the same cases in the suite.
"""
from __future__ import annotations

import argparse
import random
import re
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robustspec.compiler import check_file
from robustspec.dsl.errors import RobustspecError

SPECS = Path(__file__).resolve().parents[1] / "specs"
TOKEN = re.compile(r"\s+|#[^\n]*|[A-Za-z_][A-Za-z_0-9']*|\d+\.?\d*(?:[eE][-+]?\d+)?|<=>|=>|->|<=|>=|==|!=|.",
                   re.S)
INSERTS = ["forall", "exists", "in", "and", "or", "not", "=>", "<=>", ".", ",", ":", "(", ")", "[",
           "]", "=", "==", "<=", "<", "+", "-", "*", "/", "param", "network", "property", "def",
           "Tensor", "Real", "Nat", "Int", "Label", "Tensor[3]", "Tensor[0]", "classes",
           "range(3)", "range(-1)", "range(10000000000)", "inf", "x", "x0", "y", "f", "eps", "0",
           "1", "-1", "0.5", "1e400", "-1e400", "1e-400", "9" * 400, "9007199254740993", "nan",
           "norm(x, 1e400)", "argmax(f(x))", "softmax(f(x0))", "true", "false", "∀", "∃", "⇒",
           "≤", "é", "\t", "\x0c", "\x0b", "\u2028", "\x85", "\x00", "\ufeff", "\r", "\n", "|",
           "&", "$", "\\", "'", '"']
DEEP = ["not ", "- ", "(", "abs(", "exp(", "1 + ", "forall z{i} . ", "exists z{i} . z{i} == x0 and ",
        "forall j{i} in range(2) . ", "forall j{i} in classes . ", "x0 <= 1 => ", "max(1, "]
CLOSE = {"(": ")", "abs(": ")", "exp(": ")", "max(1, ": ")"}


@dataclass
class Stats:
    cases: int = 0
    accepted: int = 0
    refused: int = 0
    ran: int = 0
    refused_at_run: int = 0  # a RobustspecError from loss/holds (e.g. an input that does not fit)
    slowest: tuple[float, str] = (0.0, "")
    failures: list[str] = field(default_factory=list)


class Hang(Exception):
    pass


def _alarm(_sig, _frame):
    raise Hang()


def mutate(text: str, rng: random.Random) -> str:
    toks = TOKEN.findall(text)
    for _ in range(rng.choice([1, 1, 1, 2, 3, 5])):
        kind = rng.random()
        i = rng.randrange(len(toks) + 1) if toks else 0
        if kind < 0.18 and toks:
            del toks[min(i, len(toks) - 1)]
        elif kind < 0.30 and toks:
            j = min(i, len(toks) - 1)
            toks.insert(j, toks[j])
        elif kind < 0.42 and len(toks) > 1:
            j = min(i, len(toks) - 2)
            toks[j], toks[j + 1] = toks[j + 1], toks[j]
        elif kind < 0.72:
            toks.insert(i, rng.choice([" ", ""]) + rng.choice(INSERTS) + rng.choice([" ", ""]))
        elif kind < 0.80:
            toks = toks[:i]
        else:  # nest deeply just before a token, closing where the token's atom ends
            opener = rng.choice(DEEP)
            depth = rng.choice([2, 20, 60, 120, 300, 600])
            prefix = "".join(opener.format(i=k) for k in range(depth))
            toks.insert(i, prefix)
            if opener in CLOSE and i + 1 < len(toks):
                toks.insert(i + 2, CLOSE[opener] * depth)
    return "".join(toks)


def _model(k: int):
    w = torch.linspace(-1.0, 1.0, k)
    b = torch.linspace(0.0, 1.0, k)

    def f(x):
        return x.flatten(1).mean(1, keepdim=True) * w + b
    return f


def _args(prop, k: int) -> dict | None:
    args = {}
    for name, ty in prop.args:
        if ty.kind == "int":
            args[name] = torch.randint(0, k, (2,))
        elif ty.shape == ():
            args[name] = torch.rand(2)
        elif ty.shape is None:
            args[name] = torch.rand(2, 784)
        elif all(isinstance(d, int) for d in ty.shape) and 0 < torch.Size(ty.shape).numel() <= 4096:
            args[name] = torch.rand(2, *ty.shape)
        else:
            return None  # symbolic or huge shapes: nothing sensible to feed
    return args


def run_case(text: str, path: Path, stats: Stats, check_seconds: float = 5.0,
             run_seconds: float = 20.0) -> None:
    """One mutant through check_file (and, if accepted, holds and loss). Failures are recorded
    with the mutant, not raised, so a run reports all it found."""
    stats.cases += 1
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    start = time.perf_counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, check_seconds)
        try:
            spec, diags = check_file(path)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if spec is None:
            stats.refused += 1
            assert diags and any(d.severity == "error" for d in diags), "refused without an error"
            for d in diags:
                head = d.render().splitlines()[0]
                assert head.startswith(f"{path}:{d.span.line}:{d.span.col}: error: ") \
                    and d.span.line >= 1 and d.span.col >= 1, f"no file:line:col: {head}"
                assert d.hint, f"no hint: {d.render()}"
        else:
            stats.accepted += 1
            for name in spec:
                prop = spec[name]
                nets = spec.networks
                outs = [t.out for t in nets.values()]
                k = next((o[0] for o in outs if o and isinstance(o[0], int) and 0 < o[0] <= 1000), 10)
                args = _args(prop, k)
                if args is None:
                    continue
                models = {n: _model(k) for n in nets}
                signal.setitimer(signal.ITIMER_REAL, run_seconds)
                try:
                    prop.holds(networks=models, **args, steps=2)
                    prop.loss(networks=models, **args, steps=2)
                    stats.ran += 1
                except RobustspecError:
                    stats.refused_at_run += 1
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
    except Hang:
        stats.failures.append(f"HANG (> {check_seconds}/{run_seconds} s)\n{text!r}")
    except Exception as e:  # noqa: BLE001 - the point is to catch whatever escapes
        tb = traceback.format_exception(e)[-6:]
        stats.failures.append(f"{type(e).__name__}: {e}\n{''.join(tb)}\n{text!r}")
    finally:
        signal.signal(signal.SIGALRM, old)
    took = time.perf_counter() - start
    if took > stats.slowest[0]:
        stats.slowest = (took, text)


def fuzz(iterations: int, seed: int, tmp: Path, progress: bool = False) -> Stats:
    rng = random.Random(seed)
    seeds = [p.read_text(encoding="utf-8") for p in sorted(SPECS.glob("*.spec"))]
    stats = Stats()
    path = tmp / "mutant.spec"
    for i in range(iterations):
        run_case(mutate(rng.choice(seeds), rng), path, stats)
        if progress and (i + 1) % 500 == 0:
            print(f"{i + 1} cases, {len(stats.failures)} failures", file=sys.stderr, flush=True)
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--show", type=int, default=5, help="failures to print in full")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        stats = fuzz(a.iterations, a.seed, Path(tmp), progress=True)
    took = time.perf_counter() - start
    print(f"{stats.cases} mutants (seed {a.seed}) in {took:.1f} s: {stats.refused} refused with a "
          f"diagnostic, {stats.accepted} accepted ({stats.ran} properties ran holds+loss, "
          f"{stats.refused_at_run} refused cleanly at run time); slowest case "
          f"{stats.slowest[0]:.2f} s; {len(stats.failures)} failures")
    for f in stats.failures[:a.show]:
        print("\n---\n" + f[:3000])
    return 1 if stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())
