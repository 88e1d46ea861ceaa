"""Referral operating points: when should an app tell its user to see a dermatologist?

An app does not act on the argmax. It sums a score (the malignant classes' probabilities, or
melanoma's alone), and refers when the score reaches a threshold. Each threshold is chosen on the
validation split for a target sensitivity, then reported on the test split with bootstrap 95%
intervals, so the numbers an app quotes were not fitted to the images they are measured on.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from toolkit.base.classes import CLASSES

SCORES: dict[str, tuple[str, ...]] = {"malignant": ("mel", "bcc", "akiec"), "melanoma": ("mel",)}
SENSITIVITIES = (0.90, 0.95)
DEFAULT_POINT = "malignant_sens95"  # what ``predict`` prints and the Dart class uses unless told otherwise
BOOTSTRAP_SAMPLES = 1000
# The largest probability an 8-bit output holds (uint8, scale 1/256). A very confident model can put a threshold
# above it on val (the demo model's melanoma points sat at 0.99999): its int8 bundle could then never refer anyone.
MAX_THRESHOLD = 255 / 256


@dataclass(frozen=True)
class OperatingPoint:
    """Refer when the sum of ``classes``' probabilities is at least ``threshold``."""

    name: str
    score: str
    classes: tuple[str, ...]
    target_sensitivity: float
    threshold: float
    val_sensitivity: float
    val_specificity: float

    def refers(self, probs: np.ndarray) -> np.ndarray:
        return score(probs, self.classes) >= self.threshold


def score(probs: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """The summed probability of ``classes`` for each row of ``probs`` (class order: :data:`CLASSES`)."""
    return np.asarray(probs)[..., [CLASSES.index(name) for name in classes]].sum(axis=-1)


def positives(labels: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    return np.isin(np.asarray(labels), [CLASSES.index(name) for name in classes])


def threshold_for(scores: np.ndarray, positive: np.ndarray, sensitivity: float) -> float:
    """The highest threshold that still refers at least ``sensitivity`` of the positives, at most
    :data:`MAX_THRESHOLD`, and written with 6 decimals rounded down so the positive that set it stays referred."""
    ranked = np.sort(scores[positive])[::-1]
    if not len(ranked):
        return 0.0
    needed = int(np.ceil(sensitivity * len(ranked)))
    return math.floor(min(float(ranked[max(needed, 1) - 1]), MAX_THRESHOLD) * 1e6) / 1e6  # a float64, not float32


def fit_points(val_probs: np.ndarray, val_labels: np.ndarray) -> list[OperatingPoint]:
    """Every score at every target sensitivity, chosen on val."""
    points = []
    for name, classes in SCORES.items():
        scores, positive = score(val_probs, classes), positives(val_labels, classes)
        for sensitivity in SENSITIVITIES:
            threshold = threshold_for(scores, positive, sensitivity)
            refer = scores >= threshold
            points.append(
                OperatingPoint(
                    name=f"{name}_sens{round(sensitivity * 100)}",
                    score=name,
                    classes=classes,
                    target_sensitivity=sensitivity,
                    threshold=threshold,
                    val_sensitivity=float(refer[positive].mean()) if positive.any() else 0.0,
                    val_specificity=float((~refer[~positive]).mean()) if (~positive).any() else 0.0,
                )
            )
    return points


def _rates(refer: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Sensitivity, specificity and PPV along the last axis (NaN where undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        true_pos = (refer & positive).sum(-1)
        sensitivity = true_pos / positive.sum(-1)
        specificity = (~refer & ~positive).sum(-1) / (~positive).sum(-1)
        ppv = true_pos / refer.sum(-1)
    return np.stack([sensitivity, specificity, ppv], axis=-1)


def assess(
    point: OperatingPoint, probs: np.ndarray, labels: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> dict:
    """Sensitivity, specificity and PPV at ``point``, each with a percentile-bootstrap 95% interval."""
    refer, positive = point.refers(probs), positives(labels, point.classes)
    rows = np.random.default_rng(seed).integers(0, len(labels), (samples, len(labels)))
    estimate, resampled = _rates(refer, positive), _rates(refer[rows], positive[rows])
    with warnings.catch_warnings():  # a rate with no cases (no positives, nothing referred) stays undefined
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(resampled, [2.5, 97.5], axis=0)
    result = {"referred": int(refer.sum()), "images": len(labels)}
    for i, key in enumerate(("sensitivity", "specificity", "ppv")):
        result[key] = {"value": _rounded(estimate[i]), "ci95": [_rounded(low[i]), _rounded(high[i])]}
    return result


def _rounded(value: float) -> float | None:
    """JSON has no NaN: an undefined rate is ``None``."""
    return None if np.isnan(value) else round(float(value), 4)


def report(points: list[OperatingPoint], labels: np.ndarray, reference: np.ndarray, exported: np.ndarray) -> list[dict]:
    """Each point on a split for the float reference and the exported model, with how many decisions flip."""
    return [
        {
            **as_dict(point),
            "reference": assess(point, reference, labels),
            "exported": assess(point, exported, labels),
            "flips": int((point.refers(reference) != point.refers(exported)).sum()),
        }
        for point in points
    ]


def as_dict(point: OperatingPoint) -> dict:
    return {**asdict(point), "classes": list(point.classes)}


def from_dict(payload: dict) -> OperatingPoint:
    return OperatingPoint(**{**payload, "classes": tuple(payload["classes"])})
