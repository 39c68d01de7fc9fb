"""Download the official dataset files, resumably and with checksum verification.

Downloads go to ``<file>.part`` and are renamed into place only once complete and verified, so an
interrupted or corrupt download is never mistaken for data. Re-running resumes a ``.part`` with
an HTTP Range request. Every network or checksum problem is a :class:`FetchError` (a
:class:`~robustspec.runtime.data.DataError`) with a message fit for the command line.
"""

from __future__ import annotations

import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from . import data
from .data import Checksum, DataError, file_matches, normalize_name

__all__ = ["FetchError", "OFFICIAL_URLS", "dataset_files", "download", "fetch", "target_dir"]


class FetchError(DataError):
    """A download failed (network, HTTP or checksum); the message says what to do next."""


OFFICIAL_URLS = {
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    "gtsrb": "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370",
}

_USER_AGENT = "robustspec-fetch/0.1 (+https://github.com/)"
_CHUNK = 1 << 16


def dataset_files(name: str) -> dict[str, Checksum]:
    """File name -> expected checksum for every file of ``name`` (read at call time)."""
    name = normalize_name(name)
    return dict(data.FASHION_MNIST_FILES if name == "fashion-mnist" else data.GTSRB_FILES)


def target_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`fetch` puts ``name``: ``<base>/<name>`` for the first base of the search path.

    A ``data_dir`` named after the dataset, or already holding some of its files (in any state:
    a dangling symlink counts, as it does for loading), is used as is (not ``gtsrb/gtsrb``).
    """
    name = normalize_name(name)
    base = data.search_path(data_dir)[0]
    if base.name == name or any(os.path.lexists(base / f) for f in dataset_files(name)):
        return base  # the files already live right here
    return base / name


def _base_url(name: str, base_url: str | None) -> str:
    base = base_url or os.environ.get("ROBUSTSPEC_MIRROR") or OFFICIAL_URLS[name]
    return base.replace("{dataset}", name).rstrip("/")


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _network_error(url: str, err: BaseException, part: Path) -> FetchError:
    reason = getattr(err, "reason", None) or err
    kept = (f" The partial download is kept in {part}; run the same command again to resume."
            if part.exists() and part.stat().st_size else "")
    return FetchError(f"network error while downloading {url}: {reason}.{kept} Check the "
                      f"connection, or use a mirror with --mirror/$ROBUSTSPEC_MIRROR.")


def _total_from_content_range(value: str | None) -> int | None:
    m = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", value or "")
    return int(m.group(3)) if m and m.group(3) != "*" else None


def _transfer(url: str, part: Path, *, timeout: float, progress: bool, desc: str) -> None:
    """Bring ``part`` to the full content of ``url``, resuming from its current size."""
    from tqdm.auto import tqdm

    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:
            return  # the part is already complete (or stale: the checksum will tell)
        raise FetchError(f"download failed: {url} answered HTTP {e.code} {e.reason}. "
                         f"Check the URL or mirror (--mirror/$ROBUSTSPEC_MIRROR).") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _network_error(url, e, part) from None

    with response:
        if start and response.status == 206:
            total = _total_from_content_range(response.headers.get("Content-Range"))
            m = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range") or "")
            if not m or int(m.group(1)) != start:
                raise FetchError(f"{url}: the server resumed at the wrong offset "
                                 f"({response.headers.get('Content-Range')!r}); delete {part} "
                                 f"and run again.")
            mode = "ab"
        else:  # a full answer: the server ignored the range, start over
            start = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        try:
            out = open(part, mode)
        except OSError as e:
            raise FetchError(f"cannot write {part}: {e.strerror or e}") from None
        with out, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                       unit_divisor=1024, desc=desc, disable=not progress, leave=False,
                       file=sys.stderr) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    out.close()
                    raise _network_error(url, e, part) from None
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as e:
                    raise FetchError(f"cannot write {part}: {e.strerror or e}") from None
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size < total:
        raise FetchError(f"download of {url} stopped at {size} of {total} bytes. The partial "
                         f"download is kept in {part}; run the same command again to resume.")


def download(url: str, dest: str | os.PathLike, *, checksum: Checksum | None = None,
             progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part`` (resumed if present), verify, rename.

    A checksum mismatch after a resumed download retries once from scratch (the old part may
    have come from a different file); a mismatch on a fresh download deletes the part and fails.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(f"cannot create {dest.parent}: {e.strerror or e}") from None
    for attempt in range(2):
        resumed = part.exists() and part.stat().st_size > 0
        _transfer(url, part, timeout=timeout, progress=progress, desc=dest.name)
        if checksum is None or file_matches(part, checksum):
            os.replace(part, dest)
            return dest
        part.unlink()
        if not resumed or attempt:
            raise FetchError(
                f"checksum mismatch for {dest.name} downloaded from {url} (expected md5 "
                f"{checksum.md5}); the file is corrupt or not the official release and was "
                f"deleted. Run again, try another mirror, or pass --no-verify (verify=False) "
                f"if you trust this source.")
        _say(progress, f"{dest.name}: resumed download failed verification; starting over")
    raise AssertionError("unreachable")


def _loads_anyway(name: str, folder: Path, fname: str) -> bool:
    """A GTSRB archive re-encoded by a public copy differs from the official md5 but loads:
    the loader checks structure, so fetching must not throw such a copy away."""
    if name != "gtsrb":
        return False
    split = "train" if fname == data.GTSRB_TRAIN_ZIP else "test"
    try:
        data.gtsrb_index(folder, split)
    except (data.DataError, OSError):
        return False
    return True


def fetch(name: str, data_dir: str | os.PathLike | None = None, base_url: str | None = None,
          progress: bool = True, *, verify: bool = True, force: bool = False,
          timeout: float = 60.0, log: Callable[[str], None] | None = None) -> Path:
    """Download every official file of ``name`` into :func:`target_dir`; return that folder.

    Files already present and valid are kept; a present file failing its checksum is replaced.
    ``base_url`` (else ``$ROBUSTSPEC_MIRROR``, else the official site) is the folder URL the files
    are fetched from; ``{dataset}`` in it is replaced by the dataset name. ``verify=False`` skips
    checksums (e.g. for an unofficial mirror). ``force`` re-downloads everything.
    """
    name = normalize_name(name)
    say = log or (lambda msg: _say(progress, msg))
    folder = target_dir(name, data_dir)
    base = _base_url(name, base_url)
    for fname, checksum in dataset_files(name).items():
        dest = folder / fname
        if force:
            for stale in (dest, dest.with_name(fname + ".part")):
                if stale.exists():
                    stale.unlink()
        if dest.exists():
            if not verify or file_matches(dest, checksum):
                say(f"{name}: {fname} already present")
                continue
            if _loads_anyway(name, folder, fname):
                say(f"{name}: {fname} is not the official release (md5 differs) but is a "
                    f"readable GTSRB archive; kept (--force replaces it)")
                continue
            # the download goes to a .part file and replaces this one only once verified
            say(f"{name}: {fname} is corrupt (checksum mismatch); downloading it again")
        url = f"{base}/{fname}"
        say(f"{name}: downloading {url}")
        download(url, dest, checksum=checksum if verify else None, progress=progress,
                 timeout=timeout)
    say(f"{name}: ready in {folder}")
    return folder

