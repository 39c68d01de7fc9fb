"""Dataset loading for Fashion-MNIST and GTSRB from their official file formats.

The loaders read the files the datasets are distributed as (IDX ``.gz`` files, GTSRB zip archives
or their extracted folders) with the standard library, numpy and Pillow only, so that no
torchvision is needed. Every structural problem (truncated file, wrong magic, count mismatch,
checksum mismatch, undecodable image) is a :class:`DataError` naming the file and saying how to
fix it; nothing is ever loaded partially. Processed arrays are cached on disk because decoding the
39209 GTSRB training images takes seconds while reading the cache takes milliseconds.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import hashlib
import io
import json
import math
import os
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from robustspec.compiler.registry import Registry

from .files import atomic_write
from .registries import Names

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "GTSRB_CLASSES",
    "GTSRB_FILES",
    "Checksum",
    "DataError",
    "Dataset",
    "default_cache_dir",
    "candidate_dirs",
    "file_matches",
    "find_dataset_dir",
    "load_dataset",
    "load_fashion_mnist",
    "load_gtsrb",
    "normalize_name",
    "parse_idx",
    "read_idx",
    "search_path",
    "user_data_dir",
]


from robustspec.dsl.errors import DataError, InputError  # noqa: E402  (one hierarchy: dsl/errors.py)


# name -> DatasetEntry (loader and its options), filled at the end of this module; a new
# dataset is one more DATASET_LOADERS.register(...) call
DATASET_LOADERS: Registry = Registry("dataset", DataError,
                                     aliases={"fashionmnist": "fashion-mnist",
                                              "fmnist": "fashion-mnist"})
DATASETS = Names(DATASET_LOADERS)  # the names, in order; a live view of the registry
SPLITS = ("train", "test")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

GTSRB_CLASSES = [
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)",
    "Speed limit (60km/h)", "Speed limit (70km/h)", "Speed limit (80km/h)",
    "End of speed limit (80km/h)", "Speed limit (100km/h)", "Speed limit (120km/h)",
    "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 metric tons prohibited", "No entry", "General caution",
    "Dangerous curve to the left", "Dangerous curve to the right", "Double curve", "Bumpy road",
    "Slippery road", "Road narrows on the right", "Road work", "Traffic signals", "Pedestrians",
    "Children crossing", "Bicycles crossing", "Beware of ice/snow", "Wild animals crossing",
    "End of all speed and passing limits", "Turn right ahead", "Turn left ahead", "Ahead only",
    "Go straight or right", "Go straight or left", "Keep right", "Keep left",
    "Roundabout mandatory", "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
]


@dataclass(frozen=True)
class Checksum:
    """Expected digests of one distributed file.

    ``md5`` is the md5 of the file as distributed; ``raw_md5`` (gzip files only) is the md5 of its
    decompressed bytes, which also accepts re-compressed copies such as Debian's
    ``dataset-fashion-mnist`` (same data, different gzip header).
    """

    md5: str
    raw_md5: str | None = None


# Looked up at call time (tests and mirrors may patch entries).
FASHION_MNIST_FILES: dict[str, Checksum] = {
    "train-images-idx3-ubyte.gz": Checksum(
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte.gz": Checksum(
        "25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte.gz": Checksum(
        "bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte.gz": Checksum(
        "bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}
_FASHION_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# The official archives. Public re-encoded copies (such as the development copy with 32x32
# images) differ, so loading GTSRB checks structure, not these digests; fetching checks them.
GTSRB_FILES: dict[str, Checksum] = {
    "GTSRB_Final_Training_Images.zip": Checksum("f33fd80ac59bff73c82d25ab499e03a3"),
    "GTSRB_Final_Test_Images.zip": Checksum("c7e4e6327067d32654124b0fe9e82185"),
    "GTSRB_Final_Test_GT.zip": Checksum("fe31e9c9270bbcd7b84b7f21a9d9d9e5"),
}
GTSRB_TRAIN_ZIP = _GTSRB_TRAIN_ZIP = "GTSRB_Final_Training_Images.zip"
_GTSRB_TEST_ZIP = "GTSRB_Final_Test_Images.zip"
_GTSRB_GT_ZIP = "GTSRB_Final_Test_GT.zip"
_GTSRB_GT_CSV = "GT-final_test.csv"

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

# Patched in tests; where Debian's ``dataset-fashion-mnist`` package installs the files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_CACHE_VERSION = 1


def _fetch_hint(name: str) -> str:
    lines = [f"  robustspec data fetch {name}"]
    if name == "fashion-mnist":
        lines.append("  sudo apt-get install dataset-fashion-mnist   "
                     f"(installs to {DEBIAN_FASHION_MNIST})")
    lines.append(f"  or pass --data-dir (or set $ROBUSTSPEC_DATA) to a folder holding {name}/")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The returned dataset


@dataclass
class Dataset:
    """Images ``x`` (float32 in [0, 1], ``[N, C, H, W]``) with integer labels ``y`` (``[N]``).

    Images keep their shape so that convolutional models can use it; :meth:`flat` gives the
    ``[N, D]`` view the paper's MLP takes. ``classes`` names label ``i`` as ``classes[i]``.
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str
    classes: list[str] | None = None

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise InputError(f"{self.name}: {self.x.shape[0]} images but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(1, 28, 28)``."""
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes: from ``classes`` when named, else from the labels present."""
        if self.classes is not None:
            return len(self.classes)
        return int(self.y.max()) + 1 if len(self) else 0

    def flat(self) -> torch.Tensor:
        """The images as ``[N, D]`` (a view, no copy)."""
        return self.x.reshape(self.x.shape[0], -1)

    def subset(self, index: torch.Tensor | np.ndarray | Sequence[int] | slice) -> "Dataset":
        """The examples at ``index`` (a slice, index list or boolean mask), same class names."""
        if not isinstance(index, slice):
            index = torch.as_tensor(np.asarray(index))
        return Dataset(self.x[index], self.y[index], self.name, self.classes)


# --------------------------------------------------------------------------------------------
# Names, folders and the search path


def normalize_name(name: str) -> str:
    """Canonical dataset name (``"Fashion_MNIST"`` -> ``"fashion-mnist"``); DataError if unknown."""
    key = str(name).strip().lower().replace("_", "-")
    if key in DATASET_LOADERS:
        return DATASET_LOADERS.resolve(key)
    close = difflib.get_close_matches(key, DATASETS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise DataError(f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(DATASETS)}.")


def _check_split(split: str) -> str:
    if split not in SPLITS:
        close = difflib.get_close_matches(str(split), SPLITS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown split {split!r}.{hint} Use 'train' or 'test'.")
    return split


def _xdg_cache_home() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) if xdg else Path.home() / ".cache"


def user_data_dir() -> Path:
    """The per-user download folder: ``$XDG_CACHE_HOME/robustspec/data`` (or ``~/.cache/...``)."""
    return _xdg_cache_home() / "robustspec" / "data"


def default_cache_dir() -> Path:
    """Where processed arrays are cached: ``$ROBUSTSPEC_CACHE``, else
    ``<XDG cache>/robustspec/processed``."""
    env = os.environ.get("ROBUSTSPEC_CACHE")
    return Path(env) if env else _xdg_cache_home() / "robustspec" / "processed"


def search_path(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Base folders searched in order: ``data_dir``, ``$ROBUSTSPEC_DATA``, :func:`user_data_dir`."""
    bases: list[Path] = []
    if data_dir is not None:
        bases.append(Path(data_dir).expanduser())
    env = os.environ.get("ROBUSTSPEC_DATA")
    if env:
        bases.append(Path(env).expanduser())
    bases.append(user_data_dir())
    return bases


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every folder that may hold ``name``, in priority order.

    Each base contributes ``<base>/<name>`` and ``<base>`` itself (so a data dir may point straight
    at the folder with the files); Fashion-MNIST finally tries Debian's install location.
    """
    name = normalize_name(name)
    out: list[Path] = []
    for base in search_path(data_dir):
        for cand in (base / name, base):
            if cand not in out:
                out.append(cand)
    if name == "fashion-mnist" and DEBIAN_FASHION_MNIST not in out:
        out.append(DEBIAN_FASHION_MNIST)
    return out


def _fashion_file(folder: Path, fname: str) -> Path | None:
    """The gzip file, or an already-decompressed copy of it."""
    for cand in (folder / fname, folder / fname[: -len(".gz")]):
        if cand.is_file():
            return cand
    return None


def _gtsrb_dir_root(folder: Path, part: str) -> Path | None:
    """An extracted ``GTSRB/<part>/Images`` folder under ``folder`` (or ``<part>/Images``)."""
    for cand in (folder / "GTSRB" / part / "Images", folder / part / "Images"):
        if cand.is_dir():
            return cand
    return None


def _gtsrb_test_labels(folder: Path) -> Path | None:
    for cand in (folder / _GTSRB_GT_ZIP, folder / _GTSRB_GT_CSV,
                 folder / "GTSRB" / _GTSRB_GT_CSV,
                 folder / "GTSRB" / "Final_Test" / "Images" / _GTSRB_GT_CSV,
                 folder / "Final_Test" / "Images" / _GTSRB_GT_CSV):
        if cand.is_file():
            return cand
    return None


def _missing(name: str, split: str, folder: Path) -> list[str]:
    """What ``folder`` lacks for ``name``/``split``; empty when it has everything."""
    if not folder.is_dir():
        return ["folder does not exist"]
    if name == "fashion-mnist":
        return [f for f in _FASHION_SPLIT_FILES[split] if _fashion_file(folder, f) is None]
    if split == "train":
        if (folder / _GTSRB_TRAIN_ZIP).is_file() or _gtsrb_dir_root(folder, "Final_Training"):
            return []
        return [f"{_GTSRB_TRAIN_ZIP} (or extracted GTSRB/Final_Training/Images/)"]
    missing = []
    if not ((folder / _GTSRB_TEST_ZIP).is_file() or _gtsrb_dir_root(folder, "Final_Test")):
        missing.append(f"{_GTSRB_TEST_ZIP} (or extracted GTSRB/Final_Test/Images/)")
    if _gtsrb_test_labels(folder) is None:
        missing.append(f"{_GTSRB_GT_ZIP} (or {_GTSRB_GT_CSV})")
    return missing


def _dataset_entries(name: str) -> list[str]:
    """The names a folder holding ``name`` has (files, archives, extracted folders)."""
    if name == "fashion-mnist":
        return [n for f in FASHION_MNIST_FILES for n in (f, f[: -len(".gz")])]
    return [*GTSRB_FILES, _GTSRB_GT_CSV, "GTSRB", "Final_Training", "Final_Test"]


def _lexists(path: Path) -> bool:
    return os.path.lexists(path)


def _state(path: Path) -> str | None:
    """None for a readable regular file (or a link to one), else what is there instead."""
    import errno

    if path.is_file():
        return None
    if not _lexists(path):
        return "missing"
    try:
        os.stat(path)
    except OSError as e:
        return "a symlink loop" if e.errno == errno.ELOOP else "a dangling symlink"
    if path.is_dir():
        return "a folder, not a file" + (" (through a symlink)" if path.is_symlink() else "")
    return "not a regular file"


def _broken(name: str, split: str, folder: Path) -> list[str]:
    """'path: what is wrong' for each file of ``split`` that ``folder`` lacks or holds broken."""
    if name == "fashion-mnist":
        out = []
        for f in _FASHION_SPLIT_FILES[split]:
            paths = [folder / f, folder / f[: -len(".gz")]]
            if _fashion_file(folder, f) is None:
                there = [p for p in paths if _lexists(p)] or paths[:1]
                out += [f"{p}: {_state(p)}" for p in there]
        return out
    out = []
    for what in _missing(name, split, folder):
        head = what.split(" (")[0]
        path = folder / head
        out.append(f"{path}: {_state(path)}" if _lexists(path) else f"{path}: missing"
                   + (f" ({what[len(head) + 2:-1]})" if "(" in what else ""))
    return out


def find_dataset_dir(name: str, split: str = "train",
                     data_dir: str | os.PathLike | None = None) -> Path:
    """The first folder of :func:`candidate_dirs` holding any of the dataset's files.

    A folder that holds any of them, in any state, is the one used: one with a broken or
    missing file of ``split`` (a folder, a dangling symlink or a symlink loop where a file
    belongs) is a DataError naming the file, never a fall-through to another copy. With none
    found, the DataError lists every place looked at.
    """
    name = normalize_name(name)
    _check_split(split)
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"--data-dir {data_dir}: no such folder (a typo would otherwise load "
                        f"data from elsewhere). Get {name} into it with:\n" + _fetch_hint(name))
    report, used = [], None  # used: the first folder holding any of the files, and its problems
    for folder in candidate_dirs(name, data_dir):
        missing = _missing(name, split, folder)
        if not missing:
            if used is None:
                return folder
            report.append(f"  - {folder}: complete, but not used (an earlier folder holds "
                          f"{name} files)")
            continue
        report.append(f"  - {folder}: " + ("; ".join(missing) if missing[0].startswith("folder")
                                           else "missing " + ", ".join(missing)))
        if used is None and folder.is_dir() and any(_lexists(folder / n)
                                                    for n in _dataset_entries(name)):
            used = (folder, _broken(name, split, folder))
    if used is not None:
        folder, problems = used
        raise DataError(
            f"{folder} holds {name} files, so it is the copy used (robustspec never falls back "
            f"to another copy), but the {split} split is not readable there:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\nLooked in:\n" + "\n".join(report)
            + "\nReplace or remove those entries; get the files with one of:\n" + _fetch_hint(name))
    raise DataError(
        f"{name} ({split} split) not found. Looked in:\n" + "\n".join(report)
        + "\nGet it with one of:\n" + _fetch_hint(name))


# --------------------------------------------------------------------------------------------
# Checksums and IDX


def _md5_stream(chunks: Iterable[bytes]) -> str:
    h = hashlib.md5()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def _file_chunks(f, size: int = 1 << 20) -> Iterable[bytes]:
    while chunk := f.read(size):
        yield chunk


def file_matches(path: str | os.PathLike, checksum: Checksum) -> bool:
    """Whether ``path`` matches ``checksum`` (as distributed, or by its decompressed bytes).

    Gzip data (recognised by its magic, whatever the file name) is compared by its decompressed
    bytes against ``raw_md5``, as is an already-decompressed copy.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if _md5_stream(_file_chunks(f)) == checksum.md5:
                return True
        if checksum.raw_md5 is None:
            return False
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            return _md5_stream(_file_chunks(f)) == checksum.raw_md5
    except (OSError, EOFError, zlib.error):
        return False


_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(data: bytes, *, expected_magic: int | None = None,
              source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes (big-endian magic ``00 00 <type> <ndim>``, dims, raw data).

    Raises DataError on a wrong magic or a size that disagrees with the header: a truncated file
    is never loaded partially.
    """
    if len(data) < 4:
        raise DataError(f"{source}: truncated IDX file ({len(data)} bytes, no header)")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{source}: wrong IDX magic number 0x{magic:08x} "
                        f"(expected 0x{expected_magic:08x}); not the expected IDX file")
    dtype = _IDX_DTYPES.get(data[2])
    if data[0] != 0 or data[1] != 0 or dtype is None:
        raise DataError(f"{source}: not an IDX file (magic 0x{magic:08x})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX file (header needs {header} bytes, "
                        f"file has {len(data)})")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    need = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != need:
        what = "truncated" if len(data) < need else "oversized"
        raise DataError(f"{source}: {what} IDX file: header says {dims} ({need} bytes) "
                        f"but the data has {len(data)} bytes")
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


_REFETCH = ("Re-fetch it with `robustspec data fetch fashion-mnist` (which replaces corrupt "
            "files), or load with verify=False to skip the check.")


def read_idx(path: str | os.PathLike, *, expected_magic: int | None = None,
             checksum: Checksum | None = None) -> np.ndarray:
    """Read a (gzip-compressed or plain) IDX file, verifying ``checksum`` when given."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    stored_ok = checksum is not None and hashlib.md5(raw).hexdigest() == checksum.md5
    if raw[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(f"{path}: truncated or corrupt gzip data ({e}). "
                            f"{_REFETCH}") from None
    else:
        data = raw
    if checksum is not None and not stored_ok:
        digest = hashlib.md5(data).hexdigest()
        if digest != checksum.raw_md5:
            raise DataError(
                f"{path}: checksum mismatch, the file is corrupt or not the official release "
                f"(md5 of the data {digest}, expected {checksum.raw_md5}; md5 of the file "
                f"expected {checksum.md5}). {_REFETCH}")
    return parse_idx(data, expected_magic=expected_magic, source=str(path))


# --------------------------------------------------------------------------------------------
# Selection helpers shared by the loaders


def _class_list(classes, total: int) -> list[int] | None:
    """Normalise a class selection: None (all), an int k (classes 0..k-1) or explicit ids."""
    if classes is None:
        return None
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        if not 1 <= classes <= total:
            raise InputError(f"classes={classes}: must be between 1 and {total}")
        return list(range(int(classes)))
    ids = [int(c) for c in classes]
    bad = [c for c in ids if not 0 <= c < total]
    if bad:
        raise InputError(f"classes {bad} out of range 0..{total - 1}")
    if len(set(ids)) != len(ids) or not ids:
        raise InputError(f"classes must be distinct and non-empty, got {ids}")
    return ids


def _select(labels: np.ndarray, class_ids: list[int] | None,
            limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the kept examples (file order) and their labels remapped to 0..n-1.

    ``limit`` keeps ``limit`` examples spread evenly over the split (deterministic), so that a
    limited GTSRB training set still covers every class instead of only the first folder.
    """
    if class_ids is None:
        index = np.arange(len(labels))
        new = labels.astype(np.int64)
    else:
        remap = np.full(max(int(labels.max(initial=0)), max(class_ids)) + 1, -1, np.int64)
        remap[class_ids] = np.arange(len(class_ids))
        new_all = remap[labels]
        index = np.flatnonzero(new_all >= 0)
        new = new_all[index]
    if limit is not None:
        if limit < 1:
            raise InputError(f"limit must be positive, got {limit}")
        if limit < len(index):
            pick = (np.arange(limit, dtype=np.int64) * len(index)) // limit
            index, new = index[pick], new[pick]
    return index, new


def _names(all_names: list[str], class_ids: list[int] | None) -> list[str]:
    return list(all_names) if class_ids is None else [all_names[c] for c in class_ids]


def _to_dataset(x: np.ndarray, y: np.ndarray, name: str, classes: list[str]) -> Dataset:
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(255.0)
    return Dataset(xt, torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)), name, classes)


# --------------------------------------------------------------------------------------------
# On-disk cache of decoded arrays


def _fingerprint(paths: Iterable[Path]) -> list:
    """Identity of the source files: a changed or replaced file invalidates the cache."""
    out = []
    for p in paths:
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return out


def _cache_path(folder: Path | None, name: str, split: str, key: dict) -> Path:
    blob = json.dumps({"v": _CACHE_VERSION, "name": name, "split": split, **key}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:20]
    return (folder or default_cache_dir()) / f"{name}-{split}-{digest}.npz"


def _cache_read(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["x"], z["y"]
    except FileNotFoundError:
        return None
    except Exception:  # a damaged cache entry is rebuilt, never trusted
        return None


def _cache_write(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write atomically so a crash never leaves a half-written entry; a cache that cannot be
    written is a warning, not an error."""
    try:
        atomic_write(path, lambda f: np.savez(f, x=x, y=y))
    except OSError as e:
        warnings.warn(f"could not write dataset cache {path}: {e}", RuntimeWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# Fashion-MNIST


def load_fashion_mnist(split: str = "train", data_dir: str | os.PathLike | None = None,
                       limit: int | None = None, *, classes=None, verify: bool = True,
                       cache: bool = True, cache_dir: str | os.PathLike | None = None) -> Dataset:
    """Fashion-MNIST as ``[N, 1, 28, 28]`` images.

    ``verify`` checks each file against the official digest (of the file or of its decompressed
    data); ``classes`` selects a subset (int k = first k classes, or a list of ids) relabelled
    0..n-1; ``limit`` keeps that many examples spread evenly over the split.
    """
    _check_split(split)
    folder = find_dataset_dir("fashion-mnist", split, data_dir)
    img_name, lab_name = _FASHION_SPLIT_FILES[split]
    img_path, lab_path = _fashion_file(folder, img_name), _fashion_file(folder, lab_name)
    class_ids = _class_list(classes, len(FASHION_MNIST_CLASSES))

    entry = None
    if cache:
        key = {"sources": _fingerprint([img_path, lab_path]), "verify": bool(verify)}
        entry = _cache_path(Path(cache_dir) if cache_dir else None, "fashion-mnist", split, key)
    hit = _cache_read(entry) if entry else None
    if hit is not None:
        images, labels = hit
    else:
        images = read_idx(img_path, expected_magic=IDX_IMAGES_MAGIC,
                          checksum=FASHION_MNIST_FILES[img_name] if verify else None)
        labels = read_idx(lab_path, expected_magic=IDX_LABELS_MAGIC,
                          checksum=FASHION_MNIST_FILES[lab_name] if verify else None)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(f"{img_path}: expected uint8 images [N, H, W], got {images.dtype} "
                            f"{images.shape}")
        if labels.ndim != 1:
            raise DataError(f"{lab_path}: expected a label vector, got shape {labels.shape}")
        if len(images) != len(labels):
            raise DataError(f"count mismatch: {img_path} has {len(images)} images but "
                            f"{lab_path} has {len(labels)} labels")
        if len(labels) == 0:
            raise DataError(f"{img_path} and {lab_path} hold no examples (a valid but empty IDX "
                            f"pair); they are not the Fashion-MNIST release. {_REFETCH}")
        if len(labels) and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DataError(f"{lab_path}: label {int(labels.max())} out of range 0..9")
        images = images[:, None]
        labels = labels.astype(np.int64)
        if entry:
            _cache_write(entry, images, labels)
    index, y = _select(labels, class_ids, limit)
    x = images if len(index) == len(images) else images[index]
    return _to_dataset(x, y, "fashion-mnist", _names(FASHION_MNIST_CLASSES, class_ids))


# --------------------------------------------------------------------------------------------
# GTSRB


class _Archive:
    """Uniform read access to a zip archive or an extracted folder, by zip-style member name."""

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_file():
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as e:
                raise DataError(f"{path}: not a readable zip archive ({e}); the download is "
                                f"probably incomplete. Re-fetch with "
                                f"`robustspec data fetch gtsrb`.") from None

    def __enter__(self) -> "_Archive":
        return self

    def __exit__(self, *exc) -> None:
        if self._zip is not None:
            self._zip.close()

    def names(self) -> list[str]:
        if self._zip is not None:
            return self._zip.namelist()
        out = []
        for dirpath, _, files in os.walk(self.path):
            rel = Path(dirpath).relative_to(self.path).as_posix()
            out.extend(f if rel == "." else f"{rel}/{f}" for f in files)
        return out

    def read(self, name: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(name)
            return (self.path / name).read_bytes()
        except KeyError:
            raise DataError(f"{self.path}: missing {name}") from None
        except FileNotFoundError:
            raise DataError(f"{self.path}: missing {name}") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise DataError(f"{self.path}: cannot read {name} ({e}); the archive is corrupt. "
                            f"Re-fetch with `robustspec data fetch gtsrb`.") from None

    def where(self, name: str) -> str:
        return f"{self.path}:{name}" if self._zip is not None else str(self.path / name)


_GTSRB_COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")


def _read_gtsrb_csv(data: bytes, where: str, prefix: str) -> tuple[list[str], np.ndarray]:
    """Member names (``prefix`` + Filename) and an int array of the 7 numeric columns."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not a text CSV file ({e})") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";")
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:8]] != list(_GTSRB_COLUMNS):
        raise DataError(f"{where}: unexpected CSV header {header}; expected "
                        f"{';'.join(_GTSRB_COLUMNS)}")
    files, rows = [], []
    for lineno, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        try:
            if len(row) < 8:
                raise ValueError(f"{len(row)} columns, expected 8")
            rows.append([int(v) for v in row[1:8]])
        except ValueError as e:
            raise DataError(f"{where}, line {lineno}: malformed row {row} ({e})") from None
        files.append(prefix + row[0].strip())
    table = np.array(rows, dtype=np.int64).reshape(-1, 7)
    if len(table) and (table[:, 6].min() < 0 or table[:, 6].max() >= len(GTSRB_CLASSES)):
        raise DataError(f"{where}: ClassId outside 0..{len(GTSRB_CLASSES) - 1}")
    return files, table


def _gtsrb_sources(folder: Path, split: str) -> list[Path]:
    """The files whose identity keys the cache (cheap: no archive is opened)."""
    if split == "train":
        zpath = folder / _GTSRB_TRAIN_ZIP
        if zpath.is_file():
            return [zpath]
        images = _gtsrb_dir_root(folder, "Final_Training")
        return [images] + sorted(images.glob("*/GT-*.csv"))
    zpath = folder / _GTSRB_TEST_ZIP
    return [zpath if zpath.is_file() else _gtsrb_dir_root(folder, "Final_Test"),
            _gtsrb_test_labels(folder)]


def _count_check(names: list[str], files: list[str], where: str) -> None:
    """Every annotated image exists and every image is annotated (no silent partial load)."""
    present = {n for n in names if n.lower().endswith(".ppm")}
    wanted = set(files)
    folders = {f.rsplit("/", 1)[0] + "/" for f in files}
    extra = {n for n in present - wanted if n.rsplit("/", 1)[0] + "/" in folders}
    missing = wanted - present
    if missing or extra or len(wanted) != len(files):
        detail = []
        if missing:
            detail.append(f"{len(missing)} annotated images missing (e.g. {min(missing)})")
        if extra:
            detail.append(f"{len(extra)} images without annotation (e.g. {min(extra)})")
        if len(wanted) != len(files):
            detail.append("duplicate file names in the annotations")
        raise DataError(f"{where}: count mismatch between images and labels: "
                        f"{'; '.join(detail)}. Re-fetch with `robustspec data fetch gtsrb`.")


def gtsrb_index(folder: Path, split: str) -> tuple[Path, list[str], np.ndarray]:
    """The image archive/folder, member names of the images and their annotation table; checks
    the structure (annotations, counts) without decoding an image."""
    if split == "train":
        zpath = folder / _GTSRB_TRAIN_ZIP
        root = zpath if zpath.is_file() else folder
        with _Archive(root) as arch:
            names = arch.names()
            pattern = re.compile(r"(?:^|/)Final_Training/Images/(\d{5})/GT-\1\.csv$")
            csvs = sorted(n for n in names if pattern.search(n))
            if not csvs:
                raise DataError(f"{root}: no GTSRB/Final_Training/Images/000NN/GT-000NN.csv "
                                f"annotation files; not a GTSRB training archive")
            files: list[str] = []
            tables = []
            for name in csvs:
                f, t = _read_gtsrb_csv(arch.read(name), arch.where(name),
                                       name.rsplit("/", 1)[0] + "/")
                files += f
                tables.append(t)
        _count_check(names, files, str(root))
        return root, files, np.concatenate(tables)

    zpath = folder / _GTSRB_TEST_ZIP
    root = zpath if zpath.is_file() else folder
    gt = _gtsrb_test_labels(folder)
    if gt.suffix == ".zip":
        with _Archive(gt) as arch:
            members = [n for n in arch.names() if n.rsplit("/", 1)[-1] == _GTSRB_GT_CSV]
            if not members:
                raise DataError(f"{gt}: no {_GTSRB_GT_CSV} inside; not the GTSRB test labels")
            data, where = arch.read(members[0]), arch.where(members[0])
    else:
        data, where = gt.read_bytes(), str(gt)
    with _Archive(root) as arch:
        names = arch.names()
    prefixes = {n.rsplit("/", 1)[0] + "/" for n in names
                if re.search(r"(?:^|/)Final_Test/Images/[^/]+\.ppm$", n)}
    if len(prefixes) != 1:
        raise DataError(f"{root}: expected one GTSRB/Final_Test/Images/ folder of .ppm images, "
                        f"found {len(prefixes)}")
    files, table = _read_gtsrb_csv(data, where, prefixes.pop())
    _count_check(names, files, f"{root} with labels {gt}")
    return root, files, table


def _decode_gtsrb(arch: _Archive, member: str, row: np.ndarray, size: int, grayscale: bool,
                  roi: bool) -> np.ndarray:
    """One image, cropped to its ROI (scaled to the actual pixel size) and resized to size^2."""
    from PIL import Image, UnidentifiedImageError

    data = arch.read(member)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L" if grayscale else "RGB")
            w, h = im.size
            box = (0.0, 0.0, float(w), float(h))
            if roi:
                width, height, x1, y1, x2, y2 = (float(v) for v in row[:6])
                sx = w / width if width > 0 else 1.0
                sy = h / height if height > 0 else 1.0
                # Roi.X2/Y2 act as exclusive edges: with them the official images have the
                # documented >= 5 pixel border on every side.
                cand = (max(0.0, x1 * sx), max(0.0, y1 * sy), min(float(w), x2 * sx),
                        min(float(h), y2 * sy))
                if cand[2] - cand[0] >= 1.0 and cand[3] - cand[1] >= 1.0:
                    box = cand
            # Crop to the enclosing whole pixels first: resize() alone would let its filter
            # read pixels outside the box; the fractional remainder goes to resize().
            left, top = int(box[0]), int(box[1])
            im = im.crop((left, top, math.ceil(box[2]), math.ceil(box[3])))
            out = im.resize((size, size), Image.BILINEAR,
                            box=(box[0] - left, box[1] - top, box[2] - left, box[3] - top))
            return np.asarray(out, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{arch.where(member)}: cannot decode image ({e}); the archive is "
                        f"corrupt. Re-fetch with `robustspec data fetch gtsrb`.") from None


def load_gtsrb(split: str = "train", data_dir: str | os.PathLike | None = None,
               limit: int | None = None, *, size: int = 32, grayscale: bool = True,
               roi: bool = True, classes=10, verify: bool = True, cache: bool = True,
               cache_dir: str | os.PathLike | None = None, progress: bool = False) -> Dataset:
    """GTSRB as ``[N, 1 or 3, size, size]`` images from the official zips or extracted folders.

    ``roi`` crops each sign to its annotated region, scaled from the CSV's Width/Height to the
    real pixel size (re-encoded copies are smaller than the CSV says). ``classes`` defaults to
    the paper's 10-class subset (ids 0..9); None means all 43; selected ids are relabelled 0..n-1
    in the order given. ``verify`` is accepted for symmetry: public copies differ from the
    official archives, so loading checks structure (CSV, image decoding, counts) rather than
    digests; :func:`robustspec.runtime.fetch.fetch` verifies the official digests.
    """
    del verify
    _check_split(split)
    if int(size) < 1:
        raise InputError(f"size must be positive, got {size}")
    size = int(size)
    if limit is not None and limit < 1:
        raise InputError(f"limit must be positive, got {limit}")
    folder = find_dataset_dir("gtsrb", split, data_dir)
    class_ids = _class_list(classes, len(GTSRB_CLASSES))
    names = _names(GTSRB_CLASSES, class_ids)

    # Checked before opening any archive: listing 39k zip members alone costs a few 100 ms.
    entry_full = entry_lim = None
    if cache:
        key = {"sources": _fingerprint(_gtsrb_sources(folder, split)), "size": size,
               "grayscale": bool(grayscale), "roi": bool(roi), "classes": class_ids}
        where = Path(cache_dir) if cache_dir else None
        entry_full = _cache_path(where, "gtsrb", split, {**key, "limit": None})
        hit = _cache_read(entry_full)
        if hit is not None:  # a full decode serves every limit
            pick, y = _select(hit[1], None, limit)
            return _to_dataset(hit[0] if len(pick) == len(hit[1]) else hit[0][pick], y,
                               "gtsrb", names)
        if limit is not None:
            entry_lim = _cache_path(where, "gtsrb", split, {**key, "limit": int(limit)})
            hit = _cache_read(entry_lim)
            if hit is not None:
                return _to_dataset(hit[0], hit[1], "gtsrb", names)

    root, members, table = gtsrb_index(folder, split)
    index, y_all = _select(table[:, 6], class_ids, None)
    if len(index) == 0:
        raise DataError(f"{root}: no {split} images of classes {class_ids}")
    pick, y = _select(y_all, None, limit)  # decode only what is returned

    from tqdm.auto import tqdm

    chosen = index[pick]
    channels = 1 if grayscale else 3
    x = np.empty((len(chosen), size, size, channels), np.uint8)
    with _Archive(root) as arch:
        for i, j in enumerate(tqdm(chosen, desc=f"decoding GTSRB {split}", unit="img",
                                   disable=not progress, leave=False)):
            x[i] = _decode_gtsrb(arch, members[j], table[j], size, grayscale,
                                 roi).reshape(size, size, channels)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    target = entry_full if len(pick) == len(index) else entry_lim
    if target is not None:
        _cache_write(target, x, y)
    return _to_dataset(x, y, "gtsrb", names)


# --------------------------------------------------------------------------------------------
# Dispatch

@dataclass(frozen=True)
class DatasetEntry:
    """A dataset's loader `load(split, data_dir, limit, **options)` and the options it takes."""

    load: object
    options: tuple[str, ...]


class UnknownOption(InputError, TypeError):
    """An option a dataset's loader does not take (a TypeError too, as before)."""


DATASET_LOADERS.register("fashion-mnist", DatasetEntry(
    load_fashion_mnist, ("classes", "verify", "cache", "cache_dir")),
    help="Fashion-MNIST: 60000 + 10000 grayscale 28x28 images of 10 clothing classes")
DATASET_LOADERS.register("gtsrb", DatasetEntry(
    load_gtsrb, ("size", "grayscale", "roi", "classes", "verify", "cache", "cache_dir",
                 "progress")),
    help="GTSRB: German traffic signs, 43 classes (the paper's first 10 by default)")


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
                 limit: int | None = None, **options) -> Dataset:
    """Load ``name`` ("fashion-mnist" or "gtsrb") and ``split`` ("train" or "test").

    ``options`` go to :func:`load_fashion_mnist` or :func:`load_gtsrb`; an unknown option is a
    TypeError naming the closest valid one.
    """
    key = normalize_name(name)
    entry = DATASET_LOADERS.get(key)
    for opt in options:
        if opt not in entry.options:
            close = difflib.get_close_matches(opt, entry.options, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownOption(f"{key}: unknown option {opt!r}.{hint} "
                                f"Options: {', '.join(entry.options)}.")
    return entry.load(split, data_dir, limit, **options)
