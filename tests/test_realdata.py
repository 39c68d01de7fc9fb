"""On real Fashion-MNIST: constraint training with SR raises SR constraint security above the
baseline's at eps 0.1, same seed and budget (the issue's claim, scaled to run in seconds).

Skipped with a reason when the real data is absent (looked for in ../shared/data relative to
the repository, then where robustspec looks: $ROBUSTSPEC_DATA, the user cache, Debian's
package).

Configuration (both models): PaperMLP(784), the first-layer init from torch.manual_seed(seed),
20000 training images (spread over the split), 1 epoch, Adam lr 1e-3, batch 128; SR with
eps 0.1 and delta 3 (the spec's default delta 10 needs the full 60k x 3 epochs of the README's
demo before the baseline's logits move that far within the ball); the constraint regime uses
alpha 1, beta 0.2 and a 5-step PGD of 0.05. Evaluation: SR(0.1, 3) constraint security on 1000
test images with a 50-step PGD.

Measured on 2 CPU cores (1 torch thread), seeds 0/1/2/3: baseline security 3.4% / 4.5% / 1.4% /
3.5%, constraint 90.6% / 88.1% / 87.1% / 89.6%, clean accuracy equal within 0.3 points (80-82%);
training about 0.5 s (baseline) and 1.8 s (constraint), about 4 s for the whole test with
loading. The test asserts a margin of 25 points (seed 0).
"""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from robustspec.compiler import compile_spec
from robustspec.runtime.data import DataError, load_dataset
from robustspec.runtime.metrics import evaluate
from robustspec.runtime.models import PaperMLP
from robustspec.runtime.training import Trainer, TrainConfig

from fakedata import SHARED_DATA, real_fashion_mnist

SPECS = Path(__file__).resolve().parents[1] / "specs"
FASHION = real_fashion_mnist()

pytestmark = pytest.mark.skipif(
    FASHION is None, reason=f"real Fashion-MNIST not present in {SHARED_DATA / 'fashion-mnist'}, "
    "$ROBUSTSPEC_DATA, the user cache or /usr/share/datasets/fashion-mnist")

SEED = 0
EPS = 0.1
DELTA = 3.0
MARGIN = 0.25


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small dense layers gain nothing from threads, and on a busy 2-core box two OpenMP
    threads can be 100x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    train = load_dataset("fashion-mnist", "train", data_dir=FASHION, limit=20000,
                         cache_dir=cache)
    test = load_dataset("fashion-mnist", "test", data_dir=FASHION, limit=1000, cache_dir=cache)
    return train, test


def _train_and_measure(regime: str, train, test, sr) -> tuple[float, float]:
    torch.manual_seed(SEED)
    model = PaperMLP(784)
    cfg = TrainConfig(regime=regime, epochs=1, lr=1e-3, batch_size=128, search_steps=5,
                      step_size=0.05, seed=SEED, params={"eps": EPS, "delta": DELTA})
    Trainer(model, cfg, sr if regime != "baseline" else None, progress=False).fit(train.x, train.y)
    r = evaluate(model, sr, test.x, test.y, eps=[EPS], steps=50, samples=0, seed=SEED,
                 params={"delta": DELTA}, progress=False)
    row = r.rows[0]
    return row.constraint_security, row.clean_accuracy


def test_sr_constraint_training_beats_baseline_security(fashion):
    train, test = fashion
    assert len(train) == 20000 and len(test) == 1000
    sr = compile_spec(SPECS / "standard_robustness.spec")["sr"]
    sec_b, clean_b = _train_and_measure("baseline", train, test, sr)
    sec_c, clean_c = _train_and_measure("constraint", train, test, sr)
    summary = (f"SR(eps {EPS}, delta {DELTA}) security: baseline {sec_b:.3f}, "
               f"constraint {sec_c:.3f}; "
               f"clean accuracy: baseline {clean_b:.3f}, constraint {clean_c:.3f}")
    print(summary)
    assert sec_c > sec_b + MARGIN, summary
    # the same budget buys the security without costing clean accuracy here
    assert clean_b > 0.7 and clean_c > clean_b - 0.03, summary


def test_verification_rejects_a_corrupted_copy_of_the_real_test_split(tmp_path):
    """Loading verifies the official digests: one changed pixel in an otherwise real file is a
    checksum error; verify=False loads it (test_data covers the intact files)."""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copyfile(FASHION / name, folder / name)
    raw = bytearray(gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes()))
    raw[16 + 28 * 14 + 14] ^= 0xFF  # the middle pixel of the first image
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(raw), compresslevel=1))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path, cache=False)
    ds = load_dataset("fashion-mnist", "test", data_dir=tmp_path, verify=False, cache=False,
                      limit=10)
    assert ds.x.shape == (10, 1, 28, 28)
