"""Referral operating points: thresholds chosen on val, measured on test with intervals, and held by the gate."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.base.classes import CLASSES
from toolkit.base.referral import MAX_THRESHOLD, assess, fit_points, report, score, threshold_for
from toolkit.drift.gate import compare, gate_failures
from toolkit.export.options import Gate

MEL, NV, BCC = CLASSES.index("mel"), CLASSES.index("nv"), CLASSES.index("bcc")


def probabilities(malignant: np.ndarray) -> np.ndarray:
    """Rows whose mel + bcc + akiec sum is ``malignant`` (split mel 0.6, bcc 0.4), the rest on nv."""
    probs = np.zeros((len(malignant), len(CLASSES)))
    probs[:, MEL], probs[:, BCC], probs[:, NV] = 0.6 * malignant, 0.4 * malignant, 1 - malignant
    return probs


def test_threshold_is_the_highest_that_keeps_the_sensitivity():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.95, 0.01])
    positive = np.array([True] * 10 + [False] * 2)
    assert threshold_for(scores, positive, 0.90) == pytest.approx(0.1)  # 9 of 10 positives reach 0.1
    assert threshold_for(scores, positive, 0.95) == pytest.approx(0.05)  # 9.5 needs all 10
    assert threshold_for(scores, positive, 0.5) == pytest.approx(0.5)
    assert ((scores >= threshold_for(scores, positive, 0.9))[positive]).mean() >= 0.9


def test_points_are_fitted_on_val_and_assessed_with_intervals():
    rng = np.random.default_rng(0)
    labels = rng.choice([MEL, BCC, NV], size=600, p=[0.15, 0.1, 0.75])
    malignant = np.clip(np.where(np.isin(labels, [MEL, BCC]), 0.7, 0.2) + rng.normal(0, 0.2, 600), 0, 1)
    probs = probabilities(malignant)
    points = {point.name: point for point in fit_points(probs[:300], labels[:300])}
    assert set(points) == {"malignant_sens90", "malignant_sens95", "melanoma_sens90", "melanoma_sens95"}
    strict, loose = points["malignant_sens95"], points["malignant_sens90"]
    assert strict.threshold < loose.threshold and strict.val_sensitivity >= 0.95 and loose.val_sensitivity >= 0.9
    assert points["melanoma_sens95"].classes == ("mel",)
    np.testing.assert_allclose(score(probs, strict.classes), malignant)
    test = assess(strict, probs[300:], labels[300:])
    positive = np.isin(labels[300:], [MEL, BCC])
    referred = malignant[300:] >= strict.threshold
    assert test["sensitivity"]["value"] == pytest.approx(referred[positive].mean(), abs=1e-4)
    assert test["specificity"]["value"] == pytest.approx((~referred[~positive]).mean(), abs=1e-4)
    assert test["ppv"]["value"] == pytest.approx(positive[referred].mean(), abs=1e-4)
    for key in ("sensitivity", "specificity", "ppv"):
        low, high = test[key]["ci95"]
        assert low < test[key]["value"] < high and high - low < 0.25  # about 70 positives: a few points wide


def test_the_gate_fails_when_referral_sensitivity_moves():
    labels = np.array([MEL] * 50 + [NV] * 50)
    reference = probabilities(np.r_[np.linspace(0.5, 0.9, 50), np.linspace(0.0, 0.3, 50)])
    points = fit_points(reference, labels)
    exported = reference.copy()
    exported[-53:-50] = probabilities(np.full(3, 0.01))  # three sure melanomas now look benign: both flip
    entries = report(points, labels, reference, exported)
    strict = next(entry for entry in entries if entry["name"] == "malignant_sens95")
    assert strict["flips"] == 3 and strict["exported"]["sensitivity"]["value"] == pytest.approx(
        strict["reference"]["sensitivity"]["value"] - 0.06
    )
    comparison = compare(labels, reference, exported)
    lenient = Gate(min_agreement=0.9, max_balanced_accuracy_drop=10, max_recall_drop=10)
    failures = gate_failures(comparison, lenient, entries)
    assert any("sensitivity at malignant_sens95 moved -6.00 points" in failure for failure in failures)
    assert gate_failures(comparison, Gate(0.9, 10, 10, max_sensitivity_drop=6.5), entries) == []


def test_a_split_without_positives_leaves_sensitivity_undefined_not_nan():
    """JSON has no NaN: no malignant image means no sensitivity to report or to gate."""
    labels = np.full(20, NV)
    probs = probabilities(np.linspace(0, 0.5, 20))
    entries = report(fit_points(probs, labels), labels, probs, probs[::-1])
    strict = entries[1]
    assert strict["exported"]["sensitivity"] == {"value": None, "ci95": [None, None]}
    assert strict["exported"]["specificity"]["value"] is not None
    assert gate_failures(compare(labels, probs, probs), Gate(), entries) == []


def test_a_threshold_stays_within_reach_of_an_8_bit_output_and_below_the_score_that_set_it():
    sure = np.array([0.9999991, 0.9999995, 0.99999, 0.1287238])
    positive = np.array([True, True, True, False])
    threshold = threshold_for(sure, positive, 0.9)  # the val scores of a very confident model: 0.99999 and up
    assert MAX_THRESHOLD == 255 / 256 and MAX_THRESHOLD - 1e-6 <= threshold <= MAX_THRESHOLD
    as_uint8 = np.clip(np.round(sure * 256), 0, 255) / 256  # what an int8 bundle's output dequantises to
    assert (as_uint8[positive] >= threshold).all()  # above 255/256 not one of them could be referred
    assert threshold_for(sure, np.zeros(4, bool), 0.9) == 0.0  # no positive on val: refer everyone, never no one
    one = threshold_for(np.array([0.1287238], dtype=np.float32), np.array([True]), 0.9)  # a model's float32 output
    assert one == 0.128723 and one <= 0.1287238  # 6 decimals, rounded down: the positive stays referred
    assert repr(one) == "0.128723"  # written to the manifest as typed, not as float32's 0.12872299551963806


def test_every_field_of_a_point_and_of_its_assessment_is_what_it_says():
    from toolkit.base.referral import SCORES, as_dict, from_dict

    rng = np.random.default_rng(4)
    labels = rng.choice([MEL, BCC, NV], size=200, p=[0.2, 0.1, 0.7])
    probs = probabilities(np.clip(np.where(labels != NV, 0.6, 0.25) + rng.normal(0, 0.2, 200), 0, 1))
    for point in fit_points(probs, labels):
        assert (
            point.classes == SCORES[point.score]
            and point.name == f"{point.score}_sens{point.target_sensitivity:.0%}"[:-1]
        )
        assert point.target_sensitivity in (0.90, 0.95)
        positive, scores = np.isin(labels, [CLASSES.index(c) for c in point.classes]), score(probs, point.classes)
        refer = point.refers(probs)
        assert refer.tolist() == (scores >= point.threshold).tolist()
        assert refer[positive].sum() == np.ceil(point.target_sensitivity * positive.sum())  # the one that set it too
        assert point.val_sensitivity == refer[positive].mean() and point.val_specificity == (~refer[~positive]).mean()
        assert as_dict(point)["classes"] == list(point.classes) and from_dict(as_dict(point)) == point
        result = assess(point, probs, labels, samples=300, seed=5)
        assert result == assess(point, probs, labels, samples=300, seed=5)  # seeded: the card does not change
        assert (result["referred"], result["images"]) == (int(refer.sum()), 200)
        rows = np.random.default_rng(5).integers(0, 200, (300, 200))
        resampled_sensitivity = (refer[rows] & positive[rows]).sum(1) / positive[rows].sum(1)
        low, high = np.percentile(resampled_sensitivity, [2.5, 97.5])
        assert result["sensitivity"]["ci95"] == [round(low, 4), round(high, 4)]
    no_melanoma = np.where(labels == MEL, BCC, labels)
    melanoma = [p for p in fit_points(probs, no_melanoma) if p.score == "melanoma"]
    assert all(p.val_sensitivity == 0.0 and p.threshold == 0.0 for p in melanoma)
