"""Stage one bundle: convert the run's model as an attempt says, embed the metadata, write every file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.base.classes import CLASSES
from toolkit.base.errors import ToolkitError
from toolkit.base.paths import portable_path
from toolkit.base.referral import DEFAULT_POINT, as_dict, fit_points
from toolkit.export.bundle import NOT_A_DEVICE
from toolkit.export.convert import convert
from toolkit.export.metadata import ModelInfo, verify_metadata, write_metadata
from toolkit.export.options import ExportOptions
from toolkit.export.quantization import Quantization
from toolkit.export.selective import convert_selective
from toolkit.export.writer import build_manifest, preprocessing_recipe, write_files
from toolkit.train.runs import Run

DEMO_LICENCE = "Demo model trained on synthetic images: for trying the toolkit only"
HAM_LICENCE = "Trained on HAM10000 (CC BY-NC-SA 4.0): non-commercial use only, share alike, credit the HAM10000 authors"


def read_labels(path: Path | None, outputs: int) -> list[str]:
    """The labels, checked against the model's output count."""
    if path is None:
        labels = list(CLASSES)
    elif not Path(path).is_file():
        raise ToolkitError(f"label file not found: {path}")
    else:
        labels = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if len(labels) != outputs:
        where = path or "the default labels"
        raise ToolkitError(f"{where} has {len(labels)} labels but the model has {outputs} outputs")
    for index, label in enumerate(labels):  # a renaming is fine; naming another class's output is not
        if label in CLASSES and CLASSES.index(label) != index:
            raise ToolkitError(
                f"{path} puts {label!r} on output {index}, which is {CLASSES[index]}: "
                f"keep the outputs' order ({', '.join(CLASSES)})"
            )
    return labels


def is_demo(run: Run) -> bool:
    return run.config.get("data") == "demo"


def default_licence(run: Run) -> str:
    return DEMO_LICENCE if is_demo(run) else HAM_LICENCE


def training_data(run: Run) -> dict:
    """What the model learned from, for the manifest and the model card (a demo model must say so everywhere)."""
    data = str(run.config.get("data", ""))
    counts = run.table["split"].value_counts()
    return {
        "demo": is_demo(run),
        "name": "synthetic demo set (not dermoscopy)"
        if is_demo(run)
        else "HAM10000 (dermoscopy, 7 classes)"
        if "ham10000" in data.lower()
        else f"the dataset at {data}",
        "split": {
            "by": "lesion_id",
            "seed": run.config.get("seed", 0),
            "val": run.config.get("val", 0.15),
            "test": run.config.get("test", 0.15),
            "images": {split: int(counts.get(split, 0)) for split in ("train", "val", "test")},
        },
    }


def referral_points(run: Run) -> dict:
    """The operating points, chosen on the run's float reference over val (:mod:`toolkit.base.referral`)."""
    reference = run.reference()
    points = fit_points(reference["val_probs"], reference["val_labels"])
    return {"default": DEFAULT_POINT, "chosen_on": "val", "points": [as_dict(point) for point in points]}


@dataclass
class Attempt:
    """One way of converting: the quantization, its calibration set, and float layers for --selective."""

    label: str
    quantization: Quantization
    calibration: np.ndarray | None
    calibration_rows: pd.DataFrame | None
    float_tensors: tuple[str, ...] = ()

    @property
    def float_layers(self) -> list[str]:
        """The float tensors' readable names: fused names list every folded op after the first ';'."""
        return [name.split(";")[0] for name in self.float_tensors]


def stage_attempt(
    folder: Path, name: str, run: Run, model, labels: list[str], attempt: Attempt, options: ExportOptions
):
    """Convert as ``attempt`` says, embed and verify the metadata, and write every bundle file into ``folder``."""
    quantization = attempt.quantization
    how = f" (quantizer: {quantization.backend}, {attempt.label})" if quantization.mode == "int8" else ""
    print(f"converting {run.path} to {quantization.mode} TFLite{how}")
    if attempt.float_tensors:
        converted = convert_selective(model, run.input_size, quantization, attempt.calibration, attempt.float_tensors)
    else:
        converted = convert(model, run.input_size, quantization, attempt.calibration)
    arch = run.config.get("arch", "unknown")
    info = ModelInfo(
        name=name,
        description=f"Skin-lesion classifier ({arch}, {quantization.mode}) over {len(labels)} classes: "
        f"{', '.join(labels)}. {NOT_A_DEVICE}",
        version=options.model_version,
        author=options.author,
        licence=options.licence or default_licence(run),
    )
    with_metadata = write_metadata(converted, info, labels)
    verify_metadata(with_metadata, info, labels)
    manifest = build_manifest(
        name,
        with_metadata,
        labels,
        description={
            "architecture": arch,
            "alpha": run.config.get("alpha") if arch == "mobilenet_v2" else None,
            "input_size": run.input_size,
            "views": run.config.get("views", 1),  # mirror views averaged inside the model: latency grows with them
            "quantization": quantization.mode,
            "quantizer": quantization.backend if quantization.mode == "int8" else None,
            "float_layers": attempt.float_layers,
            "licence": info.licence,
            "disclaimer": NOT_A_DEVICE,
            "training_data": training_data(run),
            "referral": referral_points(run),
            "reproduce": list(options.reproduce),
        },
        preprocessing=preprocessing_recipe(run.resize_mode, quantization.io_dtype),
        metrics={"float": run.metrics.get("test"), "exported": None},
        source={
            "run": portable_path(run.path, options.out),
            "model_sha256": run.model_sha256,
            "data": "demo" if is_demo(run) else portable_path(run.config.get("data", ""), options.out),
            "trained_with": {key: run.metrics.get(key) for key in ("backend", "device")},
            "calibration": _calibration_source(attempt, options.seed),
        },
    )
    check_against_run(manifest, run)
    write_files(folder, with_metadata, labels, manifest)


def _calibration_source(attempt: Attempt, seed: int) -> dict | None:
    """What the int8 calibration drew from train, per class, for the manifest; None for a float bundle."""
    if attempt.calibration_rows is None:
        return None
    counts = attempt.calibration_rows["label"].value_counts().reindex(CLASSES, fill_value=0)
    return {
        "images": len(attempt.calibration_rows),
        "seed": seed,
        "per_class": {name: int(n) for name, n in counts.items()},
        "bias_correction": attempt.quantization.bias_correction,
    }


def check_against_run(manifest: dict, run: Run) -> None:
    """Refuse a manifest that would make an app feed the model otherwise than the run trained it.

    Every reader of a bundle (the app, ``predict``, the drift gate) follows the manifest, so they
    would agree with each other on a wrong recipe; only the run's config can catch it.
    """
    size = run.input_size
    expected = {"resize_mode": run.resize_mode, "input shape": [1, size, size, 3], "color_order": "RGB"}
    found = {
        "resize_mode": manifest["preprocessing"]["resize_mode"],
        "input shape": list(manifest["input"]["shape"]),
        "color_order": manifest["preprocessing"]["color_order"],
    }
    for key, value in expected.items():
        if found[key] != value:
            raise ToolkitError(
                f"the bundle's manifest says {key} {found[key]} but {run.path} was trained with {value}: "
                "this is a toolkit bug, please report it"
            )
