"""Dataset loading and fetching, on tiny synthetic files in the official formats.

The real-data tests at the end read /work/shared/data (found relative to the repository) and
skip with a reason when it is absent.
"""

from __future__ import annotations

import gzip
import http.server
import io
import os
import re
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustspec.runtime import data, fetch
from robustspec.runtime.data import Checksum, DataError, Dataset, load_dataset
from robustspec.runtime.fetch import FetchError

from fakedata import gz, idx_bytes, isolate_data_env, md5, real_fashion_mnist, write_fashion

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_FASHION = real_fashion_mnist()  # anywhere robustspec looks (read before env isolation)


# ------------------------------------------------------------------------------------------
# Fixtures and builders


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    isolate_data_env(tmp_path, monkeypatch)


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    """Synthetic Fashion-MNIST in <tmp>/data/fashion-mnist with matching checksum tables."""
    info = write_fashion(tmp_path / "data" / "fashion-mnist")
    monkeypatch.setattr(data, "FASHION_MNIST_FILES", info["checksums"])
    info["data_dir"] = tmp_path / "data"
    return info


def ppm(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PPM")
    return buf.getvalue()


HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


def sign(h: int, w: int, value: int, box: tuple[int, int, int, int] | None = None,
         color=(255, 255, 255)) -> np.ndarray:
    """An RGB image, ``value`` grey background and ``color`` inside ``box`` (x1, y1, x2, y2)."""
    img = np.full((h, w, 3), value, np.uint8)
    if box is not None:
        x1, y1, x2, y2 = box
        img[y1:y2, x1:x2] = color
    return img


def gtsrb_members(train_classes=(0, 1, 2, 11), per_class: int = 3):
    """Members of the three official zips. Images are of varying sizes; the CSVs claim twice the
    real size (like the 32x32 re-encoded copy) so ROI coordinates must be scaled."""
    train: dict[str, bytes] = {}
    for c in train_classes:
        folder = f"GTSRB/Final_Training/Images/{c:05d}/"
        train[folder] = b""
        rows = [HEADER]
        for k in range(per_class):
            h, w = 20 + 2 * k, 24 + 2 * k  # actual size
            # sign occupies the middle half; CSV gives the original (2x) geometry
            box = (w // 4, h // 4, w - w // 4, h - h // 4)
            name = f"{k:05d}_{c:05d}.ppm"
            train[folder + name] = ppm(sign(h, w, 10 * c, box))
            rows.append(f"{name};{2 * w};{2 * h};{2 * box[0]};{2 * box[1]};{2 * box[2]};"
                        f"{2 * box[3]};{c}")
        train[folder + f"GT-{c:05d}.csv"] = ("\r\n".join(rows) + "\r\n").encode()
    test: dict[str, bytes] = {"GTSRB/Final_Test/Images/": b""}
    labels = [0, 11, 1, 2, 0, 5]
    rows, rows_nolabel = [HEADER], [HEADER.rsplit(";", 1)[0]]
    for i, c in enumerate(labels):
        h, w = 16 + i, 18 + i
        box = (4, 4, w - 4, h - 4)
        name = f"{i:05d}.ppm"
        test["GTSRB/Final_Test/Images/" + name] = ppm(sign(h, w, 10 * c, box, (255, 0, 0)))
        line = f"{name};{w};{h};{box[0]};{box[1]};{box[2]};{box[3]}"
        rows.append(f"{line};{c}")
        rows_nolabel.append(line)
    test["GTSRB/Final_Test/Images/GT-final_test.test.csv"] = "\r\n".join(rows_nolabel).encode()
    gt = {"GT-final_test.csv": "\r\n".join(rows).encode()}
    return {data._GTSRB_TRAIN_ZIP: train, data._GTSRB_TEST_ZIP: test, data._GTSRB_GT_ZIP: gt}


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return buf.getvalue()


def write_gtsrb(folder: Path, members=None, extracted: bool = False) -> dict[str, bytes]:
    """Write the zips (or their extracted contents) into ``folder``; return the zip bytes."""
    members = members or gtsrb_members()
    folder.mkdir(parents=True, exist_ok=True)
    zips = {}
    for zname, content in members.items():
        zips[zname] = zip_bytes(content)
        if extracted:
            for name, payload in content.items():
                if name.endswith("/"):
                    (folder / name).mkdir(parents=True, exist_ok=True)
                else:
                    (folder / name).parent.mkdir(parents=True, exist_ok=True)
                    (folder / name).write_bytes(payload)
        else:
            (folder / zname).write_bytes(zips[zname])
    return zips


@pytest.fixture
def gtsrb(tmp_path):
    write_gtsrb(tmp_path / "data" / "gtsrb")
    return tmp_path / "data"


# ------------------------------------------------------------------------------------------
# IDX parsing


def test_parse_idx_round_trips_dtypes():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(data.parse_idx(idx_bytes(a), expected_magic=0x803), a)
    b = np.array([[-5, 70000], [1, 2]], dtype=np.int32)
    out = data.parse_idx(idx_bytes(b, 0x0C))
    np.testing.assert_array_equal(out, b)
    assert out.dtype.isnative


@pytest.mark.parametrize("payload, message", [
    (b"\x00\x00", "no header"),
    (b"\x00\x00\x08\x03\x00\x00", "header needs"),
    (b"\x01\x02\x08\x01\x00\x00\x00\x01\x00", "not an IDX file"),
    (idx_bytes(np.zeros((3, 2, 2), np.uint8))[:-1], "truncated"),
    (idx_bytes(np.zeros((3, 2, 2), np.uint8)) + b"\x00", "oversized"),
])
def test_parse_idx_rejects_malformed(payload, message):
    with pytest.raises(DataError, match=message):
        data.parse_idx(payload, source="thefile")


# ------------------------------------------------------------------------------------------
# Fashion-MNIST


def test_fashion_loads_shapes_and_values(fashion):
    ds = load_dataset("fashion-mnist", "train", data_dir=fashion["data_dir"])
    images, labels = fashion["train"]
    assert isinstance(ds, Dataset) and ds.name == "fashion-mnist"
    assert ds.x.shape == (12, 1, 28, 28) and ds.x.dtype == torch.float32
    assert ds.y.dtype == torch.int64 and ds.y.tolist() == labels.tolist()
    torch.testing.assert_close(ds.x[:, 0], torch.from_numpy(images).float() / 255)
    assert ds.classes == data.FASHION_MNIST_CLASSES and ds.num_classes == 10
    assert ds.input_shape == (1, 28, 28) and ds.flat().shape == (12, 784)
    assert len(load_dataset("fashion_MNIST", "test", data_dir=fashion["data_dir"])) == 6


def test_fashion_classes_and_limit(fashion):
    ds = load_dataset("fashion-mnist", data_dir=fashion["data_dir"], classes=[3, 1])
    assert ds.classes == ["Dress", "Trouser"]
    assert sorted(ds.y.tolist()) == [0, 1, 1]  # labels 3 (once) and 1 (twice) of 12
    lim = load_dataset("fashion-mnist", data_dir=fashion["data_dir"], limit=4)
    full = load_dataset("fashion-mnist", data_dir=fashion["data_dir"])
    assert len(lim) == 4
    torch.testing.assert_close(lim.x, full.x[[0, 3, 6, 9]])  # spread evenly, deterministic
    assert len(load_dataset("fashion-mnist", data_dir=fashion["data_dir"], limit=100)) == 12
    with pytest.raises(ValueError, match="positive"):
        load_dataset("fashion-mnist", data_dir=fashion["data_dir"], limit=0)


def test_fashion_accepts_recompressed_copy_by_data_digest(fashion):
    """Debian's copies differ in the gzip header only: accepted via the decompressed digest."""
    folder = fashion["data_dir"] / "fashion-mnist"
    for fname in data._FASHION_SPLIT_FILES["test"]:
        raw = gzip.decompress((folder / fname).read_bytes())
        (folder / fname).write_bytes(gz(raw, mtime=123456))
        assert md5((folder / fname).read_bytes()) != fashion["checksums"][fname].md5
        assert data.file_matches(folder / fname, fashion["checksums"][fname])
    assert len(load_dataset("fashion-mnist", "test", data_dir=fashion["data_dir"])) == 6


def test_fashion_accepts_decompressed_files(fashion):
    folder = fashion["data_dir"] / "fashion-mnist"
    for fname in data._FASHION_SPLIT_FILES["test"]:
        (folder / fname[:-3]).write_bytes(gzip.decompress((folder / fname).read_bytes()))
        (folder / fname).unlink()
    assert len(load_dataset("fashion-mnist", "test", data_dir=fashion["data_dir"])) == 6


def test_fashion_checksum_mismatch_is_clear(tmp_path):
    """A file named like an official one but with other content fails verification."""
    write_fashion(tmp_path / "fashion-mnist")  # real checksum table: these cannot match
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "checksum mismatch" in msg
    assert "corrupt" in msg and "robustspec data fetch fashion-mnist" in msg
    assert len(load_dataset("fashion-mnist", "test", data_dir=tmp_path, verify=False)) == 6


def _rewrite(folder: Path, fname: str, payload: bytes) -> None:
    (folder / fname).write_bytes(payload)


@pytest.mark.parametrize("case, message", [
    ("truncated-data", "truncated IDX file"),
    ("truncated-gzip", "truncated or corrupt gzip"),
    ("wrong-magic", "wrong IDX magic"),
    ("count-mismatch", "count mismatch"),
    ("bad-label", "out of range"),
])
def test_fashion_corrupt_files_are_errors(tmp_path, case, message):
    folder = tmp_path / "fashion-mnist"
    write_fashion(folder)
    img_name, lab_name = data._FASHION_SPLIT_FILES["test"]
    images = np.zeros((6, 28, 28), np.uint8)
    culprit = img_name
    if case == "truncated-data":
        _rewrite(folder, img_name, gz(idx_bytes(images)[:-100]))
    elif case == "truncated-gzip":
        _rewrite(folder, img_name, (folder / img_name).read_bytes()[:-20])
    elif case == "wrong-magic":
        culprit = lab_name
        _rewrite(folder, lab_name, gz(idx_bytes(np.zeros((6, 2, 2), np.uint8))))
    elif case == "count-mismatch":
        _rewrite(folder, img_name, gz(idx_bytes(np.zeros((5, 28, 28), np.uint8))))
    elif case == "bad-label":
        culprit = lab_name
        _rewrite(folder, lab_name, gz(idx_bytes(np.full(6, 10, np.uint8))))
    with pytest.raises(DataError, match=message) as err:
        load_dataset("fashion-mnist", "test", data_dir=tmp_path, verify=False, cache=False)
    assert culprit in str(err.value)


def test_fashion_cache_hit_and_invalidation(fashion, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_dataset("fashion-mnist", data_dir=fashion["data_dir"], cache_dir=cache)
    entries = list(cache.glob("fashion-mnist-train-*.npz"))
    assert len(entries) == 1 and not list(cache.glob("*.tmp"))

    def boom(*a, **k):
        raise AssertionError("parsed the IDX files despite a cache entry")

    monkeypatch.setattr(data, "read_idx", boom)
    second = load_dataset("fashion-mnist", data_dir=fashion["data_dir"], cache_dir=cache,
                          classes=2, limit=2)  # subsets are served from the full entry
    torch.testing.assert_close(second.x, first.x[[0, 10]])  # labels 0, 1, 0, 1 at 0, 1, 10, 11

    monkeypatch.undo()
    monkeypatch.setattr(data, "FASHION_MNIST_FILES", fashion["checksums"])
    img = fashion["data_dir"] / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    os.utime(img, ns=(1, 1))  # a changed source invalidates the entry
    calls = []
    real = data.read_idx
    monkeypatch.setattr(data, "read_idx", lambda *a, **k: calls.append(1) or real(*a, **k))
    load_dataset("fashion-mnist", data_dir=fashion["data_dir"], cache_dir=cache)
    assert calls


def test_damaged_cache_entry_is_rebuilt(fashion, tmp_path):
    cache = tmp_path / "cache"
    first = load_dataset("fashion-mnist", data_dir=fashion["data_dir"], cache_dir=cache)
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(b"garbage")
    again = load_dataset("fashion-mnist", data_dir=fashion["data_dir"], cache_dir=cache)
    torch.testing.assert_close(first.x, again.x)


def test_cache_dir_from_environment(fashion, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTSPEC_CACHE", str(tmp_path / "envcache"))
    load_dataset("fashion-mnist", data_dir=fashion["data_dir"])
    assert list((tmp_path / "envcache").glob("fashion-mnist-train-*.npz"))
    load_dataset("fashion-mnist", "test", data_dir=fashion["data_dir"], cache=False)
    assert not list((tmp_path / "envcache").glob("fashion-mnist-test-*.npz"))


# ------------------------------------------------------------------------------------------
# Finding the data


def test_missing_dataset_lists_every_place_and_remedies(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTSPEC_DATA", str(tmp_path / "envdata"))
    (tmp_path / "explicit" / "fashion-mnist").mkdir(parents=True)
    (tmp_path / "explicit" / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(b"x")
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", "test", data_dir=tmp_path / "explicit")
    msg = str(err.value)
    for place in (tmp_path / "explicit" / "fashion-mnist", tmp_path / "envdata",
                  tmp_path / "xdg" / "robustspec" / "data", data.DEBIAN_FASHION_MNIST):
        assert str(place) in msg
    assert "missing t10k-labels-idx1-ubyte.gz" in msg  # the partial folder says what it lacks
    assert "robustspec data fetch fashion-mnist" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg

    with pytest.raises(DataError) as err:
        load_dataset("gtsrb", "test", data_dir=tmp_path / "explicit")
    msg = str(err.value)
    assert "robustspec data fetch gtsrb" in msg and "GTSRB_Final_Test_GT.zip" in msg
    assert "apt-get" not in msg and str(data.DEBIAN_FASHION_MNIST) not in msg


def test_resolution_order(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    xdg = tmp_path / "xdg" / "robustspec" / "data"
    write_fashion(explicit / "fashion-mnist", n_test=3)
    write_fashion(env / "fashion-mnist", n_test=4)
    write_fashion(xdg / "fashion-mnist", n_test=5)
    write_fashion(data.DEBIAN_FASHION_MNIST, n_test=6)  # Debian's folder holds the files itself
    monkeypatch.setenv("ROBUSTSPEC_DATA", str(env))

    def n(**kw):
        return len(load_dataset("fashion-mnist", "test", verify=False, cache=False, **kw))

    assert n(data_dir=explicit) == 3
    assert n(data_dir=explicit / "fashion-mnist") == 3  # pointing straight at the files
    (tmp_path / "empty").mkdir()
    assert n(data_dir=tmp_path / "empty") == 4  # falls through to the next place
    with pytest.raises(DataError, match="nothing-here: no such folder"):  # a typo is no fall-through
        n(data_dir=tmp_path / "nothing-here")
    assert n() == 4
    monkeypatch.delenv("ROBUSTSPEC_DATA")
    assert n() == 5
    for f in (xdg / "fashion-mnist").iterdir():
        f.unlink()
    assert n() == 6
    assert data.find_dataset_dir("fashion-mnist", "test") == data.DEBIAN_FASHION_MNIST


def test_names_options_and_splits_are_checked(fashion):
    with pytest.raises(DataError, match="Did you mean 'gtsrb'"):
        load_dataset("gtsrbb")
    with pytest.raises(TypeError, match="Did you mean 'grayscale'"):
        load_dataset("gtsrb", grayscal=False)
    with pytest.raises(TypeError, match="unknown option 'size'"):
        load_dataset("fashion-mnist", size=32)
    with pytest.raises(ValueError, match="Did you mean 'test'"):
        load_dataset("fashion-mnist", "tset", data_dir=fashion["data_dir"])
    with pytest.raises(ValueError, match="out of range"):
        load_dataset("fashion-mnist", data_dir=fashion["data_dir"], classes=[10])
    assert data.normalize_name("FMNIST") == "fashion-mnist"


def test_dataset_helpers():
    ds = Dataset(torch.zeros(4, 3, 2, 2), torch.tensor([0, 1, 2, 1]), "toy")
    assert ds.num_classes == 3 and ds.flat().shape == (4, 12)
    sub = ds.subset([True, False, True, False])
    assert sub.y.tolist() == [0, 2] and sub.name == "toy"
    assert ds.subset(slice(1, 3)).y.tolist() == [1, 2]
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        Dataset(torch.zeros(4, 1), torch.zeros(3, dtype=torch.long), "bad")


# ------------------------------------------------------------------------------------------
# GTSRB


def test_gtsrb_default_subset_grayscale_roi(gtsrb):
    ds = load_dataset("gtsrb", "train", data_dir=gtsrb, size=8)
    assert ds.x.shape == (9, 1, 8, 8)  # class 11 is outside the default first 10 classes
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.classes == data.GTSRB_CLASSES[:10]
    # The ROI, scaled from the CSV's 2x geometry to the real pixels, is the white sign only.
    torch.testing.assert_close(ds.x, torch.ones_like(ds.x))
    full = load_dataset("gtsrb", "train", data_dir=gtsrb, size=8, roi=False)
    assert full.x.min() < 0.1  # without the crop the dark background shows


def test_gtsrb_classes_remap_and_all(gtsrb):
    ds = load_dataset("gtsrb", "train", data_dir=gtsrb, classes=[11, 0], roi=False)
    assert ds.classes == [data.GTSRB_CLASSES[11], data.GTSRB_CLASSES[0]]
    assert sorted(ds.y.tolist()) == [0, 0, 0, 1, 1, 1]
    # background grey 10*c distinguishes the classes: 11 -> label 0 has the brighter corner
    corner = ds.x[:, 0, 0, 0]
    assert torch.all(corner[ds.y == 0] > corner[ds.y == 1])
    every = load_dataset("gtsrb", "train", data_dir=gtsrb, classes=None)
    assert every.y.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [11] * 3
    assert every.classes == data.GTSRB_CLASSES and every.num_classes == 43
    assert load_dataset("gtsrb", data_dir=gtsrb, classes=2).y.tolist() == [0] * 3 + [1] * 3
    with pytest.raises(DataError, match="no train images of classes"):
        load_dataset("gtsrb", data_dir=gtsrb, classes=[7])


def test_gtsrb_test_split_rgb(gtsrb):
    ds = load_dataset("gtsrb", "test", data_dir=gtsrb, size=6, grayscale=False, classes=None)
    assert ds.x.shape == (6, 3, 6, 6)
    assert ds.y.tolist() == [0, 11, 1, 2, 0, 5]
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand_as(ds.x)
    torch.testing.assert_close(ds.x, red.contiguous())
    gray = load_dataset("gtsrb", "test", data_dir=gtsrb, size=6)
    assert gray.x.shape == (5, 1, 6, 6)  # label 11 dropped by the default 10 classes
    assert abs(float(gray.x.mean()) - 76 / 255) < 1e-6  # ITU-R 601 luma of pure red


def test_gtsrb_extracted_folders_match_zips(tmp_path, gtsrb):
    write_gtsrb(tmp_path / "ext", extracted=True)
    for split in ("train", "test"):
        a = load_dataset("gtsrb", split, data_dir=gtsrb, classes=None, cache=False)
        b = load_dataset("gtsrb", split, data_dir=tmp_path / "ext", classes=None, cache=False)
        torch.testing.assert_close(a.x, b.x)
        assert a.y.tolist() == b.y.tolist()


def test_gtsrb_limit_and_cache(gtsrb, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    lim = load_dataset("gtsrb", data_dir=gtsrb, classes=None, limit=4, cache_dir=cache)
    assert lim.y.tolist() == [0, 1, 2, 11]  # spread over the split, so all classes appear
    full = load_dataset("gtsrb", data_dir=gtsrb, classes=None, cache_dir=cache)
    assert len(list(cache.glob("gtsrb-train-*.npz"))) == 2 and not list(cache.glob("*.tmp"))

    def boom(*a, **k):
        raise AssertionError("decoded GTSRB despite a cache entry")

    monkeypatch.setattr(data, "gtsrb_index", boom)
    again = load_dataset("gtsrb", data_dir=gtsrb, classes=None, cache_dir=cache)
    torch.testing.assert_close(again.x, full.x)
    lim2 = load_dataset("gtsrb", data_dir=gtsrb, classes=None, limit=6, cache_dir=cache)
    torch.testing.assert_close(lim2.x, full.x[[0, 2, 4, 6, 8, 10]])
    with pytest.raises(AssertionError, match="decoded"):  # other options: another entry
        load_dataset("gtsrb", data_dir=gtsrb, classes=None, size=16, cache_dir=cache)


def test_gtsrb_official_size_images(tmp_path):
    """Images at their CSV size (the official archives) need no scaling; big ones work too."""
    members = gtsrb_members()
    folder = "GTSRB/Final_Training/Images/00003/"
    img = sign(120, 100, 0, (20, 30, 80, 90))
    members[data._GTSRB_TRAIN_ZIP].update({
        folder + "00000_00000.ppm": ppm(img),
        folder + "GT-00003.csv": f"{HEADER}\n00000_00000.ppm;100;120;20;30;80;90;3\n".encode(),
    })
    write_gtsrb(tmp_path / "gtsrb", members)
    ds = load_dataset("gtsrb", data_dir=tmp_path, classes=[3], size=12)
    torch.testing.assert_close(ds.x, torch.ones(1, 1, 12, 12))


@pytest.mark.parametrize("case, message", [
    ("missing-image", "count mismatch"),
    ("unannotated-image", "without annotation"),
    ("bad-image", "cannot decode image"),
    ("bad-csv", "malformed row"),
    ("bad-header", "unexpected CSV header"),
    ("bad-zip", "not a readable zip"),
])
def test_gtsrb_corrupt_archives_are_errors(tmp_path, case, message):
    members = gtsrb_members()
    train = members[data._GTSRB_TRAIN_ZIP]
    folder = "GTSRB/Final_Training/Images/00001/"
    if case == "missing-image":
        del train[folder + "00002_00001.ppm"]
    elif case == "unannotated-image":
        train[folder + "99999_00001.ppm"] = train[folder + "00000_00001.ppm"]
    elif case == "bad-image":
        train[folder + "00001_00001.ppm"] = b"P6\n40 40\n255\n" + b"\x00" * 10
    elif case == "bad-csv":
        train[folder + "GT-00001.csv"] += b"00003_00001.ppm;oops;1;1;1;1;1;1\r\n"
    elif case == "bad-header":
        train[folder + "GT-00001.csv"] = b"a;b;c\r\n"
    write_gtsrb(tmp_path / "gtsrb", members)
    if case == "bad-zip":
        zpath = tmp_path / "gtsrb" / data._GTSRB_TRAIN_ZIP
        zpath.write_bytes(zpath.read_bytes()[:1000])
    with pytest.raises(DataError, match=message) as err:
        load_dataset("gtsrb", data_dir=tmp_path, cache=False)
    assert data._GTSRB_TRAIN_ZIP in str(err.value)


def test_gtsrb_test_labels_missing(tmp_path):
    write_gtsrb(tmp_path / "gtsrb")
    (tmp_path / "gtsrb" / data._GTSRB_GT_ZIP).unlink()
    with pytest.raises(DataError, match="missing GTSRB_Final_Test_GT.zip"):
        load_dataset("gtsrb", "test", data_dir=tmp_path)
    assert len(load_dataset("gtsrb", "train", data_dir=tmp_path)) == 9


# ------------------------------------------------------------------------------------------
# Downloads against a local HTTP server


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; honours single ``bytes=N-`` ranges unless told not to; can cut a
    response short (``server.cut``: bytes sent before closing) to simulate a dropped link."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server naming)
        srv = self.server
        name = self.path.rsplit("/", 1)[-1]
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(name)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and srv.ranges:
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        payload = body[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if srv.cut is not None:
            self.wfile.write(payload[: srv.cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.ranges, srv.cut = {}, [], True, None
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/files"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def served_fashion(server, tmp_path, monkeypatch):
    """Synthetic Fashion-MNIST on the server, with checksum tables for it."""
    info = write_fashion(tmp_path / "src")
    monkeypatch.setattr(data, "FASHION_MNIST_FILES", info["checksums"])
    for fname in info["checksums"]:
        server.files[fname] = (tmp_path / "src" / fname).read_bytes()
    return server


def test_fetch_downloads_verifies_and_loads(served_fashion, tmp_path):
    folder = fetch.fetch("fashion-mnist", data_dir=tmp_path / "d", base_url=served_fashion.url,
                         progress=False)
    assert folder == tmp_path / "d" / "fashion-mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(data.FASHION_MNIST_FILES)
    assert len(load_dataset("fashion-mnist", "test", data_dir=tmp_path / "d")) == 6
    # present and valid: nothing is downloaded again
    served_fashion.requests.clear()
    fetch.fetch("fashion-mnist", data_dir=tmp_path / "d", base_url=served_fashion.url,
                progress=False)
    assert served_fashion.requests == []


def test_fetch_resumes_partial_file(served_fashion, tmp_path):
    fname = "train-images-idx3-ubyte.gz"
    body = served_fashion.files[fname]
    dest = tmp_path / "fashion-mnist"
    dest.mkdir()
    (dest / (fname + ".part")).write_bytes(body[:1000])
    fetch.fetch("fashion-mnist", data_dir=dest, base_url=served_fashion.url, progress=False)
    assert (dest / fname).read_bytes() == body
    assert not (dest / (fname + ".part")).exists()
    assert ("/files/" + fname, "bytes=1000-") in served_fashion.requests


def test_fetch_restarts_when_server_ignores_range(served_fashion, tmp_path):
    served_fashion.ranges = False
    fname = "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "fashion-mnist").mkdir()
    (tmp_path / "fashion-mnist" / (fname + ".part")).write_bytes(b"stale")
    fetch.fetch("fashion-mnist", data_dir=tmp_path, base_url=served_fashion.url, progress=False)
    assert (tmp_path / "fashion-mnist" / fname).read_bytes() == served_fashion.files[fname]


def test_fetch_complete_part_gets_416_then_verified(served_fashion, tmp_path):
    fname = "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "fashion-mnist").mkdir()
    (tmp_path / "fashion-mnist" / (fname + ".part")).write_bytes(served_fashion.files[fname])
    fetch.fetch("fashion-mnist", data_dir=tmp_path, base_url=served_fashion.url, progress=False)
    assert (tmp_path / "fashion-mnist" / fname).read_bytes() == served_fashion.files[fname]


def test_fetch_stale_part_is_retried_from_scratch(served_fashion, tmp_path):
    fname = "t10k-images-idx3-ubyte.gz"
    body = served_fashion.files[fname]
    (tmp_path / "fashion-mnist").mkdir()
    (tmp_path / "fashion-mnist" / (fname + ".part")).write_bytes(b"\xff" * 500)
    fetch.fetch("fashion-mnist", data_dir=tmp_path, base_url=served_fashion.url, progress=False)
    assert (tmp_path / "fashion-mnist" / fname).read_bytes() == body
    ranges = [r for p, r in served_fashion.requests if p.endswith(fname)]
    assert ranges == ["bytes=500-", None]


def test_fetch_checksum_failure(served_fashion, tmp_path):
    fname = "t10k-labels-idx1-ubyte.gz"
    served_fashion.files[fname] = gz(b"something else entirely")
    with pytest.raises(FetchError, match="checksum mismatch") as err:
        fetch.fetch("fashion-mnist", data_dir=tmp_path, base_url=served_fashion.url,
                    progress=False)
    assert fname in str(err.value) and "--no-verify" in str(err.value)
    assert not (tmp_path / "fashion-mnist" / fname).exists()
    assert not (tmp_path / "fashion-mnist" / (fname + ".part")).exists()
    fetch.fetch("fashion-mnist", data_dir=tmp_path, base_url=served_fashion.url,
                progress=False, verify=False)
    assert (tmp_path / "fashion-mnist" / fname).read_bytes() == served_fashion.files[fname]


def test_fetch_replaces_corrupt_existing_file(served_fashion, tmp_path):
    fname = "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "fashion-mnist").mkdir()
    (tmp_path / "fashion-mnist" / fname).write_bytes(b"corrupt")
    fetch.fetch("fashion-mnist", data_dir=tmp_path, base_url=served_fashion.url, progress=False)
    assert (tmp_path / "fashion-mnist" / fname).read_bytes() == served_fashion.files[fname]


def test_fetch_interrupted_then_resumed(served_fashion, tmp_path):
    fname = "train-images-idx3-ubyte.gz"
    served_fashion.files = {fname: served_fashion.files[fname]}
    served_fashion.cut = 700
    with pytest.raises(FetchError, match="run the same command again to resume") as err:
        fetch.download(f"{served_fashion.url}/{fname}", tmp_path / fname,
                       checksum=data.FASHION_MNIST_FILES[fname], progress=False)
    assert "Traceback" not in str(err.value)
    assert (tmp_path / (fname + ".part")).stat().st_size == 700
    served_fashion.cut = None
    fetch.download(f"{served_fashion.url}/{fname}", tmp_path / fname,
                   checksum=data.FASHION_MNIST_FILES[fname], progress=False)
    assert (tmp_path / fname).read_bytes() == served_fashion.files[fname]
    assert served_fashion.requests[-1][1] == "bytes=700-"


def test_fetch_http_and_network_errors(served_fashion, tmp_path):
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch.fetch("gtsrb", data_dir=tmp_path, base_url=served_fashion.url, progress=False)
    dead = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    port = dead.server_address[1]
    dead.server_close()  # nothing listens there any more
    with pytest.raises(FetchError, match="network error while downloading"):
        fetch.fetch("fashion-mnist", data_dir=tmp_path, base_url=f"http://127.0.0.1:{port}",
                    progress=False, timeout=5)
    with pytest.raises(DataError, match="unknown dataset"):
        fetch.fetch("mnist-fashion", data_dir=tmp_path, progress=False)


def test_fetch_mirror_from_environment(served_fashion, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTSPEC_MIRROR", served_fashion.url.rsplit("/", 1)[0] + "/{dataset}")
    monkeypatch.setenv("ROBUSTSPEC_DATA", str(tmp_path / "envdata"))
    folder = fetch.fetch("fashion-mnist", progress=False)
    assert folder == tmp_path / "envdata" / "fashion-mnist"
    assert all(p.startswith("/fashion-mnist/") for p, _ in served_fashion.requests)


def test_fetch_default_target_is_user_folder(tmp_path):
    assert fetch.target_dir("gtsrb") == tmp_path / "xdg" / "robustspec" / "data" / "gtsrb"
    assert fetch.target_dir("fashion-mnist", tmp_path / "fashion-mnist") == \
        tmp_path / "fashion-mnist"


def test_fetch_gtsrb_end_to_end(server, tmp_path, monkeypatch):
    zips = {name: zip_bytes(content) for name, content in gtsrb_members().items()}
    server.files.update(zips)
    monkeypatch.setattr(data, "GTSRB_FILES", {n: Checksum(md5(b)) for n, b in zips.items()})
    fetch.fetch("gtsrb", data_dir=tmp_path, base_url=server.url, progress=False)
    assert len(load_dataset("gtsrb", "test", data_dir=tmp_path, classes=None)) == 6


def test_fetch_keeps_a_readable_gtsrb_copy_that_is_not_the_official_release(gtsrb, capsys):
    """Re-encoded public copies fail the official md5 but load: fetch must not delete them,
    even when the server is down."""
    folder = gtsrb / "gtsrb"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    fetch.fetch("gtsrb", data_dir=gtsrb, base_url="http://127.0.0.1:9", progress=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert "is a readable GTSRB archive; kept" in capsys.readouterr().err


def test_fetch_never_deletes_a_corrupt_file_before_its_replacement_arrives(served_fashion,
                                                                          tmp_path):
    fname = "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "fashion-mnist").mkdir()
    (tmp_path / "fashion-mnist" / fname).write_bytes(b"corrupt")
    served_fashion.files.pop(fname)  # the replacement cannot be had (HTTP 404)
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch.fetch("fashion-mnist", data_dir=tmp_path, base_url=served_fashion.url,
                    progress=False)
    assert (tmp_path / "fashion-mnist" / fname).read_bytes() == b"corrupt"


def test_fetch_into_a_folder_that_already_holds_the_files(served_fashion, tmp_path):
    """`--data-dir fm` with the IDX files directly in fm/: fetch completes fm/, as loading reads."""
    fname = "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "fm").mkdir()
    (tmp_path / "fm" / fname).write_bytes(served_fashion.files[fname])
    assert fetch.fetch("fashion-mnist", data_dir=tmp_path / "fm", base_url=served_fashion.url,
                       progress=False) == tmp_path / "fm"
    assert not (tmp_path / "fm" / "fashion-mnist").exists()
    assert len(load_dataset("fashion-mnist", "test", data_dir=tmp_path / "fm")) == 6


def test_fetch_progress_output(served_fashion, tmp_path, capsys):
    fetch.fetch("fashion-mnist", data_dir=tmp_path, base_url=served_fashion.url, progress=True)
    err = capsys.readouterr().err
    assert "downloading" in err and "ready in" in err


# ------------------------------------------------------------------------------------------
# Real data (skipped when /work/shared/data is absent)


def _real(name: str) -> Path:
    folder = REAL_DATA / name
    if not folder.is_dir():
        pytest.skip(f"real {name} data not present: {folder}")
    return folder


def test_real_fashion_mnist_test_split(tmp_path):
    if REAL_FASHION is None:
        pytest.skip("real Fashion-MNIST not present in ../shared/data, $ROBUSTSPEC_DATA, the user "
                    "cache or /usr/share/datasets/fashion-mnist")
    ds = load_dataset("fashion-mnist", "test", data_dir=REAL_FASHION, cache_dir=tmp_path)
    assert ds.x.shape == (10000, 1, 28, 28)
    assert ds.y.bincount().tolist() == [1000] * 10
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) == 1.0


def test_real_fashion_mnist_data_digests():
    """The hard-coded digests of the decompressed data are those of the real files, so a
    recompressed copy (Debian's) verifies."""
    folder = _real("fashion-mnist")
    for fname, checksum in data.FASHION_MNIST_FILES.items():
        packed = (folder / fname).read_bytes()
        assert md5(packed) == checksum.md5
        assert md5(gzip.decompress(packed)) == checksum.raw_md5
    labels = gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    debian_like = Path(os.environ["XDG_CACHE_HOME"]) / "t10k-labels-idx1-ubyte.gz"
    debian_like.parent.mkdir(parents=True, exist_ok=True)
    debian_like.write_bytes(gz(labels, mtime=987654321))
    assert data.file_matches(debian_like, data.FASHION_MNIST_FILES[debian_like.name])


def test_real_gtsrb_limited(tmp_path):
    _real("gtsrb")
    test = load_dataset("gtsrb", "test", data_dir=REAL_DATA, limit=300, cache_dir=tmp_path)
    assert test.x.shape == (300, 1, 32, 32) and test.num_classes == 10
    assert set(test.y.tolist()) == set(range(10))
    train = load_dataset("gtsrb", "train", data_dir=REAL_DATA, limit=200, classes=None,
                         grayscale=False, cache_dir=tmp_path)
    assert train.x.shape == (200, 3, 32, 32)
    assert len(set(train.y.tolist())) == 43  # the limit spreads over every class folder


# ------------------------------------------------------------------------------------------
# A folder holding a dataset's files in any state is the one used (issue 8 item 1)

def _broken_copies(tmp_path):
    """A complete copy in Debian's place, and the ways a file of the user's copy can break."""
    write_fashion(data.DEBIAN_FASHION_MNIST, n_train=20)
    img = "train-images-idx3-ubyte.gz"

    def folder_instead(p):
        p.mkdir()

    def dangling(p):
        p.symlink_to(p.parent / "nowhere")

    def loop(p):
        p.symlink_to(p)

    def no_labels(p):
        (p.parent / "train-labels-idx1-ubyte.gz").unlink()
    return img, {"a folder, not a file": folder_instead, "a dangling symlink": dangling,
                 "a symlink loop": loop, "missing": no_labels}


@pytest.mark.parametrize("via", ["data_dir", "env"])
def test_a_broken_file_never_falls_through_to_another_copy(tmp_path, monkeypatch, via):
    img, breakages = _broken_copies(tmp_path)
    for i, (state, breaks) in enumerate(breakages.items()):
        mine = tmp_path / f"mine{i}"
        write_fashion(mine / "fashion-mnist", n_train=12)
        target = mine / "fashion-mnist" / img
        if state != "missing":
            target.unlink()
        breaks(target)
        if via == "env":
            monkeypatch.setenv("ROBUSTSPEC_DATA", str(mine))
            kwargs = {}
        else:
            kwargs = {"data_dir": mine}
        with pytest.raises(DataError) as err:
            load_dataset("fashion-mnist", "train", verify=False, cache=False, **kwargs)
        msg = str(err.value)
        named = target if state != "missing" else target.parent / "train-labels-idx1-ubyte.gz"
        assert f"{named}: {state}" in msg, msg
        assert "never falls back" in msg and "complete, but not used" in msg
        # the test split of the same folder is intact: it loads from there, not from Debian
        assert len(load_dataset("fashion-mnist", "test", verify=False, cache=False, **kwargs)) == 6
    monkeypatch.delenv("ROBUSTSPEC_DATA", raising=False)
    assert len(load_dataset("fashion-mnist", "train", verify=False, cache=False)) == 20


def test_a_valid_but_empty_idx_pair_is_a_data_error(tmp_path):
    folder = tmp_path / "d" / "fashion-mnist"
    write_fashion(folder, n_train=0)
    with pytest.raises(DataError, match="hold no examples"):
        load_dataset("fashion-mnist", "train", data_dir=tmp_path / "d", verify=False)


def test_a_broken_gtsrb_archive_is_named(tmp_path):
    folder = tmp_path / "d" / "gtsrb"
    folder.mkdir(parents=True)
    (folder / "GTSRB_Final_Test_Images.zip").symlink_to(folder / "nowhere.zip")
    write_fashion(data.DEBIAN_FASHION_MNIST)  # another dataset elsewhere is irrelevant
    with pytest.raises(DataError) as err:
        load_dataset("gtsrb", "test", data_dir=tmp_path / "d")
    msg = str(err.value)
    assert f"{folder / 'GTSRB_Final_Test_Images.zip'}: a dangling symlink" in msg
    assert f"{folder / 'GTSRB_Final_Test_GT.zip'}: missing" in msg and "never falls back" in msg
