"""The reference networks: shapes, clamped logits, the factory and its errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustspec.runtime.models import MODELS, Clamp, PaperMLP, SmallCNN, build_model


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def test_paper_mlp_architecture():
    m = PaperMLP(784)
    linears = [layer for layer in m if isinstance(layer, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(784, 100), (100, 10)]
    assert isinstance(m[2], nn.ReLU) and isinstance(m[-1], Clamp)
    assert sum(p.numel() for p in m.parameters()) == 784 * 100 + 100 + 100 * 10 + 10


def test_paper_mlp_accepts_images_and_vectors():
    m = PaperMLP(784, classes=10)
    x = torch.rand(5, 1, 28, 28)
    out = m(x)
    assert out.shape == (5, 10)
    torch.testing.assert_close(m(x.reshape(5, 784)), out)
    with pytest.raises(ValueError, match="784 features"):
        m(torch.rand(5, 1, 32, 32))
    with pytest.raises(ValueError, match="784 features"):
        m(torch.rand(784))


@pytest.mark.parametrize("model", [PaperMLP(16, hidden=4, classes=3),
                                   SmallCNN(1, 4, classes=3, width=2, hidden=4)])
def test_logits_are_clamped(model):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(50.0)
    out = model(torch.ones(2, 16))
    assert out.max() == 100.0
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(-50.0)
        model[-2].bias.fill_(-1e4)
    assert model(torch.ones(2, 16)).min() == -100.0


def test_small_cnn_shapes_and_flat_input():
    m = SmallCNN(3, 32, classes=43)
    x = torch.rand(4, 3, 32, 32)
    out = m(x)
    assert out.shape == (4, 43)
    torch.testing.assert_close(m(x.reshape(4, -1)), out)
    assert SmallCNN(1, (28, 30), classes=10)(torch.rand(2, 1, 28, 30)).shape == (2, 10)
    assert SmallCNN(1, 7)(torch.rand(2, 1, 7, 7)).shape == (2, 10)  # odd sizes floor-pool
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        m(torch.rand(4, 1, 32, 32))


def test_small_cnn_trains():
    m = SmallCNN(1, 8, classes=2, width=4, hidden=8)
    x = torch.rand(16, 1, 8, 8)
    y = (x.mean(dim=(1, 2, 3)) > 0.5).long()
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    first = None
    for _ in range(30):
        loss = nn.functional.cross_entropy(m(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


@pytest.mark.parametrize("shape", [(1, 28, 28), (784,), 784, (28, 28)])
def test_build_mlp(shape):
    m = build_model("mlp", shape, 10)
    assert isinstance(m, PaperMLP) and m.in_features == 784
    assert m(torch.rand(2, 784)).shape == (2, 10)


def test_build_cnn_and_kwargs():
    m = build_model("CNN", (3, 32, 32), 43, width=8)
    assert isinstance(m, SmallCNN) and m.input_shape == (3, 32, 32)
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 43)
    assert build_model("cnn", (28, 28), 10).input_shape == (1, 28, 28)
    assert build_model("mlp", (1, 32, 32), 10, hidden=20)[1].out_features == 20
    assert MODELS == ("mlp", "cnn")


def test_build_model_errors():
    with pytest.raises(ValueError, match="unknown model 'mpl'. Did you mean 'mlp'"):
        build_model("mpl", (784,), 10)
    with pytest.raises(ValueError, match="Known models: mlp, cnn") as err:
        build_model("transformer", (784,), 10)
    assert "Did you mean" not in str(err.value)
    with pytest.raises(ValueError, match="use 'mlp' for flat inputs"):
        build_model("cnn", (784,), 10)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("mlp", (0, 28), 10)
    with pytest.raises(TypeError):
        build_model("mlp", (784,), 10, depth=3)
    with pytest.raises(ValueError, match="at least 4x4"):
        build_model("cnn", (1, 2, 2), 10)
    with pytest.raises(ValueError, match="low < high"):
        Clamp(1.0, -1.0)
