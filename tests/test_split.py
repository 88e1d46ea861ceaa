"""Lesion-grouped stratified splits, the leakage audit and the manifest."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import DERMAMNIST, HAM

from toolkit.base.classes import CLASSES
from toolkit.base.errors import ToolkitError
from toolkit.data.readers import read_dataset
from toolkit.data.split import (
    audit_splits,
    class_counts,
    official_split,
    prepare_splits,
    split_by_lesion,
    write_splits,
)


@pytest.fixture(scope="module")
def ham_table() -> pd.DataFrame:
    return read_dataset(HAM).table


@pytest.mark.parametrize(("val", "test"), [(0.15, 0.15), (0.1, 0.1)])
def test_lesion_split_is_grouped_stratified_and_sized(ham_table, val, test):
    table = split_by_lesion(ham_table, val, test, seed=0)
    assert table.groupby("lesion_id")["split"].nunique().max() == 1
    shares = table["split"].value_counts(normalize=True)
    assert shares["val"] == pytest.approx(val, abs=0.015) and shares["test"] == pytest.approx(test, abs=0.015)
    counts = class_counts(table).drop(columns="total")
    proportions = counts.div(counts.sum(axis=1), axis=0)
    assert (proportions.drop(index="all") - proportions.loc["all"]).abs().max().max() < 0.02
    assert audit_splits(table).lesions_across_splits == []


def test_same_seed_gives_byte_identical_manifest_and_another_seed_differs(ham_table, tmp_path):
    for name, seed in [("a.csv", 0), ("b.csv", 0), ("c.csv", 1)]:
        write_splits(split_by_lesion(ham_table, seed=seed), tmp_path / name)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()
    manifest = pd.read_csv(tmp_path / "a.csv")
    assert list(manifest.columns[:6]) == ["image_id", "path", "label", "label_index", "split", "lesion_id"]
    assert (manifest["label_index"] == manifest["label"].map(CLASSES.index)).all()


def test_audit_reports_the_official_dermamnist_leakage():
    table = official_split(read_dataset(DERMAMNIST / "dermamnist_28_from_jpeg.npz").table)
    audit = audit_splits(table)
    assert len(audit.lesions_across_splits) == 1008
    assert "lesions in more than one split: 1008" in audit.lines()[0]


def test_audit_finds_identical_images_across_splits(ham_subset):
    table = read_dataset(ham_subset).table.assign(split="train")
    copy = table.iloc[[0]].assign(image_id="COPY", lesion_id="OTHER", split="test")
    audit = audit_splits(pd.concat([table, copy]))
    assert audit.duplicates_across_splits == [sorted([table["image_id"].iloc[0], "COPY"])]


def test_too_few_lesions_in_a_class_is_a_clear_error(ham_table):
    few = ham_table[(ham_table["label"] != "df") | ham_table["lesion_id"].isin(ham_table["lesion_id"][:0])]
    few = pd.concat([few, ham_table[ham_table["label"] == "df"].drop_duplicates("lesion_id").head(2)])
    with pytest.raises(ToolkitError, match="class 'df' has 2 lesion"):
        split_by_lesion(few)


def test_prepare_splits_checks_every_image(ham_subset):
    prepared = prepare_splits(ham_subset)
    assert set(prepared.table["split"]) == {"train", "val", "test"} and prepared.skipped == []
    assert prepared.table.groupby("lesion_id")["split"].nunique().max() == 1


def test_a_manifest_inside_a_checkout_names_images_relative_to_itself(ham_table, tmp_path):
    """A committed manifest must not carry one machine's paths; read back, every path is found again."""
    from toolkit.data.readers import read_splits

    table = split_by_lesion(ham_table, seed=0)
    checkout = tmp_path / "repo"
    (checkout / ".git").mkdir(parents=True)
    (checkout / "models" / "run").mkdir(parents=True)
    write_splits(table, checkout / "models" / "run" / "splits.csv")
    write_splits(table, tmp_path / "loose.csv")  # outside any checkout: absolute, as before
    committed = pd.read_csv(checkout / "models" / "run" / "splits.csv")
    assert not any(path.startswith("/") for path in committed["path"]) and committed["path"][0].startswith("../")
    assert all(path.startswith("/") for path in pd.read_csv(tmp_path / "loose.csv")["path"])
    assert (checkout / "models" / "run" / "splits.csv").stat().st_mode & 0o044 == 0o044  # readable by others
    for manifest in (checkout / "models" / "run" / "splits.csv", tmp_path / "loose.csv"):
        read = read_splits(manifest).table.set_index("image_id")["path"]
        assert read.to_dict() == table.set_index("image_id")["path"].to_dict()
