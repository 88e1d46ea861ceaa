"""Drift: an exported bundle against the run's float reference, with a gate that fails loudly.

Three models answer on the same images: the **reference** (``reference.npz``, the float model on the
machine that trained it, GPU or CPU), the **float model here** (``model.keras`` on this machine) and
the **exported** model (the bundle's .tflite through the bundle's own preprocessing, or predictions a
phone produced). Reference vs float-here is backend/device drift; float-here vs exported is
quantization drift; the gate judges reference vs exported, what an app finally shows.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.bundle import Bundle
from toolkit.classes import CLASSES
from toolkit.errors import ToolkitError
from toolkit.evaluate import compute_metrics, draw_confusion
from toolkit.paths import find_portable, portable_path
from toolkit.referral import OperatingPoint, fit_points, from_dict
from toolkit.referral import report as referral_report
from toolkit.runs import Run, open_run

GATE_FAILED = 1


@dataclass(frozen=True)
class Gate:
    """Release thresholds: exported vs reference. Points are percentage points."""

    min_agreement: float = 0.98
    max_balanced_accuracy_drop: float = 1.0
    max_recall_drop: float = 3.0
    max_sensitivity_drop: float = 2.0  # at each referral operating point


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


def operating_points(bundle: Bundle, run: Run) -> list[OperatingPoint]:
    """The bundle's referral points (what the app uses), or, for an older bundle, the run's fitted on val."""
    points = bundle.manifest.get("referral", {}).get("points")
    if points:
        return [from_dict(point) for point in points]
    reference = run.reference()
    return fit_points(reference["val_probs"], reference["val_labels"])


def read_predictions(path: Path, bundle: Bundle) -> pd.DataFrame:
    """Device predictions: image id -> probabilities, from CSV or JSON lines (see README for the format).

    CSV: ``image_id`` and one column per label with probabilities. JSON lines: one object per image
    with ``image_id`` and either ``probabilities`` or ``output`` (the raw output tensor values,
    dequantised here with the manifest's scale and zero point).
    """
    if not path.is_file():
        raise ToolkitError(f"predictions file not found: {path}")
    rows = {}
    if path.suffix.lower() == ".csv":
        table = pd.read_csv(path, dtype={"image_id": str})
        missing = [c for c in ("image_id", *bundle.labels) if c not in table.columns]
        if missing:
            raise ToolkitError(f"predictions {path} lacks column(s) {', '.join(missing)}")
        rows = {r.image_id: r[list(bundle.labels)].to_numpy(float) for _, r in table.iterrows()}
    else:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                values = record["probabilities"] if "probabilities" in record else record["output"]
                raw = np.asarray(values, dtype=float)
                image_id = str(record["image_id"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise ToolkitError(f"predictions {path} line {number}: not a prediction record ({error})") from None
            is_raw = "probabilities" not in record
            rows[image_id] = bundle.from_output(raw) if is_raw else raw
    bad = [image_id for image_id, probs in rows.items() if len(probs) != len(bundle.labels)]
    if bad:
        raise ToolkitError(
            f"predictions {path}: {bad[0]} has a wrong number of classes (expected {len(bundle.labels)})"
        )
    return pd.DataFrame.from_dict(rows, orient="index", columns=bundle.labels)


def export_eval_pack(bundle: Bundle, run: Run, split: str, out: Path) -> Path:
    """The split's images resized as the bundle expects, as lossless PNGs, with ``eval_pack.csv`` listing them.

    A phone app feeds each PNG's RGB bytes to the model unchanged (no resizing on the device), writes
    one prediction record per image, and ``drift --predictions`` holds the result to the same gate.
    """
    import cv2

    ids = run.reference()[f"{split}_ids"]
    rows = run.table.set_index("image_id").loc[ids]
    images = bundle.load(rows["path"].tolist(), desc="resizing for the eval pack")
    if out.exists() and any(out.iterdir()):
        raise ToolkitError(f"eval pack folder {out} is not empty")
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / "images").mkdir(parents=True)
        for image_id, image in zip(ids, images, strict=True):
            cv2.imwrite(str(staging / "images" / f"{image_id}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        listing = pd.DataFrame({"image_id": ids, "file": [f"images/{i}.png" for i in ids], "label": rows["label"]})
        listing.to_csv(staging / "eval_pack.csv", index=False)
        shutil.copy(bundle.path / "manifest.json", staging / "manifest.json")
        if out.exists():
            out.rmdir()  # empty: checked above
        os.replace(staging, out)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise ToolkitError(f"cannot write the eval pack to {out}: {error.strerror}") from None
    return out


def run_of(bundle: Bundle, run: Path | None) -> Run:
    """The run to compare against: the one given, or the one the bundle's manifest names."""
    if run is None:
        named = bundle.manifest.get("source", {}).get("run")
        if not named:
            raise ToolkitError(f"{bundle.path / 'manifest.json'} names no source run: pass --run DIR")
        run = find_portable(named, bundle.path)
    return open_run(run)


def measure_drift(
    bundle: Bundle,
    run: Run,
    split: str = "test",
    gate: Gate = Gate(),
    predictions: Path | None = None,
    model=None,
) -> dict:
    """The full drift report of ``bundle`` (or of device ``predictions``) against ``run``'s reference.

    ``model`` is the run's float model if the caller has it loaded already (export does: loading takes seconds).
    """
    import keras

    from toolkit.train import predict, training_device

    reference = run.reference()
    if f"{split}_ids" not in reference:
        raise ToolkitError(f"{run.path / 'reference.npz'} holds no {split} predictions")
    ids, labels, reference_probs = (reference[f"{split}_{k}"] for k in ("ids", "labels", "probs"))
    paths = run.table.set_index("image_id").loc[ids, "path"].tolist()
    images = bundle.load(paths, desc=f"loading {split} images")
    if (run.input_size, run.resize_mode) == (bundle.input_size, bundle.resize_mode):
        float_inputs = images
    else:
        from toolkit.data.images import load_images

        float_inputs = load_images(paths, run.input_size, run.resize_mode).images
    float_probs = predict(run.load_model() if model is None else model, float_inputs, "float model here")
    if predictions is None:
        model_file = portable_path(bundle.path / "model.tflite", bundle.path)
        exported, source = bundle.predict(images), f"{model_file} (ai_edge_litert, XNNPACK, CPU)"
    else:
        table = read_predictions(predictions, bundle)
        missing = [i for i in ids if i not in table.index]
        if missing:
            raise ToolkitError(f"predictions {predictions} lack {len(missing)} {split} image(s), e.g. {missing[0]}")
        exported, source = table.loc[ids].to_numpy(np.float32), str(predictions)
    total = compare(labels, reference_probs, exported)
    referral = referral_report(operating_points(bundle, run), labels, reference_probs, exported)
    failures = gate_failures(total, gate, referral)
    return {
        "bundle": portable_path(bundle.path, bundle.path),  # the report may be committed with the bundle
        "run": portable_path(run.path, bundle.path),
        "split": split,
        "images": len(ids),
        "reference": {"backend": str(reference["backend"]), "device": str(reference["device"])},
        "here": {"backend": keras.backend.backend(), "device": training_device()},
        "exported": source,
        "quantization": bundle.manifest.get("quantization"),
        "gate": {**asdict(gate), "passed": not failures, "failures": failures},
        "total": total,
        "exported_metrics": compute_metrics(labels, exported),
        "reference_metrics": compute_metrics(labels, reference_probs),
        "referral": referral,
        "device_drift": compare(labels, reference_probs, float_probs),
        "quantization_drift": compare(labels, float_probs, exported),
        "changed_by_class": changed_by_class(total["changed"], labels, reference_probs, exported),
    }


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


def summary(report: dict) -> dict:
    """The few numbers that go into the bundle's manifest."""
    total = report["total"]
    return {
        "split": report["split"],
        "images": report["images"],
        "passed": report["gate"]["passed"],
        "failures": report["gate"]["failures"],
        "top1_agreement": round(total["top1_agreement"], 4),
        "balanced_accuracy_drop_points": round(total["drop_points"]["balanced_accuracy"], 2),
        "max_recall_drop_points": round(max(total["recall_drop_points"].values(), default=0.0), 2),
        "mean_abs_prob_diff": round(total["mean_abs_prob_diff"], 4),
        "referral_flips": {point["name"]: point["flips"] for point in report.get("referral", [])},
        "reference": report["reference"],
    }


def markdown(report: dict) -> str:
    total, gate = report["total"], report["gate"]
    verdict = "PASSED" if gate["passed"] else "FAILED: " + "; ".join(gate["failures"])
    lines = [
        f"# Drift report: {Path(report['bundle']).name} ({report['quantization']}), {report['split']} split",
        "",
        f"Gate {verdict}. Thresholds: top-1 agreement >= {gate['min_agreement']:.0%}, balanced accuracy drop <= "
        f"{gate['max_balanced_accuracy_drop']} points, per-class recall drop <= {gate['max_recall_drop']} points, "
        f"referral sensitivity change <= {gate['max_sensitivity_drop']} points.",
        "",
        f"{report['images']} images. Reference: float model on {report['reference']['device']} "
        f"({report['reference']['backend']}). Here: {report['here']['device']} ({report['here']['backend']}). "
        f"Exported: {report['exported']}.",
        "",
        "| | top-1 agreement | mean abs prob diff | max abs prob diff | mean KL | balanced accuracy drop (points) |",
        "|---|---|---|---|---|---|",
    ]
    for key, title in (
        ("device_drift", "reference -> float here (backend/device)"),
        ("quantization_drift", "float here -> exported (quantization)"),
        ("total", "reference -> exported (gated)"),
    ):
        part = report[key]
        lines.append(
            f"| {title} | {part['top1_agreement']:.2%} | {part['mean_abs_prob_diff']:.4f} | "
            f"{part['max_abs_prob_diff']:.4f} | {part['mean_kl_divergence']:.4f} | "
            f"{part['drop_points']['balanced_accuracy']:.2f} |"
        )
    lines += ["", "| metric | reference | exported | drop (points) |", "|---|---|---|---|"]
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        lines.append(
            f"| {key} | {total['before'][key]:.4f} | {total['after'][key]:.4f} | {total['drop_points'][key]:.2f} |"
        )
    lines.append(f"| ece | {total['before']['ece']:.4f} | {total['after']['ece']:.4f} | |")
    lines += [
        "",
        "Recall drop per class (points): "
        + ", ".join(f"{name} {drop:+.2f}" for name, drop in total["recall_drop_points"].items()),
    ]
    if report.get("referral"):
        lines += [
            "",
            "| referral point | threshold | sensitivity reference | sensitivity exported | decisions flipped |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {p['name']} | {p['threshold']:.4f} | {p['reference']['sensitivity']['value']} | "
            f"{p['exported']['sensitivity']['value']} | {p['flips']} of {p['exported']['images']} |"
            for p in report["referral"]
        ]
    if report["changed_by_class"]:
        changed = sum(c["images"] for c in report["changed_by_class"])
        lines += ["", f"Top-1 changed on {changed} image(s), by true class:", ""]
        lines += [
            f"- {c['label']}: {c['reference']} -> {c['exported']} ({c['images']})" for c in report["changed_by_class"]
        ]
    if report.get("layers"):
        lines += ["", "Layers with the largest int8 error (RMSE / scale, TensorFlow's quantization debugger):", ""]
        lines += [
            f"- {layer['op']} {layer['tensor'].split(';')[0]}: {layer['rmse_over_scale']:.3f}"
            for layer in report["layers"]
        ]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Both confusion matrices and the per-class recall drops, side by side."""
    import matplotlib.pyplot as plt

    total = report["total"]
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    draw_confusion(axes[0], total["confusion_before"], "reference (float)", fontsize=7)
    draw_confusion(axes[1], total["confusion_after"], "exported", fontsize=7)
    drops = total["recall_drop_points"]
    colours = ["tab:red" if d > report["gate"]["max_recall_drop"] else "tab:grey" for d in drops.values()]
    axes[2].bar(list(drops), list(drops.values()), color=colours)
    axes[2].axhline(report["gate"]["max_recall_drop"], color="tab:red", linestyle="--", linewidth=1, label="gate")
    axes[2].set(title="recall drop, reference -> exported (points)", ylabel="points")
    axes[2].legend()
    verdict = "gate passed" if report["gate"]["passed"] else "gate FAILED"
    figure.suptitle(f"{Path(report['bundle']).name}, {report['split']} split: {verdict}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(report: dict, out: Path) -> Path:
    """``drift.json``, ``drift.md`` and ``drift.png`` in ``out``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "drift.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "drift.md").write_text(markdown(report))
    except OSError as error:
        raise ToolkitError(f"cannot write the drift report to {out}: {error.strerror}") from None
    plot(report, out / "drift.png")
    return out
