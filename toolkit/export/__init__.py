"""Export a training run as a Flutter-ready TFLite bundle: convert, attach metadata, check, write.

Steps, each its own module: :mod:`.calibration` picks the int8 calibration images,
:mod:`.convert` produces the .tflite bytes (:mod:`.litert` for the litert-quantizer back end,
:mod:`.selective` for int8 with some layers left in float), :mod:`.metadata` embeds and re-reads
the metadata, :mod:`.writer` assembles the bundle folder, and :mod:`.gated` runs the drift gate
(:mod:`toolkit.drift`) on it before it is renamed into place.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.classes import CLASSES
from toolkit.drift import Gate
from toolkit.errors import ToolkitError
from toolkit.export.convert import Quantization, convert
from toolkit.paths import portable_path
from toolkit.runs import Run, open_run

DEMO_LICENCE = "Demo model trained on synthetic images: for trying the toolkit only"
DISCLAIMER = "Not a medical device: research and demonstration use only, not for diagnosis."
HAM_LICENCE = "Trained on HAM10000 (CC BY-NC-SA 4.0): non-commercial use only, share alike, credit the HAM10000 authors"


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how; every field has the default ``python -m toolkit export`` uses."""

    run: Path | None = None  # None: the newest finished run under runs/
    quantization: Quantization = field(default_factory=Quantization)
    out: Path = Path("flutter_assets")
    name: str = ""  # "": the run's name
    calibration_images: int = 300
    seed: int = 0
    labels: Path | None = None  # a label file, one per line in output order; default: the class short names
    author: str = "lesion-toolkit"
    licence: str = ""  # "": from the training data
    model_version: str = "1.0.0"
    force: bool = False
    gate: Gate | None = field(default_factory=Gate)  # None: no drift check
    drift_split: str = "test"
    accept_drift: bool = False  # publish even when the gate fails
    selective: bool = False  # int8 failing the gate: retry with more calibration, then with layers in float
    reproduce: tuple[str, ...] = ()  # the commands that rebuild this bundle, for the model card


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
    """The operating points, chosen on the run's float reference over val (:mod:`toolkit.referral`)."""
    from toolkit.referral import DEFAULT_POINT, as_dict, fit_points

    reference = run.reference()
    points = fit_points(reference["val_probs"], reference["val_labels"])
    return {"default": DEFAULT_POINT, "chosen_on": "val", "points": [as_dict(point) for point in points]}


def export_run(options: ExportOptions) -> Path:
    """Export ``options.run`` into ``options.out/NAME/`` and return the bundle folder.

    The bundle is assembled in a hidden staging folder, checked by the drift gate, and only then
    renamed into place; a bundle that fails the gate is kept as ``.NAME.rejected/`` for inspection.
    """
    from toolkit.export.calibration import calibration_images
    from toolkit.export.writer import publish, staging_folder

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
            from toolkit.export.gated import gate_bundle

            gate_bundle(staging, target, run, model, labels, attempt, options)
        return publish(staging, target, options.force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created_out and options.out.is_dir() and not any(options.out.iterdir()):
            options.out.rmdir()  # a failed first export leaves no empty folder behind either


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
    from toolkit.export.metadata import ModelInfo, verify_metadata, write_metadata
    from toolkit.export.writer import build_manifest, preprocessing_recipe, write_files

    quantization = attempt.quantization
    converter = quantization.backend if quantization.mode == "int8" else "tflite"
    print(f"converting {run.path} to {quantization.mode} TFLite (quantizer: {converter}, {attempt.label})")
    if attempt.float_tensors:
        from toolkit.export.selective import convert_selective

        converted = convert_selective(model, run.input_size, quantization, attempt.calibration, attempt.float_tensors)
    else:
        converted = convert(model, run.input_size, quantization, attempt.calibration)
    arch = run.config.get("arch", "unknown")
    info = ModelInfo(
        name=name,
        description=f"Skin-lesion classifier ({arch}, {quantization.mode}) over {len(labels)} classes: "
        f"{', '.join(labels)}. {DISCLAIMER}",
        version=options.model_version,
        author=options.author,
        licence=options.licence or default_licence(run),
    )
    with_metadata = write_metadata(converted, info, labels)
    verify_metadata(with_metadata, info, labels)
    calibration_source = None
    if attempt.calibration_rows is not None:
        counts = attempt.calibration_rows["label"].value_counts().reindex(CLASSES, fill_value=0)
        calibration_source = {
            "images": len(attempt.calibration_rows),
            "seed": options.seed,
            "per_class": {name: int(n) for name, n in counts.items()},
            "bias_correction": quantization.bias_correction,
        }
    manifest = build_manifest(
        name,
        with_metadata,
        labels,
        description={
            "architecture": arch,
            "alpha": run.config.get("alpha") if arch == "mobilenet_v2" else None,
            "input_size": run.input_size,
            "quantization": quantization.mode,
            "quantizer": quantization.backend if quantization.mode == "int8" else None,
            "float_layers": attempt.float_layers,
            "licence": info.licence,
            "disclaimer": DISCLAIMER,
            "training_data": training_data(run),
            "referral": referral_points(run),
            "reproduce": list(options.reproduce),
        },
        preprocessing=preprocessing_recipe(run.resize_mode, quantization.io_dtype),
        metrics={"float": run.metrics.get("test"), "exported": None},
        source={
            "run": portable_path(run.path, options.out),
            "data": "demo" if is_demo(run) else portable_path(run.config.get("data", ""), options.out),
            "trained_with": {key: run.metrics.get(key) for key in ("backend", "device")},
            "calibration": calibration_source,
        },
    )
    check_against_run(manifest, run)
    write_files(folder, with_metadata, labels, manifest)


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
