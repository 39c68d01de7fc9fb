"""Pictures where a picture beats a table: security against eps, and counterexample grids."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .files import atomic_write  # noqa: E402

_STYLES = ["-", "--", ":", "-."]


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, dpi=120, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path


def plot_security(curves: dict[str, dict[str, list[tuple[float, float]]]], path: str | Path,
                  title: str = "Constraint security against eps") -> Path:
    """curves[attack][model] = [(eps, security), ...]: one panel per attack, one line per model."""
    attacks = list(curves)
    fig, axes = plt.subplots(1, len(attacks), figsize=(5.2 * len(attacks), 4), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        for i, (model, pts) in enumerate(curves[attack].items()):
            xs, ys = zip(*pts)
            ax.plot(xs, [100 * y for y in ys], _STYLES[i % len(_STYLES)], marker="o", label=model)
        ax.set_title(f"{attack} attack (PGD)")
        ax.set_xlabel("eps (L-inf)")
        ax.set_ylabel("constraint security (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_counterexamples(x0: torch.Tensor, x: torch.Tensor, top: list[str], bottom: list[str],
                         path: str | Path, title: str = "") -> Path:
    """Originals (top row) next to their counterexamples (bottom row), with captions."""
    n = len(x0)
    fig, axes = plt.subplots(2, max(n, 1), figsize=(1.8 * max(n, 1), 4.6), squeeze=False)
    for i in range(n):
        for row, img, cap in ((0, x0[i], top[i]), (1, x[i], bottom[i])):
            ax = axes[row][i]
            a = img.detach().cpu()
            if a.ndim == 1:
                side = int(round(a.numel() ** 0.5))
                a = a.reshape(side, side) if side * side == a.numel() else a.reshape(1, -1)
            elif a.ndim == 3:
                a = a.squeeze(0) if a.shape[0] == 1 else a.permute(1, 2, 0)
            ax.imshow(a.numpy(), cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1)
            # originals captioned above, counterexamples below, so captions never cover an image
            (ax.set_title if row == 0 else ax.set_xlabel)(cap, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    if n == 0:
        axes[0][0].text(0.5, 0.5, "no counterexample found", ha="center")
        axes[0][0].axis("off")
        axes[1][0].axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
