"""Source spans and diagnostics.

Every AST node keeps a `Span`; every error a user can cause is a `Diagnostic` rendered as
`file:line:col: error: message`, the source line, a caret under the span, and a `hint:` line.
Errors are collected, not thrown one at a time, so a user sees all of them at once.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .errors import RobustspecError


@dataclass(frozen=True)
class Source:
    """The text of one spec file, kept so diagnostics can quote it."""

    name: str
    text: str

    def line(self, number: int) -> str:
        """Line `number` as the parser counts lines: split at '\\n' only (lark's rule), so a
        form feed, vertical tab, U+0085 or U+2028 inside a line never shifts the line shown."""
        lines = self.text.split("\n")
        return lines[number - 1].removesuffix("\r") if 0 < number <= len(lines) else ""


@dataclass(frozen=True)
class Span:
    """A 1-based, end-exclusive region of a source file."""

    source: Source | None
    line: int
    col: int
    end_line: int
    end_col: int

    @property
    def file(self) -> str:
        return self.source.name if self.source else "<unknown>"

    def text(self) -> str:
        if self.source is None:
            return ""
        if self.line == self.end_line:
            return self.source.line(self.line)[self.col - 1:self.end_col - 1]
        return self.source.line(self.line)[self.col - 1:]

    def __repr__(self) -> str:  # short, so AST reprs stay readable
        return f"{self.file}:{self.line}:{self.col}"


NO_SPAN = Span(None, 0, 0, 0, 0)


@dataclass
class Diagnostic:
    severity: str  # "error" | "warning"
    message: str
    span: Span = NO_SPAN
    hint: str | None = None
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        s = self.span
        head = f"{s.file}:{s.line}:{s.col}: {self.severity}: {self.message}" if s.source else \
            f"{self.severity}: {self.message}"
        out = [head]
        if s.source is not None and s.line > 0:
            src = s.source.line(s.line)
            gutter = f"{s.line:>4} | "
            out.append(gutter + _printable(src))
            end = s.end_col if s.end_line == s.line else len(src) + 1
            width = max(1, end - s.col)
            out.append(" " * (len(gutter) - 2) + "| " + _caret_pad(src, s.col - 1) + "^" * width)
        for note in self.notes:
            out.append(f"note: {note}")
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)


# characters a terminal would turn into a line break, a page break or a jump: shown as a space,
# one character for one, so the caret still lines up
_INVISIBLE = {ord(c): " " for c in "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def _printable(line: str) -> str:
    return line.translate(_INVISIBLE)


def _caret_pad(line: str, width: int) -> str:
    """The blank prefix of a caret line: tabs copied from the source line, so the caret sits
    under its column whatever the terminal's tab width."""
    return "".join("\t" if c == "\t" else " " for c in line[:width]).ljust(width)


class SpecError(RobustspecError):
    """One or more error diagnostics. `str()` renders them all, ready to print."""

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__(self.render())

    def render(self) -> str:
        errors = sum(d.severity == "error" for d in self.diagnostics)
        body = "\n\n".join(d.render() for d in self.diagnostics)
        return body + (f"\n\n{errors} errors" if errors > 1 else "")


class DiagnosticBag:
    """Collects diagnostics during one phase; `raise_if_errors` ends the phase."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def error(self, message: str, span: Span = NO_SPAN, hint: str | None = None,
              notes: Iterable[str] = ()) -> None:
        self.items.append(Diagnostic("error", message, span, hint, list(notes)))

    def warning(self, message: str, span: Span = NO_SPAN, hint: str | None = None) -> None:
        self.items.append(Diagnostic("warning", message, span, hint))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise SpecError(self.errors)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt name, or None when nothing is close."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
