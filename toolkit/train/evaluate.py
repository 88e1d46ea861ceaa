"""Score finished runs, and ensembles of them, on a split of their manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.base.metrics import compute_metrics
from toolkit.data.images import load_images
from toolkit.model.classifier import predict
from toolkit.train.runs import check_same_split, open_run


def evaluate_runs(runs: list[Path], split: str = "test") -> dict:
    """Run each run's best model on ``split`` of its manifest and score the mean of their probabilities."""
    opened = [open_run(path) for path in runs]
    check_same_split(opened, split, "an ensemble")
    probs = []
    for run in opened:
        rows = run.rows(split)
        images = load_images(rows["path"].tolist(), run.input_size, run.resize_mode).images
        probs.append(predict(run.load_model(), images, f"{run.name} on {split}"))
    return compute_metrics(opened[0].rows(split)["label_index"].to_numpy(), np.mean(probs, axis=0))
