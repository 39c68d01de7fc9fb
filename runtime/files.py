"""Atomic file writes: a killed run leaves the old file or the new one, never a torn one.

Everything a run writes (checkpoints, histories, results, plots, counterexamples) goes through
`atomic_write`: write a temporary file in the same folder, fsync it, then rename over the target.
A run killed mid-write leaves its `.NAME.PID.tmp`; the next write of NAME (and a resume) removes
those of dead processes, never a live process's.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import IO, Callable


_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.tmp")


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (when unsure, say yes: a live writer's file is kept)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the temporary files (of `name`, or of any file) that dead writers left in
    `folder`; returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.fullmatch(entry.name)
        if m and (name is None or m["name"] == name) and not _alive(int(m["pid"])):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(f)` on a temporary binary file, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
