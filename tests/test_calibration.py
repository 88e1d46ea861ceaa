"""The int8 calibration sample: drawn by class (half equally, half by share), seeded, and refused without every
class. (That its images come from the training split, resized as in training: ``test_export.py``.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit.base.classes import CLASSES
from toolkit.base.errors import ToolkitError
from toolkit.export.calibration import stratified_sample

HAM_LIKE = np.array([30, 50, 110, 10, 110, 670, 20])  # class sizes in HAM10000's proportions, 1,000 images


def labelled(sizes) -> pd.DataFrame:
    """A training split with ``sizes[i]`` images of class ``i``, ids in order."""
    return pd.DataFrame({"image_id": [f"i{n}" for n in range(sum(sizes))], "label": np.repeat(CLASSES, sizes)})


def test_calibration_sample_is_stratified_and_seeded():
    table = labelled(HAM_LIKE)
    sample = stratified_sample(table, 300, seed=1)
    counts = sample["label"].value_counts()
    assert len(sample) == 300 and set(counts.index) == set(CLASSES)
    assert counts["df"] == 10 and counts["nv"] > counts["mel"] > counts["vasc"]  # every df; nv still the most
    assert sample.equals(stratified_sample(table, 300, seed=1))
    assert not sample.equals(stratified_sample(table, 300, seed=2))
    with pytest.raises(ToolkitError, match=r"^calibration needs every class, but the training split has no df images$"):
        stratified_sample(table[table["label"] != "df"], 300)
    with pytest.raises(ToolkitError, match=r"has no df, vasc images$"):
        stratified_sample(table[~table["label"].isin(["df", "vasc"])], 300, where="run x")


@pytest.mark.parametrize("count", [14, 299, 300, 301])
def test_calibration_quota_shares_half_equally_and_half_by_class_share(count):
    sizes = HAM_LIKE
    table = labelled(sizes)
    sample = stratified_sample(table, count, seed=0)
    counts = sample["label"].value_counts().reindex(CLASSES).to_numpy()
    equal, by_share = count // (2 * len(CLASSES)), np.floor(sizes / sizes.sum() * count / 2).astype(int)
    assert len(sample) == count and sample["image_id"].is_unique
    assert (counts >= np.minimum(sizes, equal + by_share)).all() and (counts <= sizes).all()
    assert counts.sum() - np.minimum(sizes, equal + by_share).sum() < max(count // 10, 4)  # a remainder only
    assert sample["image_id"].tolist() == sorted(sample["image_id"])


@pytest.mark.parametrize("count", range(7, 14))
def test_a_small_calibration_sample_has_one_image_per_class_and_the_rest_by_share(count):
    """Below 14 images the equal half is empty: one image each, the remainder to the largest classes (nv first)."""
    counts = stratified_sample(labelled(HAM_LIKE), count)["label"].value_counts().reindex(CLASSES).to_numpy()
    assert counts.sum() == count and counts.min() == 1 and counts[CLASSES.index("nv")] == counts.max()


def test_calibration_shares_are_exact_when_nothing_rounds_or_runs_out():
    """Equal classes, 140 images: 10 each from the equal half and 10 each by share, no random top-up."""
    table = labelled([100] * len(CLASSES))
    assert (stratified_sample(table, 140)["label"].value_counts() == 20).all()


def test_an_overshooting_small_sample_gives_back_from_the_largest_class():
    """9 images from 95% nevi: nv's share (4) and one each for the rest make 10; nv gives one back."""
    table = labelled([10, 10, 10, 10, 10, 1000, 10])
    for seed in range(5):  # no random top-up is needed, so no seed changes the counts
        counts = stratified_sample(table, 9, seed=seed)["label"].value_counts().reindex(CLASSES)
        assert counts.tolist() == [1, 1, 1, 1, 1, 3, 1]


def test_calibration_needs_one_image_per_class():
    table = labelled([10] * len(CLASSES))
    with pytest.raises(ToolkitError, match="at least 7 images \\(one per class\\); got 6"):
        stratified_sample(table, 6)
