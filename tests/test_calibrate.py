"""The decision rule and temperature fitted on validation, and their folding into the model's last layer."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.base.classes import CLASSES
from toolkit.base.errors import ToolkitError
from toolkit.train.decision import TAUS, TOLERANCE, Decision, fit_decision, fold_into_head, smallest_near_best


def skewed_predictions(seed: int = 0, overconfidence: float = 1.0, lean: float = 1.0):
    """Validation predictions of a model that leans towards the majority class and is over-confident."""
    rng = np.random.default_rng(seed)
    train_labels = rng.choice(len(CLASSES), 5000, p=[0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])
    labels = np.repeat(np.arange(len(CLASSES)), 60)
    logits = rng.normal(0, 1, (len(labels), len(CLASSES)))
    logits[np.arange(len(labels)), labels] += 1.5
    log_prior = np.log(np.bincount(train_labels, minlength=len(CLASSES)) / len(train_labels))
    logits = overconfidence * (logits + lean * log_prior)  # a prior-following, over-confident model
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True), labels, train_labels


def test_the_prior_shift_undoes_a_majority_lean():
    probs, labels, train_labels = skewed_predictions()
    decision = fit_decision(probs, labels, train_labels, "balanced_accuracy")
    curve, chosen = decision.curve["balanced_accuracy"], decision.taus.index(decision.tau)
    assert decision.tau == documented_choice(curve, decision.taus)
    assert curve[chosen] > curve[decision.taus.index(0.0)] + 0.1
    assert 0.6 <= decision.tau <= 1.4  # the model added the whole log prior: tau near 1 removes it
    assert decision.tau in TAUS


def documented_choice(curve: list[float], taus: list[float]) -> float:
    """The rule as README states it, written out independently: the smallest shift within TOLERANCE of the best."""
    near_best = [tau for tau, score in zip(taus, curve, strict=True) if score >= max(curve) - TOLERANCE]
    return min(near_best, key=abs)


def test_the_rule_takes_the_smallest_shift_near_the_best_not_the_best():
    probs, labels, train_labels = skewed_predictions(seed=2)
    decision = fit_decision(probs, labels, train_labels, "macro_f1")
    curve = decision.curve["macro_f1"]
    best = decision.taus[int(np.argmax(curve))]
    assert max(curve) - min(curve) > 0.3  # far from flat: the rule, not a plateau, decides
    assert decision.tau == documented_choice(curve, decision.taus) == 0.8
    assert best == 1.1 and decision.tau != best  # argmax would have taken a larger shift


def test_the_temperature_undoes_overconfidence():
    calm, labels, train_labels = skewed_predictions(lean=0.0)
    loud, _, _ = skewed_predictions(overconfidence=3.0, lean=0.0)
    calm_t = fit_decision(calm, labels, train_labels, "macro_f1").temperature
    loud_t = fit_decision(loud, labels, train_labels, "macro_f1").temperature
    assert loud_t / calm_t == pytest.approx(3.0, rel=0.25)  # logits three times as large


def test_a_balanced_model_keeps_its_decision():
    _, labels, train_labels = skewed_predictions()
    rng = np.random.default_rng(1)
    fair = rng.dirichlet(np.ones(len(CLASSES)), len(labels)) * 0.5
    fair[np.arange(len(labels)), labels] += 0.5  # always right, no lean to any class
    decision = fit_decision(fair, labels, train_labels, "macro_f1")
    assert decision.tau == 0.0 and decision.shift == pytest.approx([0.0] * len(CLASSES))


def test_unknown_objective_is_refused():
    probs, labels, train_labels = skewed_predictions()
    with pytest.raises(
        ToolkitError,
        match=r"^unknown decision objective 'recall'; expected one of balanced_accuracy, macro_f1, accuracy$",
    ):
        fit_decision(probs, labels, train_labels, "recall")


def test_folding_makes_the_model_output_the_adjusted_probabilities():
    """On a head whose inputs vary, so the kernel's scaling shows as much as the bias's; unfolding undoes it."""
    import keras
    from scipy.special import softmax

    from toolkit.train.decision import unfold_from_head

    inputs = keras.Input((5,))
    model = keras.Model(
        inputs, keras.Sequential([keras.layers.Dense(len(CLASSES), activation="softmax")], name="head")(inputs)
    )
    features = np.random.default_rng(0).normal(0, 2, (8, 5)).astype("float32")
    before = np.asarray(model.predict_on_batch(features))
    shift, temperature = np.linspace(-1, 1, len(CLASSES)), 2.5
    decision = Decision("macro_f1", 0.5, shift.tolist(), temperature, {}, [])
    fold_into_head(model, decision)
    expected = softmax((np.log(before) + shift) / temperature, axis=1)
    assert np.asarray(model.predict_on_batch(features)) == pytest.approx(expected, abs=1e-5)
    unfold_from_head(model, decision)
    assert np.asarray(model.predict_on_batch(features)) == pytest.approx(before, abs=1e-5)


def test_a_shift_is_taken_only_when_it_clearly_beats_no_shift():
    zero = int(np.flatnonzero(TAUS == 0)[0])
    flat = np.full(len(TAUS), 0.62)
    flat[zero - 3] += TOLERANCE / 2  # a noisy maximum at tau = -0.3, as on the first HAM10000 run
    assert TAUS[smallest_near_best(flat)] == 0
    clear = flat.copy()
    clear[zero + 3] += 3 * TOLERANCE  # a real gain at tau = 0.3
    assert TAUS[smallest_near_best(clear)] == pytest.approx(0.3)


def test_ece_is_the_size_weighted_gap_over_15_equal_width_bins():
    from toolkit.base.metrics import compute_metrics, reliability

    def confident(top: float, count: int) -> np.ndarray:
        return np.tile([top] + [(1 - top) / 6] * 6, (count, 1))

    # 30 right at confidence 0.50 (bin [0.467, 0.533)) and 10 wrong at 0.56 (bin [0.533, 0.600)); 10 bins would
    # pool them in [0.5, 0.6) and find a gap of |0.515 - 0.75| = 0.235 instead of 0.515
    probs = np.vstack([confident(0.50, 30), confident(0.56, 10)])
    labels = np.array([0] * 30 + [1] * 10)
    expected = (30 * abs(0.50 - 1.0) + 10 * abs(0.56 - 0.0)) / 40
    assert compute_metrics(labels, probs)["ece"] == pytest.approx(expected)
    curve = reliability(labels, probs)
    assert curve["confidence"] == pytest.approx([0.50, 0.56]) and curve["accuracy"] == pytest.approx([1.0, 0.0])


def test_the_shift_and_temperature_are_the_documented_ones():
    """``shift = -tau * log(prior)`` with add-one class counts, and the temperature that minimises the log-loss of
    ``softmax((log p + shift) / T)`` on val, recomputed here from the formulas in the module docstring."""
    from scipy.special import softmax
    from sklearn.metrics import log_loss

    from toolkit.train.decision import TEMPERATURES

    probs, labels, train_labels = skewed_predictions(seed=1)
    decision = fit_decision(probs, labels, train_labels, "balanced_accuracy")
    counts = np.bincount(train_labels, minlength=len(CLASSES)) + 1.0
    expected_shift = -decision.tau * np.log(counts / counts.sum())
    assert decision.tau > 0.5 and decision.shift == pytest.approx(expected_shift.tolist())
    shifted = np.log(probs) + expected_shift
    losses = [log_loss(labels, softmax(shifted / t, axis=1), labels=range(len(CLASSES))) for t in TEMPERATURES]
    assert decision.temperature == pytest.approx(TEMPERATURES[int(np.argmin(losses))])


def test_a_class_missing_from_train_or_val_still_gets_a_finite_decision():
    """A small or odd dataset: vasc absent from train (its prior comes from the add-one count) and df absent from val
    (the log-loss still spans all seven outputs)."""
    probs, labels, train_labels = skewed_predictions(seed=2)
    vasc, df = CLASSES.index("vasc"), CLASSES.index("df")
    train_labels = train_labels[train_labels != vasc]
    keep = labels != df
    decision = fit_decision(probs[keep], labels[keep], train_labels, "macro_f1")
    counts = np.bincount(train_labels, minlength=len(CLASSES)) + 1.0
    assert counts[vasc] == 1 and np.isfinite(decision.shift).all() and len(decision.shift) == len(CLASSES)
    assert decision.shift == pytest.approx((-decision.tau * np.log(counts / counts.sum())).tolist())
    assert decision.objective == "macro_f1" and 0.2 < decision.temperature < 5.0
