"""Measure drift: the bundle (or a phone's predictions) and the float model here against the run's reference."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd

from toolkit.base.errors import ToolkitError
from toolkit.base.metrics import compute_metrics
from toolkit.base.paths import find_portable, portable_path
from toolkit.base.referral import OperatingPoint, fit_points, from_dict
from toolkit.base.referral import report as referral_report
from toolkit.drift.gate import changed_by_class, compare, gate_failures
from toolkit.export.bundle import Bundle
from toolkit.export.options import Gate
from toolkit.train.runs import Run, open_run


class DriftReport(TypedDict, total=False):
    """What ``measure_drift`` finds, as ``drift.json`` stores it; export's gate adds the last two keys."""

    bundle: str  # paths relative to the checkout: the report may be committed with its bundle
    run: str
    split: str
    images: int
    reference: dict  # backend and device of the float reference
    here: dict  # backend and device of the float model run here
    exported: str  # what produced the exported answers: the bundle's model, or a phone's predictions file
    quantization: str | None
    gate: dict  # the thresholds, passed, failures
    total: dict  # reference -> exported (gated): see :func:`toolkit.drift.gate.compare`
    exported_metrics: dict
    reference_metrics: dict
    referral: list[dict]  # per operating point: threshold, sensitivity and specificity on both sides, flips
    device_drift: dict  # reference -> float here
    quantization_drift: dict  # float here -> exported
    changed_by_class: list[dict]
    app_paths: dict  # name -> reference -> exported through that app-side implementation (gated)
    app_paths_skipped: dict  # name -> why that implementation could not run here
    layers: list[dict]  # export --selective: the layers int8 hurt most
    attempts: list[dict]  # export: one record per conversion tried


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
        try:
            table = pd.read_csv(path, dtype={"image_id": str})
        except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
            raise ToolkitError(f"predictions {path} is not a CSV file: give CSV or JSON lines") from None
        missing = [c for c in ("image_id", *bundle.labels) if c not in table.columns]
        if missing:
            raise ToolkitError(f"predictions {path} lacks column(s) {', '.join(missing)}")
        rows = {r.image_id: r[list(bundle.labels)].to_numpy(float) for _, r in table.iterrows()}
    else:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise ToolkitError(f"predictions {path} is not text: give CSV or JSON lines") from None
        for number, line in enumerate(text.splitlines(), 1):
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
    for image_id, probs in rows.items():
        _check_probabilities(path, image_id, probs, len(bundle.labels))
    return pd.DataFrame.from_dict(rows, orient="index", columns=bundle.labels)


def _inputs(bundle: Bundle, run: Run, paths: list[str], split: str) -> tuple[np.ndarray, np.ndarray]:
    """The images as the bundle takes them, and as the run's float model takes them (the same, unless the
    bundle was exported at another size or resize mode)."""
    images = bundle.load(paths, desc=f"loading {split} images")
    if (run.input_size, run.resize_mode) == (bundle.input_size, bundle.resize_mode):
        return images, images
    from toolkit.data.images import load_images

    return images, load_images(paths, run.input_size, run.resize_mode).images


def app_paths(
    bundle: Bundle, paths: list[str], labels: np.ndarray, reference_probs: np.ndarray, skip: str = ""
) -> tuple[dict, dict]:
    """The reference against the bundle run through each app-side implementation that can run here, not through
    the toolkit's steps; and why each other one could not run (all of them, with ``skip`` saying why).

    ``python``: ``app_steps`` (decode, the contract's resize as ``resize.js`` writes it, the manifest's
    arithmetic). ``browser``: the preview page in headless Chromium (the browser's decoder, ``resize.js``, LiteRT.js).
    """
    if skip:
        return {}, dict.fromkeys(("python", "browser"), skip)
    from app_steps import app_classify
    from toolkit.preview.browser import browser_classify, unavailable

    python, _, _ = app_classify(bundle.path, [Path(path) for path in paths])
    measured, skipped = {"python": compare(labels, reference_probs, python)}, {}
    reason = unavailable()
    if reason:
        skipped["browser"] = reason
    else:
        measured["browser"] = compare(labels, reference_probs, browser_classify(bundle.path, paths))
    return measured, skipped


def app_failures(measured: dict, gate: Gate) -> list[str]:
    """Each app path is held to the same top-1 agreement as the toolkit's path."""
    return [
        f"the app's steps ({name}): top-1 agreement {path['top1_agreement']:.2%} < {gate.min_agreement:.0%}"
        for name, path in measured.items()
        if path["top1_agreement"] < gate.min_agreement
    ]


def _device_predictions(path: Path, bundle: Bundle, ids: np.ndarray, split: str) -> np.ndarray:
    """The device's probabilities for the split's images, in the reference's order."""
    table = read_predictions(path, bundle)
    missing = [i for i in ids if i not in table.index]
    if missing:
        raise ToolkitError(f"predictions {path} lack {len(missing)} {split} image(s), e.g. {missing[0]}")
    return table.loc[ids].to_numpy(np.float32)


def _check_probabilities(path: Path, image_id: str, probs: np.ndarray, classes: int) -> None:
    """One image's probabilities: one per class, each in [0, 1], summing to 1 (within 0.05: int8 rounds each)."""
    if len(probs) != classes:
        raise ToolkitError(f"predictions {path}: {image_id} has a wrong number of classes (expected {classes})")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1 or abs(probs.sum() - 1) > 0.05:
        raise ToolkitError(
            f"predictions {path}: {image_id} is not a probability vector (values {probs.min():g} to "
            f'{probs.max():g}, sum {probs.sum():g}); raw outputs go under "output", probabilities under '
            '"probabilities"'
        )


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
    """The run to compare against: the one given, or the one the bundle's manifest names; either way the run
    whose ``model.keras`` the bundle was exported from, when the manifest recorded it."""
    source, manifest = bundle.manifest.get("source", {}), bundle.path / "manifest.json"
    given = run is not None
    if not given:
        if not source.get("run"):
            raise ToolkitError(f"{manifest} names no source run: pass --run DIR")
        run = find_portable(source["run"], bundle.path)
    opened = open_run(run)
    recorded = source.get("model_sha256")
    if recorded and opened.model_sha256 != recorded:
        differs = f"its model.keras sha256 differs from {manifest} source.model_sha256"
        if given:
            raise ToolkitError(f"{run} is not the run {bundle.path} was exported from ({differs}): pass that run")
        raise ToolkitError(
            f"the run {run} changed since {bundle.path} was exported ({differs}): re-export the bundle, "
            "or restore the run"
        )
    return opened


def measure_drift(
    bundle: Bundle,
    run: Run,
    split: str = "test",
    gate: Gate = Gate(),
    predictions: Path | None = None,
    model=None,
    apps_when_failing: bool = True,
) -> DriftReport:
    """The full drift report of ``bundle`` (or of device ``predictions``) against ``run``'s reference.

    ``model`` is the run's float model if the caller has it loaded already (export does: loading takes seconds).
    Without ``apps_when_failing`` (a ``--selective`` retry follows), failing here skips the slow app paths.
    """
    import keras

    from toolkit.base.runtime import training_device
    from toolkit.model.classifier import predict

    reference = run.reference()
    if f"{split}_ids" not in reference:
        raise ToolkitError(f"{run.path / 'reference.npz'} holds no {split} predictions")
    ids, labels, reference_probs = (reference[f"{split}_{k}"] for k in ("ids", "labels", "probs"))
    device = None if predictions is None else _device_predictions(predictions, bundle, ids, split)  # checked first
    paths = run.table.set_index("image_id").loc[ids, "path"].tolist()
    images, float_inputs = _inputs(bundle, run, paths, split)
    float_probs = predict(run.load_model() if model is None else model, float_inputs, "float model here")
    if predictions is None:
        model_file = portable_path(bundle.path / "model.tflite", bundle.path)
        exported, source = bundle.predict(images), f"{model_file} (ai_edge_litert, XNNPACK, CPU)"
    else:
        exported, source = device, str(predictions)
    total = compare(labels, reference_probs, exported)
    referral = referral_report(operating_points(bundle, run), labels, reference_probs, exported)
    failures = gate_failures(total, gate, referral)
    skip = "the gate failed before them: a retry follows" if failures and not apps_when_failing else ""
    measured, skipped = ({}, {}) if predictions is not None else app_paths(bundle, paths, labels, reference_probs, skip)
    failures += app_failures(measured, gate)
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
        "app_paths": measured,
        "app_paths_skipped": skipped,
        "changed_by_class": changed_by_class(total["changed"], labels, reference_probs, exported),
    }
