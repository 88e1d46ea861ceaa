"""Export with the drift gate: stage the bundle, measure it, retry int8 with ``--selective``, then publish or reject.

A bundle that fails is moved to ``NAME.rejected/`` beside where it would have gone, with its
report, unless ``--accept-drift`` publishes it anyway (its manifest then says the gate failed).
This is the ``export`` command's entry point: it sits above both the export steps and the drift
measurement it combines.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from toolkit.base.errors import GateFailed, ToolkitError
from toolkit.base.paths import portable_path
from toolkit.base.runtime import timed_invoke
from toolkit.data.images import load_images
from toolkit.drift.measure import DriftReport, measure_drift
from toolkit.drift.report import summary, write_report
from toolkit.export.bundle import MODEL, Bundle
from toolkit.export.calibration import calibration_images
from toolkit.export.options import ExportOptions
from toolkit.export.selective import layer_errors
from toolkit.export.stage import Attempt, read_labels, stage_attempt
from toolkit.export.writer import metrics_summary, publish, staging_folder, update_manifest
from toolkit.train.runs import Run, open_run

FLOAT_LAYER_STEPS = (5, 10, 20)  # --selective leaves this many of the worst layers in float, one try each
MORE_CALIBRATION = 3  # --selective first retries with this many times the calibration images


def latency_ms(folder: Path, runs: int = 50, threads: int = 2) -> float:
    """Mean latency of one inference on zeros: enough to price a --selective retry (``bench`` measures properly)."""
    runner = Bundle.open(folder).interpreter(threads)
    details = runner.get_input_details()[0]
    zeros = np.zeros(details["shape"], details["dtype"])
    timed_invoke(runner, zeros)
    return float(np.mean([timed_invoke(runner, zeros) for _ in range(runs)]))


def _measure(
    staging: Path, target: Path, run: Run, model, options: ExportOptions, attempt: Attempt, last: bool = True
) -> tuple[DriftReport, dict]:
    """The staged bundle's report, naming the folder it will be published to, and this attempt's record.

    An attempt that fails with more to try skips the app paths: only the toolkit's path decides to retry.
    """
    report = measure_drift(
        Bundle.open(staging), run, options.drift_split, options.gate, model=model, apps_when_failing=last
    )
    staged, final = portable_path(staging, staging), portable_path(target, target)
    report = {**report, "bundle": final, "exported": report["exported"].replace(staged, final)}
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
    apps = [f"{name} {part['top1_agreement']:.2%}" for name, part in report["app_paths"].items()]
    apps += [f"{name} not run ({why})" for name, why in report["app_paths_skipped"].items()]
    print(
        f"drift gate ({attempt.label}): top-1 agreement {total['top1_agreement']:.2%} (through the app's steps: "
        f"{', '.join(apps)}), balanced accuracy drop {record['balanced_accuracy_drop_points']:.2f} points: {verdict}"
    )
    return report, record


def _retries(run: Run, model, attempt: Attempt, options: ExportOptions) -> tuple[list[Attempt], list[dict]]:
    """More calibration images first; then also the worst layers (by the quantization debugger) in float.

    Also returns those layers, for the report.
    """
    quantization = attempt.quantization
    if quantization.mode != "int8" or quantization.backend != "tflite":
        raise ToolkitError("--selective retries int8 exports of the tflite quantizer only")
    rows = run.rows(options.drift_split).head(64)
    probe = load_images(rows["path"].tolist(), run.input_size, run.resize_mode, desc="images for the debugger").images
    print("finding the layers int8 hurts most (TensorFlow quantization debugger)")
    top = max(FLOAT_LAYER_STEPS)
    layers = layer_errors(model, run.input_size, quantization, attempt.calibration, probe, top=top)
    more, more_rows = calibration_images(run, options.calibration_images * MORE_CALIBRATION, options.seed)
    worst = [layer["tensor"] for layer in layers]
    retries = [Attempt(f"{len(more)} calibration images", quantization, more, more_rows)] + [
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
    return retries, layers


def gate_bundle(
    staging: Path, target: Path, run: Run, model, labels: list[str], attempt: Attempt, options: ExportOptions
) -> None:
    """Gate the staged bundle; write ``drift/`` and the manifest's drift summary; reject it if it fails."""
    report, record = _measure(staging, target, run, model, options, attempt, last=not options.selective)
    attempts, layers = [record], None
    if not report["gate"]["passed"] and options.selective:
        retries, layers = _retries(run, model, attempt, options)
        for number, retry in enumerate(retries, 1):
            stage_attempt(staging, target.name, run, model, labels, retry, options)
            report, record = _measure(staging, target, run, model, options, retry, last=number == len(retries))
            attempts.append(record)
            if report["gate"]["passed"]:
                break
    report = {**report, **({"layers": layers} if layers is not None else {}), "attempts": attempts}
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
    rejected = target.with_name(f"{target.name}.rejected")
    shutil.rmtree(rejected, ignore_errors=True)
    os.chmod(staging, 0o755)  # mkdtemp's owner-only mode would hide it from whoever reviews it
    os.replace(staging, rejected)
    retry = "" if options.selective else "retry with --selective, or "
    raise GateFailed(
        f"drift gate failed for {target}: {failures}; the bundle and its report are in {rejected}/ "
        f"({retry}pass --accept-drift to publish it anyway)"
    )


def export_run(options: ExportOptions) -> Path:
    """Export ``options.run`` into ``options.out/NAME/`` and return the bundle folder.

    The bundle is assembled in a hidden staging folder, checked by the drift gate, and only then
    renamed into place; a bundle that fails the gate is kept as ``NAME.rejected/`` for inspection.
    """
    run = open_run(options.run)
    target = options.out / (options.name or run.name)
    if target.exists() and not options.force:  # fail before minutes of conversion, not after
        raise ToolkitError(f"bundle {target} already exists: pass --force to replace it")
    model = run.load_model()
    labels = read_labels(options.labels, int(model.output.shape[-1]))
    calibration = calibration_rows = None
    if options.quantization.mode == "int8":
        calibration, calibration_rows = calibration_images(run, options.calibration_images, options.seed)
    created_out = not options.out.exists()
    staging = staging_folder(target)
    try:
        attempt = Attempt("as asked", options.quantization, calibration, calibration_rows)
        stage_attempt(staging, target.name, run, model, labels, attempt, options)
        if options.gate is not None:
            gate_bundle(staging, target, run, model, labels, attempt, options)
        return publish(staging, target, options.force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created_out and options.out.is_dir() and not any(options.out.iterdir()):
            options.out.rmdir()  # a failed first export leaves no empty folder behind either
