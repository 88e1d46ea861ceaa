"""The drift gate inside ``export``: measure the staged bundle, retry int8 with ``--selective``, decide.

A bundle that fails is moved to ``.NAME.rejected/`` beside where it would have gone, with its
report, unless ``--accept-drift`` publishes it anyway (its manifest then says the gate failed).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from toolkit.bundle import MODEL, Bundle
from toolkit.drift import measure_drift, summary, write_report
from toolkit.errors import GateFailed, ToolkitError
from toolkit.export import Attempt, ExportOptions, stage_attempt
from toolkit.paths import portable_path
from toolkit.runs import Run

FLOAT_LAYER_STEPS = (5, 10, 20)  # --selective leaves this many of the worst layers in float, one try each
MORE_CALIBRATION = 3  # --selective first retries with this many times the calibration images


def latency_ms(folder: Path, runs: int = 50, threads: int = 2) -> float:
    """Mean latency of one inference on zeros: enough to price a --selective retry (``bench`` measures properly)."""
    runner = Bundle.open(folder).interpreter(threads)
    details = runner.get_input_details()[0]
    runner.set_tensor(details["index"], np.zeros(details["shape"], details["dtype"]))
    runner.invoke()
    start = time.perf_counter()
    for _ in range(runs):
        runner.invoke()
    return 1000 * (time.perf_counter() - start) / runs


def _measure(
    staging: Path, target: Path, run: Run, model, options: ExportOptions, attempt: Attempt
) -> tuple[dict, dict]:
    report = measure_drift(Bundle.open(staging), run, options.drift_split, options.gate, model=model)
    staged, final = portable_path(staging, staging), portable_path(target, target)
    report["bundle"], report["exported"] = final, report["exported"].replace(staged, final)
    total = report["total"]
    record = {
        "attempt": attempt.label,
        "calibration_images": 0 if attempt.calibration is None else len(attempt.calibration),
        "float_layers": attempt.float_layers,
        "passed": report["gate"]["passed"],
        "top1_agreement": round(total["top1_agreement"], 4),
        "balanced_accuracy_drop_points": round(total["drop_points"]["balanced_accuracy"], 2),
        "model_bytes": (staging / MODEL).stat().st_size,
        "latency_ms_2_threads": round(latency_ms(staging), 2),
    }
    verdict = "passed" if record["passed"] else "FAILED: " + "; ".join(report["gate"]["failures"])
    print(
        f"drift gate ({attempt.label}): top-1 agreement {total['top1_agreement']:.2%}, balanced accuracy drop "
        f"{record['balanced_accuracy_drop_points']:.2f} points: {verdict}"
    )
    return report, record


def _retries(run: Run, model, attempt: Attempt, options: ExportOptions, report: dict) -> list[Attempt]:
    """More calibration images first; then also the worst layers (by the quantization debugger) in float."""
    from toolkit.data.images import load_images
    from toolkit.export.calibration import calibration_images
    from toolkit.export.selective import layer_errors

    quantization = attempt.quantization
    if quantization.mode != "int8" or quantization.backend != "tflite":
        raise ToolkitError("--selective retries int8 exports of the tflite quantizer only")
    rows = run.rows(options.drift_split).head(64)
    probe = load_images(rows["path"].tolist(), run.input_size, run.resize_mode, desc="images for the debugger").images
    print("finding the layers int8 hurts most (TensorFlow quantization debugger)")
    top = max(FLOAT_LAYER_STEPS)
    report["layers"] = layer_errors(model, run.input_size, quantization, attempt.calibration, probe, top=top)
    more, more_rows = calibration_images(run, options.calibration_images * MORE_CALIBRATION, options.seed)
    worst = [layer["tensor"] for layer in report["layers"]]
    return [Attempt(f"{len(more)} calibration images", quantization, more, more_rows)] + [
        Attempt(
            f"{len(more)} calibration images, {count} layers in float",
            quantization,
            more,
            more_rows,
            tuple(worst[:count]),
        )
        for count in FLOAT_LAYER_STEPS
        if count <= len(worst)
    ]


def gate_bundle(
    staging: Path, target: Path, run: Run, model, labels: list[str], attempt: Attempt, options: ExportOptions
) -> None:
    """Gate the staged bundle; write ``drift/`` and the manifest's drift summary; reject it if it fails."""
    from toolkit.export.writer import metrics_summary, update_manifest

    report, record = _measure(staging, target, run, model, options, attempt)
    attempts = [record]
    if not report["gate"]["passed"] and options.selective:
        first = report
        for retry in _retries(run, model, attempt, options, first):
            stage_attempt(staging, target.name, run, model, labels, retry, options)
            report, record = _measure(staging, target, run, model, options, retry)
            attempts.append(record)
            if report["gate"]["passed"]:
                break
        report["layers"] = first["layers"]
    report["attempts"] = attempts
    write_report(report, staging / "drift")
    manifest_metrics = {
        "float": metrics_summary(report["reference_metrics"]),
        "exported": metrics_summary(report["exported_metrics"]),
    }
    referral = {**json.loads((staging / "manifest.json").read_text())["referral"], "test": report["referral"]}
    updates = {"metrics": manifest_metrics, "drift": {**summary(report), "attempts": attempts}, "referral": referral}
    update_manifest(staging, updates, report)
    if report["gate"]["passed"]:
        return
    failures = "; ".join(report["gate"]["failures"])
    if options.accept_drift:
        print(f"warning: drift gate failed ({failures}); publishing anyway because of --accept-drift")
        return
    rejected = target.with_name(f".{target.name}.rejected")
    shutil.rmtree(rejected, ignore_errors=True)
    os.replace(staging, rejected)
    raise GateFailed(
        f"drift gate failed for {target}: {failures}; the bundle and its report are in {rejected}/ "
        f"(retry with --selective, or pass --accept-drift to publish it anyway)"
    )
