"""Shared fixtures: small, real subsets of the shared HAM10000 images, copied so tests may damage them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(__file__).resolve().parents[2] / "shared"
HAM = SHARED / "data" / "ham10000"
DERMAMNIST = SHARED / "data" / "dermamnist"
WEIGHTS = SHARED / "weights"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"shared data missing: {path} (CI clones the project with ../shared beside it)")
    return path


@pytest.fixture(scope="session")
def ham_metadata() -> pd.DataFrame:
    return pd.read_csv(_require(HAM / "HAM10000_metadata.csv"))


def make_ham_subset(metadata: pd.DataFrame, root: Path, lesions_per_class: int = 6, seed: int = 0) -> Path:
    """Copy every image of a few lesions per class (multi-image lesions first) into a HAM10000 layout."""
    counts = metadata["lesion_id"].map(metadata["lesion_id"].value_counts())
    ranked = metadata.assign(n=counts).sort_values(["n", "lesion_id"], ascending=[False, True])
    lesions = ranked.groupby("dx")["lesion_id"].apply(lambda s: list(dict.fromkeys(s))[:lesions_per_class])
    chosen = metadata[metadata["lesion_id"].isin([lesion for ids in lesions for lesion in ids])]
    (root / "images").mkdir(parents=True)
    for image_id in chosen["image_id"]:
        shutil.copy(HAM / "images" / f"{image_id}.jpg", root / "images" / f"{image_id}.jpg")
    chosen.to_csv(root / "HAM10000_metadata.csv", index=False)
    return root


@pytest.fixture
def ham_subset(ham_metadata: pd.DataFrame, tmp_path: Path) -> Path:
    """A writable HAM10000 folder with every image of 6 lesions per class (about 80 images)."""
    return make_ham_subset(ham_metadata, tmp_path / "ham")
