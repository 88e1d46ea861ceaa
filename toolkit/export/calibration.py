"""The int8 calibration set: a class-stratified, seeded sample of the training split.

Half the budget is shared equally among the classes, so rare classes (df, vasc) shape the
activation ranges too; the other half follows the class shares. Images go through exactly the
training preprocessing (decode, RGB, resize mode and size of the run), raw uint8.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from toolkit.base.classes import CLASSES
from toolkit.base.errors import ToolkitError
from toolkit.data.images import load_images
from toolkit.train.runs import Run


def stratified_sample(rows: pd.DataFrame, count: int, seed: int = 0, where: str = "the training split") -> pd.DataFrame:
    """``count`` rows (or all there are) with every class present; the same seed gives the same rows."""
    missing = [c for c in CLASSES if not (rows["label"] == c).any()]
    if missing:
        raise ToolkitError(f"calibration needs every class, but {where} has no {', '.join(missing)} images")
    if count < len(CLASSES):
        raise ToolkitError(f"calibration needs at least {len(CLASSES)} images (one per class); got {count}")
    sizes = rows["label"].value_counts().reindex(CLASSES).to_numpy()
    quota = np.minimum(sizes, count // (2 * len(CLASSES)) + np.floor(sizes / sizes.sum() * count / 2).astype(int))
    quota = np.maximum(quota, 1)
    while quota.sum() > count:  # below 14 images, one each can overshoot: the largest class gives some back
        quota[np.argmax(quota)] -= 1
    rng = np.random.default_rng(seed)
    while quota.sum() < min(count, sizes.sum()):  # hand out what rounding and small classes left over
        quota[rng.choice(np.flatnonzero(quota < sizes))] += 1
    picked = [
        rows[rows["label"] == name].sample(n=int(n), random_state=seed) for name, n in zip(CLASSES, quota, strict=True)
    ]
    return pd.concat(picked).sort_values("image_id", kind="stable")


def calibration_images(run: Run, count: int = 300, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """The calibration images of ``run`` as uint8 (N, size, size, 3), with the rows they came from."""
    rows = stratified_sample(run.rows("train"), count, seed, where=f"the training split of {run.path}")
    images = load_images(rows["path"].tolist(), run.input_size, run.resize_mode, desc="loading calibration images")
    return images.images, rows
