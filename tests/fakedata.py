"""Synthetic datasets in the official formats, shared by the data and CLI tests; and where the
real datasets are, for the tests that use them."""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np

from robustspec.runtime import data
from robustspec.runtime.data import Checksum


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def real_fashion_mnist() -> Path | None:
    """A folder holding all four real Fashion-MNIST files: ../shared/data first, then the places
    robustspec itself looks ($ROBUSTSPEC_DATA, the user cache, Debian's package). Read at import
    time, before any test isolates the environment."""
    bases = [SHARED_DATA, os.environ.get("ROBUSTSPEC_DATA"), data.user_data_dir()]
    folders = [Path(b) / "fashion-mnist" for b in bases if b] + [data.DEBIAN_FASHION_MNIST]
    for folder in folders:
        if all((folder / f).is_file() for f in data.FASHION_MNIST_FILES):
            return folder
    return None


def isolate_data_env(tmp_path: Path, monkeypatch) -> None:
    """Never read or write the user's real data, caches or mirror settings. The native kernels'
    cache stays where it is (it holds no data; a fresh one would rebuild them, 20 s, in every
    process the test starts)."""
    from robustspec.compiler import native

    monkeypatch.setenv("ROBUSTSPEC_NATIVE_CACHE", str(native.cache_dir()))
    for var in ("ROBUSTSPEC_DATA", "ROBUSTSPEC_CACHE", "ROBUSTSPEC_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian" / "fashion-mnist")


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def gz(payload: bytes, mtime: int = 0) -> bytes:
    return gzip.compress(payload, mtime=mtime)


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def write_fashion(folder: Path, n_train: int = 12, n_test: int = 6, seed: int = 0,
                  learnable: bool = False) -> dict:
    """Official-format Fashion-MNIST files; returns the arrays and their digests.

    learnable: dark noise with a bright row band per class, so a tiny model can learn it;
    otherwise uniform noise.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out, sums = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        img_name, lab_name = data._FASHION_SPLIT_FILES[split]
        labels = (np.arange(n) % 10).astype(np.uint8)
        if learnable:
            images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
            for i, c in enumerate(labels):
                images[i, 2 * c + 4:2 * c + 7] = 230
        else:
            images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for fname, arr in ((img_name, images), (lab_name, labels)):
            raw = idx_bytes(arr)
            packed = gz(raw)
            (folder / fname).write_bytes(packed)
            sums[fname] = Checksum(md5(packed), md5(raw))
        out[split] = (images, labels)
    out["checksums"] = sums
    return out
