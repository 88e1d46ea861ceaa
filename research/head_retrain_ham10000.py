"""Classifier retraining (cRT, Kang et al. 2020) on a finished run, scored on the validation split.

The run's backbone stays as trained; only its last layer is fitted again, by scikit-learn's multinomial
logistic regression with classes weighted evenly, on pooled features of augmented training images. The
run's decision rule is then refit on validation, as a bundle with the new layer would answer.

    .venv/bin/python research/head_retrain_ham10000.py models/ham10000_mobilenet_v2

A research script, not a benchmark: it shares the val probe's and the benchmarks' helpers, so it puts
``research/`` and ``benchmarks/`` on the import path; its result goes beside the benchmarks' own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_result
from val_probes_ham10000 import after_decision, headline

RESULT = "head_retrain_ham10000.json"


def augmented_features(run, features_model, views: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features of ``views`` draws of the run's own augmentation of every training image."""
    from toolkit.data.augment import AugmentConfig, augment_image
    from toolkit.data.images import load_images
    from toolkit.model.classifier import predict

    rows = run.rows("train")
    images = load_images(rows["path"].tolist(), run.input_size, run.resize_mode, desc="loading train").images
    augment, rng = AugmentConfig(**run.config["augment"]), np.random.default_rng(seed)
    features = []
    for index in range(views):
        drawn = np.stack([augment_image(image, augment, rng) for image in images])
        features.append(predict(features_model, drawn, f"train features, view {index + 1} of {views}"))
    return np.concatenate(features), np.tile(rows["label_index"].to_numpy(), views)


def main() -> None:
    import keras
    from sklearn.linear_model import LogisticRegression

    from toolkit.data.images import load_images
    from toolkit.model.classifier import predict
    from toolkit.train.runs import open_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder")
    parser.add_argument("--views", type=int, default=4, help="augmented draws of each training image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = open_run(args.run)
    model = run.load_raw_model()
    features_model = keras.Model(model.input, model.get_layer("pool").output)
    rows = run.rows("val")
    labels = rows["label_index"].to_numpy()
    val_images = load_images(rows["path"].tolist(), run.input_size, run.resize_mode, desc="loading val").images
    train_labels = run.rows("train")["label_index"].to_numpy()
    objective = run.config["decision"]

    started = time.monotonic()
    features, targets = augmented_features(run, features_model, args.views, args.seed)
    extracted = time.monotonic()
    classifier = LogisticRegression(class_weight="balanced", max_iter=3000).fit(features, targets)
    fitted = time.monotonic()
    val_features = predict(features_model, val_images, "val features")
    shipped = predict(model.get_layer("head"), val_features, "shipped layer on val")  # no second backbone pass
    retrained = classifier.predict_proba(val_features)
    result = {
        "run": str(args.run),
        "views": args.views,
        "train_rows": len(targets),
        "seconds": {"features": round(extracted - started), "fit": round(fitted - extracted)},
        "val_images": len(labels),
    }
    for name, probs in (("shipped_layer", shipped), ("retrained_layer", retrained)):
        result[name] = {
            **headline(labels, probs),
            f"after_{objective}_decision": after_decision(labels, probs, train_labels, objective),
        }
    print(json.dumps(result, indent=2))
    print(f"wrote {write_result(RESULT, {**environment(), **result})}")


if __name__ == "__main__":
    main()
