"""Figures: confusion matrix and training curves as PNG (for MLflow and people)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np

MAX_CONFUSION_INCHES = 14
MAX_CONFUSION_LABELS = 30


def confusion_png(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    """Write the confusion matrix (rows true, columns predicted), counts in each cell when there
    are few classes. With many (Tiny-ImageNet's 200) the figure keeps a bounded size, without
    per-cell text and with every n-th class named: a plot of one cell per inch would be
    gigapixels and minutes of drawing."""
    cm = np.asarray(matrix)
    k = len(classes)
    size = min(max(3.5, 0.6 * k + 2), MAX_CONFUSION_INCHES)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    step = max(1, k // MAX_CONFUSION_LABELS)
    ticks = range(0, k, step)
    ax.set_xticks(ticks, [classes[i] for i in ticks], rotation=45, ha="right")
    ax.set_yticks(ticks, [classes[i] for i in ticks])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title, fontsize=10)
    threshold = cm.max() / 2 if cm.size else 0
    cells = np.ndenumerate(cm) if k <= MAX_CONFUSION_LABELS else ()
    for (i, j), value in cells:
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            color="white" if value > threshold else "black",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def curves_png(history: list[dict[str, float]], path: Path, title: str) -> None:
    """Loss and accuracy per epoch, train against validation."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for split in ("train", "val"):
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], marker="o", label=split)
        ax_acc.plot(epochs, [r[f"{split}_accuracy"] for r in history], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def errors_png(
    images: np.ndarray,
    true: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    classes: list[str],
    path: Path,
    title: str,
    limit: int = 48,
) -> int:
    """A grid of the misclassified images (most confident mistakes first), each captioned
    ``true -> predicted (confidence)``; returns how many mistakes there were in all.

    The grid is one image (see ``montage``) with the captions over it: with one axes per
    mistake, this figure cost more than the other two together in every evaluate stage."""
    wrong = np.flatnonzero(true != predicted)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:limit]
    cols = 8
    h, w = images.shape[1:3]
    canvas, (cell_h, cell_w) = montage(images[wrong], cols, caption=h // 2, gap=max(1, w // 8))
    width = cols * 1.6
    fig = plt.figure(figsize=(width, width * canvas.shape[0] / canvas.shape[1] + 0.6))
    ax = fig.add_axes((0, 0, 1, 1 - 0.6 / fig.get_figheight()))
    ax.axis("off")
    gray = canvas.shape[-1] == 1
    # Nearest: the pixels the model saw, not a smoothed version, in a PNG half the size.
    ax.imshow(
        canvas[..., 0] if gray else canvas,
        cmap="gray",
        vmin=0,
        vmax=255,
        aspect="equal",
        interpolation="nearest",
    )
    for k, i in enumerate(wrong):
        row, col = divmod(k, cols)
        ax.text(
            col * cell_w + w / 2,
            row * cell_h + h // 2 - 1,
            f"{classes[true[i]]}\n-> {classes[predicted[i]]} ({confidence[i]:.2f})",
            fontsize=7,
            color="darkred",
            ha="center",
            va="bottom",
        )
    n_wrong = int((true != predicted).sum())
    shown = f"all {n_wrong}"
    if n_wrong > len(wrong):
        shown = f"{len(wrong)} most confident of {n_wrong}"
    if n_wrong == 0:
        ax.text(0.02, 0.5, "no mistakes", fontsize=12, transform=ax.transAxes)
    fig.suptitle(
        f"{title}: mistakes on the test split ({shown}); caption true -> predicted", fontsize=9
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return n_wrong


def montage(
    images: np.ndarray, cols: int, caption: int, gap: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """N x H x W x C uint8 images tiled ``cols`` to a row on white, each with ``caption`` free
    rows above it and ``gap`` free columns beside it; returns the canvas and a cell's (h, w).
    At least one (empty) row, so a model without mistakes still gets a figure."""
    n, h, w, c = images.shape
    cell_h, cell_w = h + caption, w + gap
    rows = max(1, -(-n // cols))
    canvas = np.full((rows * cell_h, cols * cell_w, c), 255, dtype=np.uint8)
    for k in range(n):
        row, col = divmod(k, cols)
        top, left = row * cell_h + caption, col * cell_w
        canvas[top : top + h, left : left + w] = images[k]
    return canvas, (cell_h, cell_w)
