"""The gate: how an exported model's answers differ from the reference's, and whether that may ship."""

from __future__ import annotations

from collections import Counter

import numpy as np

from toolkit.base.classes import CLASSES
from toolkit.base.metrics import compute_metrics
from toolkit.export.options import Gate


def compare(labels: np.ndarray, before: np.ndarray, after: np.ndarray) -> dict:
    """How ``after`` differs from ``before`` on the same images: agreement, metric deltas, probability gaps."""
    metrics_before, metrics_after = compute_metrics(labels, before), compute_metrics(labels, after)
    changed = np.flatnonzero(before.argmax(1) != after.argmax(1))
    eps = 1e-7
    kl = (before * (np.log(before + eps) - np.log(after + eps))).sum(axis=1)
    recall_drop = {
        name: 100 * (metrics_before["per_class"][name]["recall"] - metrics_after["per_class"][name]["recall"])
        for name in CLASSES
        if metrics_before["per_class"][name]["support"]
    }
    headline = ("accuracy", "balanced_accuracy", "macro_f1", "ece")
    return {
        "images": len(labels),
        "top1_agreement": float(1 - len(changed) / len(labels)),
        "before": {key: metrics_before[key] for key in headline},
        "after": {key: metrics_after[key] for key in headline},
        "drop_points": {key: 100 * (metrics_before[key] - metrics_after[key]) for key in headline[:3]},
        "recall_drop_points": recall_drop,
        "mean_abs_prob_diff": float(np.abs(before - after).mean()),
        "max_abs_prob_diff": float(np.abs(before - after).max()),
        "mean_kl_divergence": float(kl.mean()),
        "changed": changed.tolist(),
        "confusion_before": metrics_before["confusion_matrix"],
        "confusion_after": metrics_after["confusion_matrix"],
    }


def gate_failures(comparison: dict, gate: Gate, referral: list[dict] = ()) -> list[str]:
    """What breaks the gate, in words; empty when it passes.

    A sensitivity that moves either way counts: the app quotes the reference's numbers.
    """
    failures = []
    if _exact(comparison["top1_agreement"]) < gate.min_agreement:
        failures.append(f"top-1 agreement {comparison['top1_agreement']:.2%} < {gate.min_agreement:.0%}")
    drop = comparison["drop_points"]["balanced_accuracy"]
    if _exact(drop) > gate.max_balanced_accuracy_drop:
        failures.append(f"balanced accuracy dropped {drop:.2f} points > {gate.max_balanced_accuracy_drop}")
    for name, class_drop in comparison["recall_drop_points"].items():
        if _exact(class_drop) > gate.max_recall_drop:
            failures.append(f"{name} recall dropped {class_drop:.2f} points > {gate.max_recall_drop}")
    for point in referral:
        before, after = point["reference"]["sensitivity"]["value"], point["exported"]["sensitivity"]["value"]
        if before is None or after is None:
            continue  # no positive case in this split: nothing to hold
        drop = 100 * (before - after)
        if _exact(abs(drop)) > gate.max_sensitivity_drop:
            failures.append(f"sensitivity at {point['name']} moved {-drop:+.2f} points > {gate.max_sensitivity_drop}")
    return failures


def _exact(value: float) -> float:
    """``value`` without float noise: a recall falling from 45/50 to 44/50 dropped 2 points, not 2.0000000000000018,
    and a gate that allows 2 must pass it."""
    return round(value, 9)


def changed_by_class(changed: list[int], labels: np.ndarray, before: np.ndarray, after: np.ndarray) -> list[dict]:
    """How many images changed top-1, per (true class, reference answer, exported answer), most first.

    Counts, not image ids: a report is committed with its bundle, and a list of a dataset's image ids with their
    diagnoses is that dataset's metadata, which stays under the dataset's licence beside the data.
    """
    pairs = Counter(
        (CLASSES[labels[i]], CLASSES[int(before[i].argmax())], CLASSES[int(after[i].argmax())]) for i in changed
    )
    return [
        {"label": label, "reference": reference, "exported": exported, "images": count}
        for (label, reference, exported), count in sorted(pairs.items(), key=lambda item: (-item[1], item[0]))
    ]
