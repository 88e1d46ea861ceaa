"""The decision rule and the calibration, fitted on the validation split and folded into the model.

A prior shift (logit adjustment, Menon et al. 2021: add ``-tau * log(class prior)`` to the logits)
moves decisions away from the majority class by an amount chosen on validation; temperature scaling
(Guo et al. 2017) then makes the probabilities honest. Both are affine in the logits, so they fold
into the last Dense layer: the exported model needs no extra op, and an app reads the calibrated
probabilities and the tuned decision straight from the softmax.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from toolkit.base.classes import CLASSES
from toolkit.base.errors import ToolkitError
from toolkit.data.balance import class_prior

if TYPE_CHECKING:
    import keras

OBJECTIVES = ("balanced_accuracy", "macro_f1", "accuracy")
TAUS = np.round(np.linspace(-1.0, 1.5, 26), 2)  # -1: back to the priors, as a logit-adjusted loss needs
TEMPERATURES = np.exp(np.linspace(np.log(0.2), np.log(5.0), 101))
# A shift must beat smaller ones by this much on validation to be taken. On the first HAM10000
# MobileNetV2 run validation macro-F1 was flat in tau (0.60 to 0.62): its maximum at tau = -0.3 was
# noise and cost 4 points of test balanced accuracy against no shift.
TOLERANCE = 0.01


@dataclass(frozen=True)
class Decision:
    """What was folded into the head: ``probs = softmax((logits + shift) / temperature)``."""

    objective: str
    tau: float
    shift: list[float]
    temperature: float
    curve: dict[str, list[float]]  # each objective on validation, at each tau in ``taus``
    taus: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


def objective_score(objective: str, labels: np.ndarray, predicted: np.ndarray) -> float:
    """``objective`` of the decisions ``predicted``; macro-F1 over the classes present, as the metrics score it.

    scikit-learn is imported here, not at the top: the CLI lists the objectives without loading it.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    if objective == "balanced_accuracy":
        return float(balanced_accuracy_score(labels, predicted))
    if objective == "macro_f1":
        return float(f1_score(labels, predicted, labels=np.unique(labels), average="macro", zero_division=0))
    return float(accuracy_score(labels, predicted))


def smallest_near_best(scores: np.ndarray) -> int:
    """The index into ``TAUS`` of the smallest shift that scores within ``TOLERANCE`` of the best."""
    near_best = np.flatnonzero(scores >= scores.max() - TOLERANCE)
    return int(near_best[np.argmin(np.abs(TAUS[near_best]))])


def fit_decision(probs: np.ndarray, labels: np.ndarray, train_labels: np.ndarray, objective: str) -> Decision:
    """Choose tau by ``objective`` on (``probs``, ``labels``), then the temperature by log-loss."""
    from scipy.special import softmax
    from sklearn.metrics import log_loss

    if objective not in OBJECTIVES:
        raise ToolkitError(f"unknown decision objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    logits = np.log(np.clip(probs, 1e-12, 1.0))  # log-probabilities differ from logits by a per-row constant
    log_prior = np.log(class_prior(train_labels))
    curve = {
        name: [objective_score(name, labels, (logits - tau * log_prior).argmax(axis=1)) for tau in TAUS]
        for name in OBJECTIVES
    }
    best = smallest_near_best(np.asarray(curve[objective]))
    shift = -TAUS[best] * log_prior
    shifted = logits + shift
    classes = list(range(len(CLASSES)))
    losses = [log_loss(labels, softmax(shifted / t, axis=1), labels=classes) for t in TEMPERATURES]
    return Decision(
        objective,
        float(TAUS[best]),
        shift.tolist(),
        float(TEMPERATURES[int(np.argmin(losses))]),
        curve,
        TAUS.tolist(),
    )


def fold_into_head(model: keras.Model, decision: Decision) -> None:
    """Rewrite the softmax Dense layer so the model outputs ``softmax((logits + shift) / temperature)``."""
    dense = model.get_layer("head").layers[-1]
    kernel, bias = dense.get_weights()
    shift = np.asarray(decision.shift, dtype=bias.dtype)
    dense.set_weights([kernel / decision.temperature, (bias + shift) / decision.temperature])


def unfold_from_head(model: keras.Model, decision: Decision) -> None:
    """Undo :func:`fold_into_head`: the model outputs ``softmax(logits)`` again."""
    dense = model.get_layer("head").layers[-1]
    kernel, bias = dense.get_weights()
    shift = np.asarray(decision.shift, dtype=bias.dtype)
    dense.set_weights([kernel * decision.temperature, bias * decision.temperature - shift])
