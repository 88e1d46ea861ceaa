"""Readers for the three dataset layouts, and for split files, all giving one table.

The table has one row per image with ``image_id, path, label, lesion_id`` (labels are the
canonical short class names) and, for layouts that ship one, ``official_split``. Readers only
look at file names and metadata; decoding is left to :mod:`toolkit.data.images`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.base.classes import CLASSES, canonical_class
from toolkit.base.errors import ToolkitError
from toolkit.data.images import NPZ_SEPARATOR
from toolkit.data.layouts import LAYOUTS, NPZ_SIZES, SPLITS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
HAM_COLUMNS = ("lesion_id", "image_id", "dx")
HAM_IMAGE_DIRS = re.compile(r"^(images|ham10000_images_part_[12])$", re.IGNORECASE)
METADATA_NAMES = {"ham10000_metadata.csv", "metadata.csv"}
REQUIRED_SPLIT_COLUMNS = ("image_id", "path", "label", "split", "lesion_id")
DERMAMNIST_MAP = "dermamnist_split_to_ham10000.csv"


@dataclass
class Dataset:
    """Images found under a root, with where they came from and what was skipped on the way."""

    table: pd.DataFrame
    source: str
    has_lesion_ids: bool = True
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _parse_csv(path: Path, what: str, **options) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ToolkitError(f"cannot parse {what} {path}: {str(error).splitlines()[0]}") from None


def _read_csv(path: Path, required: tuple[str, ...], what: str) -> pd.DataFrame:
    frame = _parse_csv(path, what)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ToolkitError(
            f"{what} {path} lacks column(s) {', '.join(missing)}; found: {', '.join(frame.columns) or 'none'}"
        )
    if frame.empty:
        raise ToolkitError(f"{what} {path} has no rows")
    return frame


def _canonical_labels(values: pd.Series, where: str) -> list[str]:
    """Canonical class names; an unknown value raises naming the value and its CSV line."""
    labels = []
    for row, value in enumerate(values):
        labels.append(canonical_class(value, f"{where} line {row + 2}"))
    return labels


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _handle_missing(table: pd.DataFrame, exists: pd.Series, where: str, skip_bad: bool) -> list[tuple[str, str]]:
    missing = table.loc[~exists, "path"].tolist()
    if missing and not skip_bad:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ToolkitError(f"image file not found: {missing[0]}{more}, listed in {where}")
    return [(path, f"image file not found: {path}") for path in missing]


def read_ham10000(root: Path, skip_bad: bool = False) -> Dataset:
    """``HAM10000_metadata.csv`` plus images in the root, ``images/`` or ``HAM10000_images_part_{1,2}/``."""
    csv = root if root.is_file() else next((p for p in root.iterdir() if p.name.lower() in METADATA_NAMES), None)
    if csv is None:
        raise ToolkitError(f"no HAM10000_metadata.csv in {root}")
    folder = csv.parent
    frame = _read_csv(csv, HAM_COLUMNS, "HAM10000 metadata")
    duplicated = frame["image_id"][frame["image_id"].duplicated()]
    if len(duplicated):
        raise ToolkitError(f"image_id {duplicated.iloc[0]} appears twice in {csv}")
    image_dirs = [folder] + [p for p in folder.iterdir() if p.is_dir() and HAM_IMAGE_DIRS.match(p.name)]
    files = {p.stem: p for d in image_dirs for p in _image_files(d)}
    table = pd.DataFrame(
        {
            "image_id": frame["image_id"],
            "path": [os.path.abspath(files.get(i, folder / f"{i}.jpg")) for i in frame["image_id"]],
            "label": _canonical_labels(frame["dx"], str(csv)),
            "lesion_id": frame["lesion_id"].where(frame["lesion_id"] != "", frame["image_id"]),
        }
    )
    skipped = _handle_missing(table, frame["image_id"].isin(files).to_numpy(), str(csv), skip_bad)
    table = table[frame["image_id"].isin(files).to_numpy()].reset_index(drop=True)
    return Dataset(table, f"HAM10000 metadata {csv}", skipped=skipped)


def _find_dermamnist_npz(root: Path, size: int) -> Path:
    """The file medmnist would use, else the only DermaMNIST npz present, else medmnist's download."""
    expected = root / ("dermamnist.npz" if size == 28 else f"dermamnist_{size}.npz")
    if expected.exists():
        return expected
    candidates = sorted(root.glob("*dermamnist*.npz"))
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise ToolkitError(f"several DermaMNIST files in {root} ({names}); name one of them as --data")
    try:
        import medmnist
    except ImportError:
        raise ToolkitError(
            f"no {expected.name} in {root}: put it there, or pip install medmnist to let it download"
        ) from None
    for split in SPLITS:  # medmnist downloads into root and then finds the file it expects
        medmnist.DermaMNIST(split=split, download=True, root=str(root), size=size)
    return expected


def read_dermamnist(root: Path, size: int = NPZ_SIZES[0]) -> Dataset:
    """A MedMNIST DermaMNIST ``.npz`` (``{train,val,test}_{images,labels}``) of any image size.

    Lesion ids come from ``dermamnist_split_to_ham10000.csv`` beside the file when present;
    without it every image is its own group, which the audit cannot check for leakage.
    """
    path = root if root.is_file() else _find_dermamnist_npz(root, size)
    try:
        with np.load(path) as npz:
            labels = {s: npz[f"{s}_labels"].reshape(-1) for s in SPLITS}
    except (OSError, ValueError) as error:
        raise ToolkitError(f"cannot read DermaMNIST npz {path}: {error}") from None
    except KeyError as error:
        raise ToolkitError(
            f"DermaMNIST npz {path} lacks array {error}; expected train/val/test images and labels"
        ) from None
    rows = []
    for split in SPLITS:
        for index, label in enumerate(labels[split]):
            if not 0 <= int(label) < len(CLASSES):
                raise ToolkitError(f"unknown label {int(label)} at {split}[{index}] in {path}; expected 0..6")
            address = f"{os.path.abspath(path)}{NPZ_SEPARATOR}{split}/{index}"
            rows.append((f"{split}_{index}", address, CLASSES[int(label)], f"{split}_{index}", split, index))
    table = pd.DataFrame(rows, columns=["image_id", "path", "label", "lesion_id", "official_split", "index"])
    mapping = path.parent / DERMAMNIST_MAP
    if mapping.exists():
        ids = _read_csv(mapping, ("split", "index", "image_id", "lesion_id"), "DermaMNIST mapping")
        ids = ids.rename(columns={"split": "official_split", "image_id": "ham_image", "lesion_id": "ham_lesion"})
        ids = ids.astype({"index": int})[["official_split", "index", "ham_image", "ham_lesion"]]
        table = table.merge(ids, how="left", on=["official_split", "index"])
        table["image_id"] = table.pop("ham_image").fillna(table["image_id"])
        table["lesion_id"] = table.pop("ham_lesion").fillna(table["lesion_id"])
    source = f"DermaMNIST npz {path}" + (f" with lesion ids from {mapping.name}" if mapping.exists() else "")
    return Dataset(table.drop(columns="index"), source, has_lesion_ids=mapping.exists())


def read_folders(root: Path) -> Dataset:
    """``root/<class>/*.jpg`` with class folder names matched case-insensitively; one lesion per image."""
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = canonical_class(folder.name, f"class folder {folder}")
        files = _image_files(folder)
        if not files:
            raise ToolkitError(f"class folder {folder} holds no images")
        rows += [(f"{folder.name}/{p.stem}", os.path.abspath(p), label) for p in files]
    table = pd.DataFrame(rows, columns=["image_id", "path", "label"])
    table["lesion_id"] = table["image_id"]
    return Dataset(table, f"folder per class {root}", has_lesion_ids=False)


def read_splits(path: Path) -> Dataset:
    """A split file written by ``python -m toolkit data``."""
    frame = _read_csv(path, REQUIRED_SPLIT_COLUMNS, "split file")
    folder = Path(os.path.abspath(path)).parent  # relative image paths are relative to the split file
    frame["path"] = [image if os.path.isabs(image) else os.path.normpath(folder / image) for image in frame["path"]]
    frame["label"] = _canonical_labels(frame["label"], str(path))
    unknown = sorted(set(frame["split"]) - set(SPLITS))
    if unknown:
        raise ToolkitError(f"unknown split {unknown[0]!r} in {path}; expected one of {', '.join(SPLITS)}")
    return Dataset(frame, f"split file {path}")


def detect_layout(root: Path) -> str:
    """Guess the layout of ``root`` from what is in it."""
    if root.is_file():
        suffix = root.suffix.lower()
        if suffix == ".npz":
            return "dermamnist"
        if suffix == ".csv":
            return "manifest" if "split" in _parse_csv(root, "CSV file", nrows=0).columns else "ham10000"
        raise ToolkitError(f"cannot read {root}: expected a folder, a .csv or a .npz")
    names = {p.name.lower() for p in root.iterdir()}
    if names & METADATA_NAMES:
        return "ham10000"
    if any(n.endswith(".npz") and "dermamnist" in n for n in names):
        return "dermamnist"
    if any((root / n).is_dir() for n in names):
        return "folders"
    raise ToolkitError(
        f"no dataset found in {root}: expected HAM10000_metadata.csv, a DermaMNIST .npz, "
        f"or one folder per class ({', '.join(CLASSES)})"
    )


def check_classes(table: pd.DataFrame, where: str) -> None:
    """Every class must have images: a 7-way classifier cannot learn a class it never sees."""
    empty = [c for c in CLASSES if not (table["label"] == c).any()]
    if empty:
        raise ToolkitError(f"class {empty[0]!r} has no images in {where}")


def read_dataset(
    root: str | Path, layout: str = "auto", skip_bad: bool = False, npz_size: int = NPZ_SIZES[0]
) -> Dataset:
    """Read any supported layout into a :class:`Dataset`, checking that every class has images."""
    root = Path(root)
    if not root.exists():
        raise ToolkitError(f"dataset path does not exist: {root}")
    if layout not in LAYOUTS:
        raise ToolkitError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout == "ham10000":
        dataset = read_ham10000(root, skip_bad)
    elif layout == "dermamnist":
        dataset = read_dermamnist(root, npz_size)
    elif layout == "folders":
        dataset = read_folders(root)
    else:
        dataset = read_splits(root)
    check_classes(dataset.table, str(root))
    return dataset
