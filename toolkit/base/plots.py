"""The plots people would rather look at than read: confusion matrices, reliability diagrams, training curves.

matplotlib is imported when a plot is drawn, not when this module loads: a CLI that only parses
arguments, or a stage that draws nothing, does not pay for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from toolkit.base.classes import CLASSES

if TYPE_CHECKING:
    import pandas as pd


def pyplot():
    """matplotlib's pyplot on the Agg back end (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_confusion(axis, matrix: list[list[int]], title: str, fontsize: int = 8):
    """Row-normalised confusion matrix on ``axis``: each row shows where one true class went."""
    counts = np.array(matrix, dtype=float)
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for (row, col), value in np.ndenumerate(normalised):
        colour = "white" if value > 0.5 else "black"
        axis.text(col, row, f"{value:.2f}", ha="center", va="center", color=colour, fontsize=fontsize)
    axis.set(xticks=range(len(CLASSES)), yticks=range(len(CLASSES)), xticklabels=CLASSES, yticklabels=CLASSES)
    axis.set(xlabel="predicted", ylabel="true", title=title)
    return image


def plot_confusion(matrix: list[list[int]], path: Path, title: str) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 5))
    image = draw_confusion(axis, matrix, title)
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_reliability(curves: dict[str, dict], path: Path, title: str) -> None:
    """Reliability diagram: accuracy against confidence per bin, one line per model, with each ECE."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, metrics in curves.items():
        curve = metrics["reliability"]
        axis.plot(curve["confidence"], curve["accuracy"], marker="o", label=f"{name} (ECE {metrics['ece']:.3f})")
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="top-1 confidence", ylabel="accuracy", title=title)
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_history(history: pd.DataFrame, path: Path) -> None:
    """Loss and validation balanced accuracy per epoch, both phases, with the phase change marked."""
    plt = pyplot()
    figure, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history) + 1)
    for column, axis in (("loss", loss_axis), ("val_loss", loss_axis), ("val_balanced_accuracy", score_axis)):
        if column in history:
            axis.plot(epochs, history[column], marker="o", label=column)
    for axis in (loss_axis, score_axis):
        changes = np.flatnonzero(history["phase"].to_numpy()[1:] != history["phase"].to_numpy()[:-1])
        for change in changes:
            axis.axvline(change + 1.5, color="grey", linestyle="--", linewidth=1)
        axis.set_xlabel("epoch (dashed line: fine-tuning starts)")
        axis.legend()
    score_axis.set_ylim(0, 1)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
