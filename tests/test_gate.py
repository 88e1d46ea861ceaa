"""The gate's arithmetic: it weighs classes, not images, passes on its limits, names each failure in one line, and
counts changed images by class without naming them."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.base.classes import CLASSES
from toolkit.drift.gate import changed_by_class, compare, gate_failures
from toolkit.export.options import Gate


def test_gate_arithmetic():
    labels = np.repeat(np.arange(7), 10)
    before = np.eye(7)[labels] * 0.9 + 0.1 / 7
    after = before.copy()
    after[:2] = np.roll(after[:2], 1, axis=1)  # two akiec images now predicted as bcc
    comparison = compare(labels, before, after)
    assert comparison["top1_agreement"] == pytest.approx(68 / 70) and comparison["changed"] == [0, 1]
    assert comparison["recall_drop_points"]["akiec"] == pytest.approx(20.0)
    assert comparison["drop_points"]["balanced_accuracy"] == pytest.approx(100 * 0.2 / 7)
    failures = gate_failures(comparison, Gate())
    assert len(failures) == 3 and "akiec recall dropped 20.00 points" in failures[2]
    assert gate_failures(comparison, Gate(0.9, 5.0, 25.0)) == []


def test_the_gate_weighs_classes_not_images_when_they_are_imbalanced():
    nv, mel, bkl = CLASSES.index("nv"), CLASSES.index("mel"), CLASSES.index("bkl")
    labels = np.concatenate([np.full(200, nv), np.repeat([c for c in range(7) if c != nv], 10)])  # 260 images
    before = np.eye(7)[labels] * 0.9 + 0.1 / 7
    one_melanoma_missed = before.copy()
    one_melanoma_missed[np.flatnonzero(labels == mel)[0]] = before[0]  # now answered nv
    comparison = compare(labels, before, one_melanoma_missed)
    assert comparison["drop_points"]["accuracy"] == pytest.approx(100 / 260)  # under 1 point: accuracy misses it
    assert comparison["drop_points"]["balanced_accuracy"] == pytest.approx(100 * 0.1 / 7)
    lenient = Gate(min_agreement=0.0, max_recall_drop=100.0)
    assert gate_failures(comparison, lenient) == ["balanced accuracy dropped 1.43 points > 1.0"]
    six_nevi_missed = before.copy()
    six_nevi_missed[:6] = np.eye(7)[bkl] * 0.9 + 0.1 / 7
    comparison = compare(labels, before, six_nevi_missed)
    assert comparison["drop_points"]["accuracy"] == pytest.approx(600 / 260)  # over 2 points: accuracy would fail
    assert comparison["drop_points"]["balanced_accuracy"] == pytest.approx(100 * 0.03 / 7)
    assert gate_failures(comparison, lenient) == []


def test_changed_images_are_counted_by_class_never_named():
    labels = np.array([0, 0, 0, 1, 5, 5])
    before = np.eye(7)[[0, 0, 0, 1, 5, 5]]
    after = np.eye(7)[[2, 2, 0, 1, 4, 2]]
    assert changed_by_class([0, 1, 4, 5], labels, before, after) == [
        {"label": "akiec", "reference": "akiec", "exported": "bkl", "images": 2},
        {"label": "nv", "reference": "nv", "exported": "bkl", "images": 1},
        {"label": "nv", "reference": "nv", "exported": "mel", "images": 1},
    ]


def test_the_gate_passes_at_its_limits_and_judges_every_referral_point():
    labels = np.repeat([CLASSES.index("mel"), CLASSES.index("nv")], [50, 100])
    before = np.eye(7)[labels] * 0.9 + 0.1 / 7
    after = before.copy()
    after[:3] = np.eye(7)[CLASSES.index("nv")] * 0.9 + 0.1 / 7  # 3 of 150 flip: agreement 0.98 exactly
    comparison = compare(labels, before, after)
    assert comparison["top1_agreement"] == pytest.approx(0.98)
    assert comparison["recall_drop_points"]["mel"] == pytest.approx(6.0)  # 47/50 from 50/50
    at_limits = Gate(min_agreement=0.98, max_balanced_accuracy_drop=3.0, max_recall_drop=6.0)
    assert gate_failures(comparison, at_limits) == []  # on each limit is within it
    points = [  # no positives for the first; then 45/50 -> 44/50, exactly the allowed 2 points; then a real move
        {"name": name, "reference": {"sensitivity": {"value": a}}, "exported": {"sensitivity": {"value": b}}}
        for name, a, b in (("empty", None, 0.5), ("at_limit", 45 / 50, 44 / 50), ("moved", 0.9, 0.8))
    ]
    failures = gate_failures(comparison, at_limits, points)
    assert failures == ["sensitivity at moved moved -10.00 points > 2.0"]
    just_over = Gate(min_agreement=0.99, max_balanced_accuracy_drop=2.9, max_recall_drop=5.9)
    assert gate_failures(comparison, just_over) == [
        "top-1 agreement 98.00% < 99%",
        "balanced accuracy dropped 3.00 points > 2.9",
        "mel recall dropped 6.00 points > 5.9",
    ]


def test_compare_reports_every_field_it_promises():
    from scipy.special import rel_entr
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, 60)
    before = rng.dirichlet(np.ones(7), 60)
    after = 0.7 * before + 0.3 * rng.dirichlet(np.ones(7), 60)
    comparison = compare(labels, before, after)
    assert set(comparison) == {
        "images", "top1_agreement", "before", "after", "drop_points", "recall_drop_points", "mean_abs_prob_diff",
        "max_abs_prob_diff", "mean_kl_divergence", "changed", "confusion_before", "confusion_after",
    }  # fmt: skip
    assert comparison["images"] == 60
    assert set(comparison["before"]) == set(comparison["after"]) == {"accuracy", "balanced_accuracy", "macro_f1", "ece"}
    assert set(comparison["drop_points"]) == {"accuracy", "balanced_accuracy", "macro_f1"}
    changed = np.flatnonzero(before.argmax(1) != after.argmax(1))
    assert comparison["changed"] == changed.tolist() and len(changed) > 0
    assert comparison["mean_abs_prob_diff"] == pytest.approx(np.abs(before - after).mean())
    assert comparison["max_abs_prob_diff"] == pytest.approx(np.abs(before - after).max())
    assert comparison["mean_kl_divergence"] == pytest.approx(rel_entr(before, after).sum(axis=1).mean(), rel=1e-3)
    for key, probs in (("confusion_before", before), ("confusion_after", after)):
        assert comparison[key] == confusion_matrix(labels, probs.argmax(1), labels=range(7)).tolist()
