"""Lesion-grouped, class-stratified, seeded splits, the leakage audit, and the split file.

HAM10000 holds several images of many lesions; splitting by image puts near-copies of a test
lesion into training and inflates every number. So lesions, not images, are split, stratified by
their diagnosis with scikit-learn.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.base.classes import CLASSES
from toolkit.base.errors import ToolkitError
from toolkit.base.io import write_atomic
from toolkit.base.paths import checkout_root
from toolkit.data.images import NPZ_SEPARATOR, load_images, read_npz_image
from toolkit.data.layouts import NPZ_SIZES, SPLIT_SEED, SPLITS, TEST_SHARE, VAL_SHARE
from toolkit.data.readers import check_classes, detect_layout, read_dataset, read_splits

SPLIT_COLUMNS = ["image_id", "path", "label", "label_index", "split", "lesion_id"]


def split_by_lesion(
    table: pd.DataFrame, val: float = VAL_SHARE, test: float = TEST_SHARE, seed: int = SPLIT_SEED
) -> pd.DataFrame:
    """Return a copy of ``table`` with a ``split`` column; every lesion lands in exactly one split.

    Within each class the lesions are shuffled with ``seed`` and cut at the requested shares, so
    every split gets every class (at least one lesion each) even on small datasets.
    """
    if not (0 < val < 1 and 0 < test < 1 and val + test < 1):
        raise ToolkitError(f"split fractions val={val}, test={test} must be in (0, 1) and sum below 1")
    lesions = table.groupby("lesion_id", sort=True)["label"].agg(lambda s: s.mode().iloc[0])
    rng = np.random.default_rng(seed)
    split = pd.Series("train", index=lesions.index)
    for label in CLASSES:
        ids = lesions.index[lesions == label].to_numpy()
        if not len(ids):
            continue  # a class this dataset lacks (a read-only empty array cannot be permuted)
        if len(ids) < 3:
            raise ToolkitError(f"class {label!r} has {len(ids)} lesion(s); a train/val/test split needs at least 3")
        ids = rng.permutation(ids)
        n_val, n_test = (max(1, round(len(ids) * share)) for share in (val, test))
        split[ids[:n_val]] = "val"
        split[ids[n_val : n_val + n_test]] = "test"
    return table.assign(split=table["lesion_id"].map(split).to_numpy())


def official_split(table: pd.DataFrame) -> pd.DataFrame:
    """Keep the split a dataset ships with (DermaMNIST's), so the audit can show its leakage."""
    if "official_split" not in table.columns:
        raise ToolkitError("this dataset ships no official split; use the lesion-grouped split")
    return table.assign(split=table["official_split"])


def _content_hash(path: str) -> str:
    if NPZ_SEPARATOR in path and path.split(NPZ_SEPARATOR)[0].endswith(".npz"):
        return hashlib.sha1(read_npz_image(path).tobytes()).hexdigest()
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


@dataclass
class Audit:
    """What could leak between splits: lesions with images in several splits, and identical images."""

    lesions_across_splits: list[str]
    duplicates_across_splits: list[list[str]]
    duplicates_within_splits: int

    def lines(self) -> list[str]:
        def line(label: str, count: int, examples: list[str]) -> str:
            return f"{label}: {count}" + (f" (e.g. {', '.join(examples)})" if examples else "")

        return [
            line("lesions in more than one split", len(self.lesions_across_splits), self.lesions_across_splits[:5]),
            line(
                "identical images across splits",
                len(self.duplicates_across_splits),
                [" = ".join(group) for group in self.duplicates_across_splits[:3]],
            ),
            f"identical images within one split: {self.duplicates_within_splits}",
        ]


def audit_splits(table: pd.DataFrame) -> Audit:
    """Find lesions split across train/val/test and byte-identical images in different splits."""
    splits_per_lesion = table.groupby("lesion_id")["split"].nunique()
    leaked = sorted(splits_per_lesion[splits_per_lesion > 1].index)
    hashes = table.assign(hash=[_content_hash(p) for p in table["path"]])
    groups = hashes[hashes.duplicated("hash", keep=False)].groupby("hash")
    across = [sorted(g["image_id"]) for _, g in groups if g["split"].nunique() > 1]
    within = sum(len(g) - g["split"].nunique() for _, g in groups if g["split"].nunique() == 1)
    return Audit(leaked, sorted(across), within)


def class_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Images per split (rows) and class (columns), in canonical class order, with totals."""
    counts = pd.crosstab(table["split"], table["label"]).reindex(index=SPLITS, columns=list(CLASSES), fill_value=0)
    counts.loc["all"] = counts.sum()
    return counts.assign(total=counts.sum(axis=1))


def relative_image_path(image: str, folder: Path) -> str:
    """``image`` relative to the split file's folder, so a committed split file names no one machine's paths."""
    file, separator, address = image.partition(NPZ_SEPARATOR)
    return Path(os.path.relpath(os.path.abspath(file), folder)).as_posix() + separator + address


def write_splits(table: pd.DataFrame, path: str | Path) -> None:
    """Write the split file; the same table always gives the same bytes.

    Inside a git checkout, where the split file may be committed, image paths are relative to it.
    """
    folder = Path(os.path.abspath(path)).parent
    if checkout_root(folder) is not None:
        table = table.assign(path=[relative_image_path(image, folder) for image in table["path"]])
    rows = table.assign(label_index=[CLASSES.index(c) for c in table["label"]])[SPLIT_COLUMNS]
    rows = rows.sort_values(["image_id", "path"], kind="stable")
    write_atomic(path, lambda tmp: rows.to_csv(tmp, index=False, lineterminator="\n"))


@dataclass
class PreparedSplits:
    """A dataset with its ``split`` column, its audit, and the bad files that were skipped."""

    table: pd.DataFrame
    source: str
    has_lesion_ids: bool
    audit: Audit
    skipped: list[tuple[str, str]]


def prepare_splits(
    root: str | Path,
    layout: str = "auto",
    val: float = VAL_SHARE,
    test: float = TEST_SHARE,
    seed: int = SPLIT_SEED,
    keep_official: bool = False,
    skip_bad: bool = False,
    check_images: bool = True,
    npz_size: int = NPZ_SIZES[0],
) -> PreparedSplits:
    """Read, check every image decodes as RGB, split by lesion (or keep the official split) and audit."""
    dataset = read_dataset(root, layout, skip_bad, npz_size)
    table, skipped = dataset.table, list(dataset.skipped)
    if check_images:
        loaded = load_images(table["path"].tolist(), size=None, skip_bad=skip_bad, desc="checking images")
        table, skipped = table.iloc[loaded.kept].reset_index(drop=True), skipped + loaded.skipped
        check_classes(table, f"{root} after skipping bad files")
    table = official_split(table) if keep_official else split_by_lesion(table, val, test, seed)
    return PreparedSplits(table, dataset.source, dataset.has_lesion_ids, audit_splits(table), skipped)


def run_split(
    source: Path, val: float = VAL_SHARE, test: float = TEST_SHARE, seed: int = SPLIT_SEED, limit: int = 0
) -> pd.DataFrame:
    """The split a training run uses: a split file as written, or the data split by lesion; then at most
    ``limit`` images per split. Deterministic, so a packed run can rebuild it instead of carrying it."""
    if source.exists() and detect_layout(source) == "manifest":
        table = read_splits(source).table
    else:
        table = prepare_splits(source, val=val, test=test, seed=seed, check_images=False).table
    return limit_per_split(table, limit, seed) if limit else table


def limit_per_split(table: pd.DataFrame, limit: int, seed: int = 0) -> pd.DataFrame:
    """At most ``limit`` images per split, drawn per class in proportion, keeping every class present."""
    rng = np.random.default_rng(seed)
    keep = []
    for _, part in table.groupby("split", sort=False):
        if len(part) <= limit:
            keep.append(part)
            continue
        groups = [group for _, group in part.groupby("label")]
        counts = class_quota(np.array([len(group) for group in groups]), limit)
        for group, count in zip(groups, counts, strict=True):
            keep.append(group.iloc[np.sort(rng.choice(len(group), count, replace=False))])
    return pd.concat(keep).sort_index()


def class_quota(sizes: np.ndarray, limit: int) -> np.ndarray:
    """Per-class counts in proportion to ``sizes`` that add up to ``limit`` exactly (largest remainders), with
    one of each class at least (so more than ``limit`` only when there are more classes than ``limit``).
    Rounding each class on its own gave 302 images for ``--limit 300``."""
    exact = limit * sizes / sizes.sum()
    counts = np.clip(np.floor(exact).astype(int), 1, sizes)
    for index in np.argsort(-(exact - np.floor(exact)), kind="stable"):  # the largest remainders first
        if counts.sum() >= limit:
            break
        counts[index] += counts[index] < sizes[index]
    while counts.sum() > limit and counts.max() > 1:  # the one-per-class minimum overshot: trim the largest
        counts[np.argmax(counts)] -= 1
    return counts
