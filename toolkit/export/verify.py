"""A bundle checks itself before it answers: the manifest's fields, its checksums, its labels, its tensors.

Every mismatch is one line naming the file and the field, so an edited, truncated or mixed-up bundle is
refused (exit 2) instead of answering with the wrong class or the wrong scale.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from pathlib import Path

import numpy as np

from toolkit.base.errors import ToolkitError

DTYPES = ("uint8", "int8", "float32")
REEXPORT = "re-export the bundle with `python -m toolkit export`"


def _field(manifest: dict, dotted: str, where: Path):
    value = manifest
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ToolkitError(f"{where} has no field {dotted!r}: {REEXPORT}")
        value = value[key]
    return value


def _require(ok: bool, where: Path, dotted: str, value, wanted: str) -> None:
    if not ok:
        raise ToolkitError(f"{where} field {dotted!r} is {value!r}, expected {wanted}: {REEXPORT}")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_manifest(manifest: dict, where: Path, resize_modes: tuple[str, ...]) -> None:
    """The fields every reader of the bundle relies on are present and of the right kind."""
    for tensor, rank in (("input", 4), ("output", 2)):
        shape = _field(manifest, f"{tensor}.shape", where)
        ok = isinstance(shape, list) and len(shape) == rank and all(type(d) is int and d > 0 for d in shape)
        _require(ok, where, f"{tensor}.shape", shape, f"a list of {rank} positive integers")
        dtype = _field(manifest, f"{tensor}.dtype", where)
        _require(dtype in DTYPES, where, f"{tensor}.dtype", dtype, "one of " + ", ".join(DTYPES))
        scale = _field(manifest, f"{tensor}.scale", where)
        _require(_is_number(scale) and scale > 0, where, f"{tensor}.scale", scale, "a positive number")
        zero_point = _field(manifest, f"{tensor}.zero_point", where)
        _require(type(zero_point) is int, where, f"{tensor}.zero_point", zero_point, "an integer")
    shape = manifest["input"]["shape"]
    _require(shape[1] == shape[2] and shape[3] == 3, where, "input.shape", shape, "[1, N, N, 3]")
    mode = _field(manifest, "preprocessing.resize_mode", where)
    _require(mode in resize_modes, where, "preprocessing.resize_mode", mode, "one of " + ", ".join(resize_modes))
    classes = _field(manifest, "classes", where)
    ok = isinstance(classes, list) and all(isinstance(c, dict) and isinstance(c.get("label"), str) for c in classes)
    _require(ok, where, "classes", classes, "a list of classes, each with a label")
    files = _field(manifest, "files", where)
    entries = files.values() if isinstance(files, dict) else [None]
    ok = all(isinstance(entry, dict) and isinstance(entry.get("sha256"), str) for entry in entries)
    _require(ok, where, "files", files, "each file's sha256")


def check_files(folder: Path, manifest: dict, manifest_name: str) -> None:
    """Every file the manifest lists is there, unchanged (sha256)."""
    for name, entry in manifest["files"].items():
        path = folder / name
        if Path(name).name != name or not path.is_file():
            raise ToolkitError(f"{folder / manifest_name} lists {name!r}, which is not in {folder}: {REEXPORT}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            raise ToolkitError(
                f"{path} has changed since export (its sha256 differs from {manifest_name} files.{name}): {REEXPORT}"
            )


def check_labels(labels: list[str], manifest: dict, model_bytes: bytes, where: dict[str, Path]) -> None:
    """``labels.txt``, the manifest's classes and the labels packed in the model say the same, in order."""
    listed = [entry["label"] for entry in manifest["classes"]]
    if labels != listed:
        raise ToolkitError(f"{where['labels']} does not match the field 'classes' of {where['manifest']}: {REEXPORT}")
    packed = _packed_labels(model_bytes)
    if packed is not None and packed != labels:
        raise ToolkitError(f"{where['labels']} does not match the labels packed in {where['model']}: {REEXPORT}")


def _packed_labels(model_bytes: bytes) -> list[str] | None:
    """The labels file TFLite metadata packs into the model (a zip appended to it); None if there is none."""
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            names = [name for name in archive.namelist() if name.endswith(".txt")]
            return archive.read(names[0]).decode().splitlines() if names else None
    except zipfile.BadZipFile:
        return None


def check_tensor(details: dict, spec: dict, tensor: str, where: dict[str, Path]) -> None:
    """The interpreter's view of one tensor agrees with the manifest: shape, dtype, scale, zero point."""
    scale, zero_point = details["quantization"]
    actual = {
        "shape": [int(d) for d in details["shape"]],
        "dtype": np.dtype(details["dtype"]).name,
        "scale": float(scale) if scale else 1.0,
        "zero_point": int(zero_point),
    }
    for key, value in actual.items():
        same = math.isclose(value, spec[key], rel_tol=1e-6) if key == "scale" else value == spec[key]
        if not same:
            raise ToolkitError(
                f"{where['manifest']} says {tensor}.{key} {spec[key]!r}, but {where['model']} has {value!r}: {REEXPORT}"
            )
