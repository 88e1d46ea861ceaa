"""Score finished runs, and ensembles of them, on a split of their manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.base.errors import ToolkitError
from toolkit.base.metrics import compute_metrics
from toolkit.data.images import load_images
from toolkit.model.classifier import predict
from toolkit.train.runs import open_run


def evaluate_runs(runs: list[Path], split: str = "test") -> dict:
    """Run each run's best model on ``split`` of its manifest and score the mean of their probabilities."""
    probs, ids, labels = [], None, None
    for path in runs:
        run = open_run(path)
        rows = run.rows(split)
        if ids is not None and not np.array_equal(rows["image_id"].to_numpy(), ids):
            raise ToolkitError(f"{path} was split differently from {runs[0]}: an ensemble needs the same {split} set")
        ids, labels = rows["image_id"].to_numpy(), rows["label_index"].to_numpy()
        images = load_images(rows["path"].tolist(), run.input_size, run.resize_mode).images
        probs.append(predict(run.load_model(), images, f"{run.name} on {split}"))
    return compute_metrics(labels, np.mean(probs, axis=0))
