"""The logit-adjusted loss: its formula, its balanced answers on imbalanced data, and a model saved with it."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from scipy.special import log_softmax

from toolkit.data.balance import class_prior
from toolkit.train.losses import LogitAdjustedCrossentropy, training_loss


def _probs_and_targets(n: int = 12, classes: int = 7):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (n, classes))
    probs = np.exp(log_softmax(logits, axis=1)).astype(np.float32)
    mix = rng.uniform(0, 1, (n, 1))  # mixup's soft targets: two one-hot rows blended
    first, second = np.eye(classes)[rng.integers(0, classes, (2, n))]
    targets = mix * first + (1 - mix) * second
    return probs, targets.astype(np.float32)


@pytest.mark.parametrize("smoothing", [0.0, 0.05])
def test_the_loss_is_cross_entropy_after_adding_the_log_prior_to_the_logits(smoothing):
    probs, targets = _probs_and_targets()
    prior = class_prior(np.array([0] * 3 + [1] * 5 + [2] * 11 + [3] + [4] * 11 + [5] * 67 + [6] * 2))
    loss = LogitAdjustedCrossentropy(prior, smoothing, reduction=None)(targets, probs)
    smoothed = targets * (1 - smoothing) + smoothing / 7
    expected = -(smoothed * log_softmax(np.log(probs) + np.log(prior), axis=1)).sum(axis=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loss), expected, rtol=1e-5)


def test_a_uniform_prior_leaves_plain_cross_entropy():
    probs, targets = _probs_and_targets()
    adjusted = LogitAdjustedCrossentropy(np.full(7, 1 / 7), reduction=None)(targets, probs)
    plain = keras.losses.CategoricalCrossentropy(reduction=None)(targets, probs)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(adjusted), keras.ops.convert_to_numpy(plain), rtol=1e-5)


def test_a_class_with_no_image_counts_as_one_so_its_log_prior_stays_finite():
    prior = class_prior(np.array([5, 5, 5, 0]))
    assert np.isfinite(np.log(prior)).all() and prior.sum() == pytest.approx(1)
    assert prior[5] == pytest.approx(4 / 11)  # each class counted once more: 5 four times, 0 twice, the rest once


def _fit_and_recall_of_the_rare_class(loss) -> float:
    """A linear classifier on two overlapping classes, 9 to 1: recall of the rare one on balanced test points."""
    rng = np.random.default_rng(1)
    labels = (rng.uniform(size=2000) < 0.1).astype(int)
    points = rng.normal(0, 1, (2000, 2)) + labels[:, None] * 1.5
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.05), loss)
    model.fit(points, np.eye(2)[labels], epochs=20, batch_size=100, verbose=0)
    rare = rng.normal(0, 1, (500, 2)) + 1.5
    return float((model.predict(rare, verbose=0).argmax(axis=1) == 1).mean())


def test_adjusted_training_answers_the_rare_class_far_more_often_than_plain_cross_entropy():
    plain = _fit_and_recall_of_the_rare_class(keras.losses.CategoricalCrossentropy())
    adjusted = _fit_and_recall_of_the_rare_class(LogitAdjustedCrossentropy([0.9, 0.1]))
    assert adjusted > plain + 0.3 and adjusted > 0.6  # plain cross-entropy mostly answers the common class


def test_a_model_compiled_with_it_saves_and_loads_with_its_prior(tmp_path):
    labels = np.array([0, 1, 1, 5, 5, 5, 5, 6])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(7, activation="softmax")])
    model.compile("adam", training_loss("logit_adjust", 0.05, labels))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras").loss
    assert isinstance(loaded, LogitAdjustedCrossentropy) and loaded.label_smoothing == 0.05
    np.testing.assert_allclose(loaded.prior, class_prior(labels))
    assert type(training_loss("class_weight", 0.0, labels)) is keras.losses.CategoricalCrossentropy
