"""Reference networks: the paper's MLP and a small CNN.

Both are plain ``nn.Sequential`` subclasses, so code that inspects layers (bound propagation,
reporting) can iterate them, and any other ``nn.Module`` works wherever these do. Both end in a
clamp of the logits to [-100, 100] as in the paper; softmax belongs to the training losses.
"""

from __future__ import annotations

import difflib
import math
from typing import Sequence

import torch
from torch import nn

from robustspec.compiler.registry import Registry
from robustspec.dsl.errors import InputError

from .registries import Names

__all__ = ["MODELS", "MODEL_BUILDERS", "Clamp", "PaperMLP", "SmallCNN", "build_model"]

LOGIT_BOUND = 100.0


class Clamp(nn.Module):
    """Clamp to ``[low, high]``: bounded logits keep exp() in the losses finite."""

    mode_independent = True  # the same in train and eval mode (compiler.quantifiers)

    def __init__(self, low: float = -LOGIT_BOUND, high: float = LOGIT_BOUND):
        super().__init__()
        if low >= high:
            raise InputError(f"Clamp needs low < high, got [{low}, {high}]")
        self.low, self.high = float(low), float(high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.low, self.high)

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}"


def _features(x: torch.Tensor) -> int:
    return math.prod(x.shape[1:]) if x.dim() >= 2 else -1


class PaperMLP(nn.Sequential):
    """Flatten -> Linear(in, hidden) -> ReLU -> Linear(hidden, classes) -> clamp(-100, 100).

    Takes ``[B, C, H, W]`` images or ``[B, D]`` vectors with ``C*H*W == D == in_features``.
    """

    mode_independent = True  # the same in train and eval mode (compiler.quantifiers)

    def __init__(self, in_features: int, hidden: int = 100, classes: int = 10,
                 bound: float = LOGIT_BOUND):
        if in_features < 1 or hidden < 1 or classes < 1:
            raise InputError(f"PaperMLP needs positive sizes, got in_features={in_features}, "
                             f"hidden={hidden}, classes={classes}")
        super().__init__(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes), Clamp(-bound, bound))
        self.in_features, self.hidden, self.classes = int(in_features), int(hidden), int(classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _features(x) != self.in_features:
            raise InputError(f"PaperMLP expects [B, ...] inputs with {self.in_features} "
                             f"features per example, got shape {tuple(x.shape)}")
        return super().forward(x)


class SmallCNN(nn.Sequential):
    """Two conv blocks (3x3 conv, ReLU, 2x2 max-pool) and two linear layers, clamped logits.

    ``image_size`` is an int (square) or ``(H, W)``. Takes ``[B, C, H, W]`` or the flattened
    ``[B, C*H*W]`` (reshaped), so it is a drop-in for the MLP on the same data.
    """

    mode_independent = True  # the same in train and eval mode (compiler.quantifiers)

    def __init__(self, in_channels: int, image_size: int | Sequence[int], classes: int = 10,
                 width: int = 16, hidden: int = 128, bound: float = LOGIT_BOUND):
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if in_channels < 1 or classes < 1 or width < 1 or hidden < 1:
            raise InputError(f"SmallCNN needs positive sizes, got in_channels={in_channels}, "
                             f"classes={classes}, width={width}, hidden={hidden}")
        if h < 4 or w < 4:
            raise InputError(f"SmallCNN needs images of at least 4x4 pixels, got {h}x{w}")
        super().__init__(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), hidden), nn.ReLU(),
            nn.Linear(hidden, classes), Clamp(-bound, bound))
        self.input_shape = (int(in_channels), int(h), int(w))
        self.classes = int(classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[1] == math.prod(self.input_shape):
            x = x.reshape(x.shape[0], *self.input_shape)
        elif x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise InputError(f"SmallCNN expects [B, {', '.join(map(str, self.input_shape))}] or "
                             f"[B, {math.prod(self.input_shape)}] inputs, got {tuple(x.shape)}")
        return super().forward(x)


# name -> builder(input_shape: tuple, classes: int, **kwargs) -> nn.Module; a new model is one
# more `@MODEL_BUILDERS.register(name, help=...)` function
MODEL_BUILDERS: Registry = Registry("model")
MODELS = Names(MODEL_BUILDERS)  # the names, in order; a live view of the registry


@MODEL_BUILDERS.register("mlp", help="the paper's MLP (one hidden layer of 100 ReLUs)")
def _mlp(shape: tuple[int, ...], classes: int, **kwargs) -> nn.Module:
    return PaperMLP(math.prod(shape), classes=classes, **kwargs)


@MODEL_BUILDERS.register("cnn", help="a small CNN (two conv blocks, two linear layers)")
def _cnn(shape: tuple[int, ...], classes: int, **kwargs) -> nn.Module:
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise InputError(f"model 'cnn' needs an image input_shape (C, H, W), got {shape}; "
                         f"use 'mlp' for flat inputs")
    return SmallCNN(shape[0], shape[1:], classes=classes, **kwargs)


def build_model(name: str, input_shape: int | Sequence[int], classes: int = 10,
                **kwargs) -> nn.Module:
    """Build a registered model (``"mlp"``: :class:`PaperMLP`, ``"cnn"``: :class:`SmallCNN`) for
    inputs of ``input_shape`` (one example: ``(C, H, W)``, ``(H, W)`` or ``(D,)``/``D`` for the
    MLP).

    ``kwargs`` go to the model (e.g. ``hidden``). An unknown name is a ValueError with the
    closest known name.
    """
    key = str(name).strip().lower()
    if key not in MODEL_BUILDERS:
        close = difflib.get_close_matches(key, MODELS, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown model {name!r}.{hint} Known models: {', '.join(MODELS)}.")
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:
        raise InputError(f"input_shape must be positive sizes, got {input_shape!r}")
    return MODEL_BUILDERS.get(key)(shape, classes, **kwargs)
