"""Scoring an exported bundle for a benchmark result: the test split through the app's steps, timed, summarised."""

from __future__ import annotations

import json
import time
from pathlib import Path

from common import in_repo

REPORTED = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "roc_auc_ovr_macro", "ece")


def scores(metrics: dict) -> dict:
    """What a result JSON keeps of the metrics: rounded, per-class recall and AUC, the confusion matrix."""
    return {
        "images": metrics["images"],
        **{key: round(metrics[key], 4) for key in REPORTED},
        "recall": {name: round(entry["recall"], 4) for name, entry in metrics["per_class"].items()},
        "roc_auc_ovr": {name: round(value, 4) for name, value in metrics["roc_auc_ovr"].items()},
        "confusion_matrix": metrics["confusion_matrix"],
    }


def score_bundle(bundle: Path, run: Path, drift_report: dict) -> dict:
    """The test split through the app's steps (decode, resize, feed bytes, dequantise), checked against drift's."""
    from app_steps import app_classify
    from toolkit.base.classes import CLASSES
    from toolkit.base.metrics import compute_metrics
    from toolkit.train.runs import open_run

    rows = open_run(run).rows("test")
    probs, labels, _ = app_classify(bundle, [Path(p) for p in rows["path"]])
    if labels != list(CLASSES):
        raise SystemExit(f"{bundle}/labels.txt is not in HAM10000 order: {labels}")
    metrics = compute_metrics(rows["label_index"].to_numpy(), probs)
    if metrics["confusion_matrix"] != drift_report["exported_metrics"]["confusion_matrix"]:
        raise SystemExit(f"the app's steps and the drift gate scored {bundle} differently: a preprocessing mismatch")
    return metrics


def check(values: dict, targets: dict) -> dict:
    """Each value against its ``(op, bound)`` target: a result's ``targets`` and ``goals``, each marked met or not."""
    return {
        key: {
            "value": values[key],
            "target": f"{op} {bound}",
            "met": bool(values[key] >= bound if op == ">=" else values[key] <= bound),
        }
        for key, (op, bound) in targets.items()
    }


def target_values(int8: dict, drift: dict, model_bytes: int, chain_seconds: float) -> dict:
    """The int8 bundle's numbers under the names ``recipes.TARGETS`` and ``GOALS`` use."""
    return {
        **{key: int8[key] for key in ("balanced_accuracy", "accuracy", "macro_f1")},
        "model_megabytes": round(model_bytes / 1e6, 3),
        "balanced_accuracy_drop_points": drift["balanced_accuracy_drop_points"],
        "top1_agreement": drift["top1_agreement"],
        "chain_minutes": round(chain_seconds / 60, 1),
    }


def bundle_result(bundle: Path, run: Path, passed: bool, seconds: dict, key: str) -> dict:
    """One exported bundle scored through the app's steps and timed at 2 threads."""
    from toolkit.bench.local import bench_local

    manifest = json.loads((bundle / "manifest.json").read_text())
    clock = time.monotonic()
    metrics = score_bundle(bundle, run, json.loads((bundle / "drift" / "drift.json").read_text()))
    seconds[f"score_{key}"] = round(time.monotonic() - clock, 1)
    latency = next(r for r in bench_local([bundle], threads=(2,), runs=100, warmup=10)["results"])
    model_bytes = (bundle / "model.tflite").stat().st_size
    return {
        "path": in_repo(bundle),
        "quantization": manifest["quantization"],
        "quantizer": manifest["quantizer"],
        "float_layers": len(manifest["float_layers"] or []),
        "model_bytes": model_bytes,
        "bundle_bytes": sum(entry["bytes"] for entry in manifest["files"].values()),
        "input": manifest["input"]["dtype"],
        "output": manifest["output"]["dtype"],
        "scores": scores(metrics),
        "drift_gate": {"passed": passed, **manifest["drift"]},
        "referral": [
            {k: point[k] for k in ("name", "threshold", "target_sensitivity", "exported", "flips")}
            for point in manifest["referral"]["test"]
        ],
        "latency_2_threads": {k: latency[k] for k in ("mean_ms", "p50_ms", "p90_ms", "runs")},
    }
