"""Classification metrics with scikit-learn: the numbers every stage reports, computed one way."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from toolkit.base.classes import CLASSES


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
