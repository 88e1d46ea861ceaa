"""The bundle folder: model, labels, manifest, the app developer's README and a Dart class.

The folder is assembled in a temporary sibling and renamed into place, so a failed export never
leaves half a bundle, and an existing bundle is only replaced when asked.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from toolkit import __version__
from toolkit.base.classes import CLASSES, DISPLAY_NAMES
from toolkit.base.errors import ToolkitError
from toolkit.base.io import write_json
from toolkit.base.runtime import interpreter
from toolkit.export.bundle import LABELS, MANIFEST, MODEL, SCHEMA_VERSION

TEMPLATES = Path(__file__).resolve().parent / "templates"
README, DART, DART_TEST = "README.md", "lesion_classifier.dart", "lesion_classifier_test.dart"
STAGING = "staging-"  # .NAME.staging-PID-xxxxxxxx/: a bundle being assembled by process PID
DECODE = (
    "EXIF orientation applied first; no colour management; to 8-bit RGB as browsers decode: grayscale repeated "
    "into R, G and B, 16-bit reduced to its high byte, palettes expanded, an opaque alpha channel dropped; "
    "any transparency (alpha below 255) refused"
)
INTERPOLATION = (
    "per axis: area averaging with fractional edge weights when it shrinks, linear with half-pixel centres and "
    "clamped edges when it grows; taps summed in float64 in source order, columns then rows, rounded half up once "
    "(toolkit/data/resize.py; resize.js and lesion_classifier.dart compute the same bytes)"
)


def tensor_spec(model: bytes) -> dict[str, dict]:
    """Name, shape, dtype, scale and zero point of the model's input and output, as the interpreter sees them."""
    runner = interpreter(model, xnnpack=False)

    def describe(details: dict) -> dict:
        scale, zero_point = details["quantization"]
        return {
            "name": details["name"],
            "shape": [int(d) for d in details["shape"]],
            "dtype": np.dtype(details["dtype"]).name,
            "scale": float(scale) if scale else 1.0,
            "zero_point": int(zero_point),
        }

    return {"input": describe(runner.get_input_details()[0]), "output": describe(runner.get_output_details()[0])}


def metrics_summary(metrics: dict | None) -> dict | None:
    """The headline numbers of :func:`toolkit.evaluate.compute_metrics`, without the long tables."""
    if not metrics:
        return None
    keys = ("images", "accuracy", "balanced_accuracy", "macro_f1", "roc_auc_ovr_macro", "ece")
    summary = {key: round(metrics[key], 4) if isinstance(metrics[key], float) else metrics[key] for key in keys}
    summary["recall"] = {name: round(value["recall"], 4) for name, value in metrics["per_class"].items()}
    return summary


def build_manifest(
    name: str, model: bytes, labels: list[str], description: dict, preprocessing: dict, metrics: dict, source: dict
) -> dict:
    """Everything an app needs to feed the model and read its answer, and where the model came from."""
    tensors = tensor_spec(model)
    tensors["input"]["metadata_name"], tensors["output"]["metadata_name"] = "image", "probabilities"
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        **description,
        **tensors,
        "preprocessing": preprocessing,
        "classes": [
            {"id": i, "short_name": short, "display_name": DISPLAY_NAMES.get(short, label), "label": label}
            for i, (short, label) in enumerate(zip(CLASSES, labels, strict=True))
        ],
        "metrics": {key: metrics_summary(value) for key, value in metrics.items()},
        "source": {**source, "toolkit_version": __version__, "created": datetime.date.today().isoformat()},
    }


def preprocessing_recipe(resize_mode: str, input_dtype: str) -> dict:
    feed = {
        "uint8": "raw RGB bytes",
        "int8": "RGB bytes minus 128, as int8",
        "float32": "RGB values 0-255 as float32 (not normalised)",
    }
    return {
        "decode": DECODE,
        "color_order": "RGB",
        "layout": "NHWC",
        "resize_mode": resize_mode,
        "resize": "squash: stretch to the input size"
        if resize_mode == "squash"
        else "pad: keep the aspect ratio, scale the longer side to the input size (the other rounded half up), "
        "centre (offsets rounded down), pad with black",
        "interpolation": INTERPOLATION,
        "pad_value": [0, 0, 0],
        "value_range": [0, 255],
        "feed": feed[input_dtype],
        "normalisation": "inside the model",
    }


def _render(template: str, values: dict[str, str]) -> str:
    text = (TEMPLATES / template).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def staging_folder(out: Path) -> Path:
    """A fresh hidden folder beside ``out`` to assemble the bundle in.

    Its name carries this process's id, so the next export removes the folders of exports that were killed.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_staging(out.parent)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.{STAGING}{os.getpid()}-", dir=out.parent))
    except OSError as error:
        raise ToolkitError(f"cannot write to {out.parent}: {error.strerror}") from None


def remove_dead_staging(folder: Path) -> None:
    """Remove the staging folders in ``folder`` whose export process no longer runs (killed, or the machine
    restarted)."""
    for path in folder.glob(f".*.{STAGING}*-*"):
        pid = path.name.rpartition(f".{STAGING}")[2].partition("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_files(folder: Path, model: bytes, labels: list[str], manifest: dict) -> None:
    """Model, labels, the Dart test's golden files, then the documents and manifest (:func:`write_docs`)."""
    from toolkit.export.golden import write_goldens

    (folder / MODEL).write_bytes(model)
    (folder / LABELS).write_text("\n".join(labels) + "\n")
    write_goldens(folder, model, manifest)
    write_docs(folder, manifest)


def write_docs(folder: Path, manifest: dict, report: dict | None = None) -> None:
    """README with the model card, Dart class and, last, the manifest with every file's sha256 and size.

    Called again after the drift gate, with its report, so the card shows what the gate measured.
    """
    from toolkit.export.card import render_card

    manifest = {key: value for key, value in manifest.items() if key != "files"}
    values = {
        "name": manifest["name"],
        "folder": manifest["name"],
        "input_size": str(manifest["input"]["shape"][1]),
        "input_dtype": manifest["input"]["dtype"],
        "output_dtype": manifest["output"]["dtype"],
        "resize_mode": manifest["preprocessing"]["resize_mode"],
        "licence": manifest["licence"],
        "default_point": manifest["referral"]["default"],
        "card": render_card(manifest, report, folder),
    }
    (folder / README).write_text(_render("README.md", values))
    (folder / DART).write_text(_render(DART, values))
    (folder / DART_TEST).write_text(_render(DART_TEST, values))
    files = {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in sorted(folder.iterdir()) if p.is_file()}
    files.pop(MANIFEST, None)
    write_json(folder / MANIFEST, {**manifest, "files": files})


def update_manifest(folder: Path, updates: dict, report: dict | None = None) -> None:
    """The manifest with ``updates``, and the documents written again from it."""
    manifest = json.loads((folder / MANIFEST).read_text())
    write_docs(folder, {**manifest, **updates}, report)


def publish(staging: Path, out: Path, force: bool = False) -> Path:
    """Rename the assembled bundle into place; ``force`` replaces an existing one."""
    if out.exists() and not force:
        raise ToolkitError(f"bundle {out} already exists: pass --force to replace it")
    os.chmod(staging, 0o755)
    if out.exists():
        old = out.with_name(f".{out.name}.{STAGING}{os.getpid()}-replaced")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old)
    else:
        os.replace(staging, out)
    return out
