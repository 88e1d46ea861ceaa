"""The three layouts (and the manifest) read into one table with canonical labels."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DERMAMNIST, HAM

from toolkit.base.classes import CLASSES, canonical_class
from toolkit.base.errors import ToolkitError
from toolkit.data.images import decode_image
from toolkit.data.readers import read_dataset

HAM_COUNTS = {"akiec": 327, "bcc": 514, "bkl": 1099, "df": 115, "mel": 1113, "nv": 6705, "vasc": 142}


def test_ham10000_flat_folder_reads_every_image_with_its_lesion():
    dataset = read_dataset(HAM)
    table = dataset.table
    assert len(table) == 10015 and table["lesion_id"].nunique() == 7470
    assert table["label"].value_counts().to_dict() == HAM_COUNTS
    assert all(Path(p).exists() for p in table["path"].sample(50, random_state=0))
    assert dataset.has_lesion_ids


def test_ham10000_part_folders_in_either_case(ham_subset: Path):
    images = sorted((ham_subset / "images").iterdir())
    for i, image in enumerate(images):
        part = ham_subset / ("HAM10000_images_part_1" if i % 2 else "ham10000_images_part_2")
        part.mkdir(exist_ok=True)
        shutil.move(image, part / image.name)
    (ham_subset / "images").rmdir()
    table = read_dataset(ham_subset).table
    assert len(table) == len(images)
    assert {Path(p).parent.name for p in table["path"]} == {"HAM10000_images_part_1", "ham10000_images_part_2"}


def test_dermamnist_npz_keeps_official_splits_and_maps_lesions():
    dataset = read_dataset(DERMAMNIST / "dermamnist_28_from_jpeg.npz")
    table = dataset.table
    assert table["official_split"].value_counts().to_dict() == {"train": 7007, "test": 2005, "val": 1003}
    assert table["label"].value_counts().to_dict() == HAM_COUNTS
    assert dataset.has_lesion_ids and table["lesion_id"].str.startswith("HAM_").all()
    first = table.iloc[0]
    assert first["image_id"] == "ISIC_0027615" and first["label"] == "akiec"  # row 0 of the official mapping
    assert decode_image(first["path"]).shape == (28, 28, 3)


def _fake_medmnist(monkeypatch, download):
    module = types.SimpleNamespace(DermaMNIST=download)
    monkeypatch.setitem(sys.modules, "medmnist", module)


def test_dermamnist_file_named_as_medmnist_expects_is_used_without_download(tmp_path, monkeypatch):
    (tmp_path / "dermamnist.npz").symlink_to(DERMAMNIST / "dermamnist_28_from_jpeg.npz")
    (tmp_path / "other_dermamnist_copy.npz").symlink_to(DERMAMNIST / "dermamnist_28_from_jpeg.npz")

    def forbidden(**kwargs):
        raise AssertionError("medmnist must not download when the file is present")

    _fake_medmnist(monkeypatch, forbidden)
    table = read_dataset(tmp_path, layout="dermamnist").table
    assert len(table) == 10015 and "/dermamnist.npz#" in table["path"].iloc[0]


def test_dermamnist_missing_file_is_downloaded_by_medmnist(tmp_path, monkeypatch):
    calls = []

    def download(split, download, root, size):  # stands in for medmnist, copying a local file
        calls.append((split, size))
        shutil.copy(DERMAMNIST / "dermamnist_28_from_jpeg.npz", Path(root) / "dermamnist_64.npz")

    _fake_medmnist(monkeypatch, download)
    from toolkit.data.readers import read_dermamnist

    table = read_dermamnist(tmp_path, size=64).table
    assert calls and all(size == 64 for _, size in calls) and len(table) == 10015


def test_dermamnist_of_another_size(tmp_path):
    with np.load(DERMAMNIST / "dermamnist_28_from_jpeg.npz") as npz:
        arrays = {k: npz[k][:40] for k in npz.files}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.stack([cv2.resize(i, (64, 64)) for i in arrays[f"{split}_images"]])
        arrays[f"{split}_labels"] = np.arange(40).reshape(-1, 1) % 7
    np.savez(tmp_path / "dermamnist_64.npz", **arrays)
    dataset = read_dataset(tmp_path, npz_size=64)
    assert len(dataset.table) == 120 and not dataset.has_lesion_ids
    assert decode_image(dataset.table["path"].iloc[5]).shape == (64, 64, 3)


def test_folder_per_class_matches_names_case_insensitively(ham_subset: Path, tmp_path: Path):
    root = tmp_path / "folders"
    table = read_dataset(ham_subset).table
    for label, path in zip(table["label"], table["path"], strict=True):
        folder = root / {"mel": "MEL", "nv": "Melanocytic nevi", "df": "Df"}.get(label, label)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder)
    dataset = read_dataset(root)
    assert not dataset.has_lesion_ids
    assert dataset.table["label"].value_counts().to_dict() == table["label"].value_counts().to_dict()


def test_canonical_class_accepts_display_names_and_rejects_others():
    assert canonical_class("Basal cell carcinoma") == "bcc" and canonical_class("VASC") == "vasc"
    with pytest.raises(ToolkitError, match="unknown class 'melanom'"):
        canonical_class("melanom")
    assert len(CLASSES) == 7
