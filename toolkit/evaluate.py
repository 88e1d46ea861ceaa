"""Metrics with scikit-learn, plots with matplotlib, and evaluation of runs and ensembles of runs."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from toolkit.classes import CLASSES
from toolkit.errors import ToolkitError


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict:
    """Top-1 confidence against accuracy in equal-width confidence bins (empty bins left out)."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    used = [b for b in range(bins) if (which == b).any()]
    return {
        "confidence": [float(confidence[which == b].mean()) for b in used],
        "accuracy": [float(correct[which == b].mean()) for b in used],
        "count": [int((which == b).sum()) for b in used],
    }


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Mean gap between confidence and accuracy over equal-width confidence bins, weighted by bin size."""
    curve = reliability(labels, probs, bins)
    gaps = np.abs(np.subtract(curve["accuracy"], curve["confidence"]))
    return float((gaps * curve["count"]).sum() / len(labels))


def compute_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, balanced accuracy, macro/weighted F1, per-class P/R/F1, confusion matrix, one-vs-rest AUC, ECE."""
    labels = np.asarray(labels)
    predicted = probs.argmax(axis=1)
    classes = np.arange(len(CLASSES))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    present = np.unique(labels)
    auc = {}
    for index in present if len(present) > 1 else []:
        auc[CLASSES[index]] = float(roc_auc_score(labels == index, probs[:, index]))
    return {
        "images": len(labels),
        "accuracy": float(accuracy_score(labels, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(labels, predicted, average="weighted", zero_division=0)),
        "ece": expected_calibration_error(labels, probs),
        "reliability": reliability(labels, probs),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(CLASSES, precision, recall, f1, support, strict=True)
        },
        "roc_auc_ovr": auc,
        "roc_auc_ovr_macro": float(np.mean(list(auc.values()))) if auc else None,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=classes).tolist(),
    }


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
    figure, axis = plt.subplots(figsize=(6, 5))
    image = draw_confusion(axis, matrix, title)
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_reliability(curves: dict[str, dict], path: Path, title: str) -> None:
    """Reliability diagram: accuracy against confidence per bin, one line per model, with each ECE."""
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


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def evaluate_runs(runs: list[Path], split: str = "test") -> dict:
    """Run each run's best model on ``split`` of its manifest and score the mean of their probabilities."""
    from toolkit.data.images import load_images
    from toolkit.runs import open_run
    from toolkit.train import predict

    probs, ids, labels = [], None, None
    for path in runs:
        run = open_run(path)
        rows = run.rows(split)
        if ids is not None and not np.array_equal(rows["image_id"].to_numpy(), ids):
            raise ToolkitError(f"{path} was split differently from {runs[0]}: an ensemble needs the same {split} set")
        ids, labels = rows["image_id"].to_numpy(), rows["label_index"].to_numpy()
        images = load_images(rows["path"].tolist(), run.input_size, run.resize_mode).images
        probs.append(predict(run.load_model(), images, f"{run.name} on {split}"))
    return compute_metrics(labels, np.mean(probs, axis=0))
