"""The training loss: cross-entropy, or logit-adjusted cross-entropy when the imbalance is handled in the loss.

Logit adjustment (Menon et al. 2021; Balanced Softmax, Ren et al. 2020) trains on ``softmax(logits + log prior)``:
a rare class must beat a common one by the log of their prior ratio to win, so the raw logits the model keeps
learn balanced posteriors. Class weights instead scale each image's gradient, which makes a few rare images
dominate a batch; the adjustment changes margins, not weights. The decision rule's prior shift
(:mod:`toolkit.train.decision`) then chooses, on validation, how far back towards the priors the exported model
decides.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from toolkit.data.balance import class_prior


@keras.saving.register_keras_serializable(package="toolkit")
class LogitAdjustedCrossentropy(keras.losses.Loss):
    """Cross-entropy of ``softmax(log(probs) + log(prior))`` against the (smoothed, mixed) targets."""

    def __init__(self, prior, label_smoothing: float = 0.0, name: str = "logit_adjusted_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.prior = [float(p) for p in prior]
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        log_prior = ops.convert_to_tensor(np.log(self.prior), dtype=y_pred.dtype)
        # the model outputs probabilities: their log is clipped at Keras's epsilon, as its own cross-entropy does
        logits = ops.log(ops.clip(y_pred, keras.config.epsilon(), 1.0)) + log_prior
        return keras.losses.categorical_crossentropy(
            y_true, logits, from_logits=True, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "prior": self.prior, "label_smoothing": self.label_smoothing}


def training_loss(imbalance: str, label_smoothing: float, train_labels: np.ndarray) -> keras.losses.Loss:
    """The loss ``fit`` compiles: logit-adjusted for ``imbalance == "logit_adjust"``, else plain cross-entropy."""
    if imbalance == "logit_adjust":
        return LogitAdjustedCrossentropy(class_prior(train_labels), label_smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
