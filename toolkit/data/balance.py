"""How training makes up for rare classes: the modes, and class weights by scikit-learn's "balanced" rule."""

from __future__ import annotations

import numpy as np

from toolkit.base.classes import CLASSES

IMBALANCE_MODES = ("class_weight", "oversample", "logit_adjust", "none")  # logit_adjust: in the loss (train/losses.py)


def class_weights(labels: np.ndarray, power: float = 1.0) -> np.ndarray:
    """Per-class loss weights from scikit-learn's 'balanced' rule, raised to ``power`` (0.5 for square root)."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = np.ones(len(CLASSES), np.float32)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels) ** power
    return weights


def fixed_sample_weights(labels: np.ndarray, imbalance: str, power: float) -> np.ndarray | None:
    """Per-image loss weights for a fixed array, which cannot be drawn anew each epoch (cached features).

    Oversampling draws by the class weights, so its expectation on such an array is those weights.
    """
    return class_weights(labels, power)[labels] if imbalance in ("class_weight", "oversample") else None


def class_prior(labels: np.ndarray) -> np.ndarray:
    """Each class's share of ``labels``, counted one more time each, so a class absent from them keeps a finite log."""
    counts = np.bincount(labels, minlength=len(CLASSES)) + 1.0
    return counts / counts.sum()
