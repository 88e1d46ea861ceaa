"""A prototype: fine-tune a finished MobileNetV2 run towards its own int8 simulation, and score the result.

Two paths share every weight: the float model, held to the labels by the recipe's loss, and the same
model with every stream and ReLU6 output fake-quantized as the converter will (straight-through
gradients), held to the float path's probabilities by their KL divergence. The new float model is the
reference its int8 export is gated against. Scored on the validation split: that agreement, and the
float model's balanced accuracy and macro-F1 on the mirror views, which the run's checkpoint choice
did not see.

    .venv/bin/python research/int8_consistency_ham10000.py models/ham10000_mobilenet_v2

A research script, not a benchmark; its results go beside the benchmarks' own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, in_repo, write_result
from int8_drift_ham10000 import (
    FakeQuant,
    agreement,
    is_relu,
    is_stream,
    litert_probs,
    split_at_backbone,
    tensor_ranges,
    with_fake_quant,
)
from val_probes_ham10000 import VIEWS, view

from toolkit.base.classes import CLASSES
from toolkit.export.convert import convert
from toolkit.export.quantization import Quantization

RESULT = "int8_consistency_ham10000.json"
KL_WEIGHT = 10.0
LEARNING_RATE = 1e-5
EPOCHS = 2
MIRRORS = ("flip_h", "flip_v", "flip_hv")  # views the run's checkpoint was not chosen on
SCORED = ("balanced_accuracy", "macro_f1", "accuracy")


class StraightThroughQuant(FakeQuant):
    """FakeQuant in the forward pass, the identity in the backward pass."""

    def call(self, x):
        return x + keras.ops.stop_gradient(super().call(x) - x)


def two_paths(model: keras.Model, calibration: np.ndarray) -> keras.Model:
    """Raw images in; the float path's and the quantized path's probabilities out, side by side."""
    before, backbone, _ = split_at_backbone(model)
    layers = [layer for layer in backbone.layers if is_stream(layer) or is_relu(layer)]
    ranges = tensor_ranges(backbone, before.predict(calibration, verbose=0), layers)
    pool, dense = model.get_layer("pool"), model.get_layer("head").layers[-1]  # no dropout: both paths alike
    images = keras.Input(model.input.shape[1:])
    normalised = before(images)
    floats = dense(pool(backbone(normalised)))
    quantized = dense(pool(with_fake_quant(backbone, ranges, StraightThroughQuant)(normalised)))
    return keras.Model(images, keras.ops.concatenate([floats, quantized], axis=1))


def consistency_loss(smoothing: float):
    classes = len(CLASSES)

    def loss(targets, outputs):
        floats, quantized = outputs[:, :classes], outputs[:, classes:]
        floats_clipped = keras.ops.clip(floats, 1e-7, 1.0)
        smoothed = targets * (1 - smoothing) + smoothing / classes
        cross_entropy = -keras.ops.sum(smoothed * keras.ops.log(floats_clipped), axis=1)
        divergence = keras.ops.sum(
            floats_clipped * (keras.ops.log(floats_clipped) - keras.ops.log(keras.ops.clip(quantized, 1e-7, 1.0))),
            axis=1,
        )
        return cross_entropy + KL_WEIGHT * divergence

    return loss


def scores(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> dict:
    """Float predictions and headline scores on the identity view and on each mirror view."""
    from toolkit.base.metrics import compute_metrics
    from toolkit.model.classifier import predict

    probs = {
        name: predict(model, view(images, *VIEWS[name]).astype(np.float32), name) for name in ("identity", *MIRRORS)
    }
    table = {name: compute_metrics(labels, p) for name, p in probs.items()}
    return probs["identity"], {
        "identity": {key: round(table["identity"][key], 4) for key in SCORED},
        "mirror_mean": {key: round(float(np.mean([table[name][key] for name in MIRRORS])), 4) for key in SCORED},
    }


def main() -> None:
    from toolkit.data.augment import AugmentConfig
    from toolkit.data.images import load_images
    from toolkit.data.pipeline import ImageBatches
    from toolkit.export.calibration import calibration_images
    from toolkit.export.options import ExportOptions
    from toolkit.model.classifier import set_phase
    from toolkit.train.runs import open_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished MobileNetV2 run folder")
    args = parser.parse_args()
    run = open_run(args.run)
    keras.utils.set_random_seed(0)
    calibration, _ = calibration_images(run, ExportOptions.calibration_images)
    val = run.rows("val")
    val_images = load_images(val["path"].tolist(), run.input_size, run.resize_mode, desc="loading val").images
    val_labels = val["label_index"].to_numpy()
    train = run.rows("train")
    train_images = load_images(train["path"].tolist(), run.input_size, run.resize_mode, desc="loading train").images
    model = run.load_model()
    int8 = Quantization("int8")
    result: dict = {"run": in_repo(args.run.resolve()), "kl_weight": KL_WEIGHT, "learning_rate": LEARNING_RATE}

    def measure(name: str) -> None:
        reference, table = scores(model, val_images, val_labels)
        quantized = litert_probs(convert(model, run.input_size, int8, calibration), val_images)
        result[name] = {"int8_top1_agreement": agreement(quantized, reference), **table}
        print(name, json.dumps(result[name]), flush=True)

    measure("before")
    config = run.config
    set_phase(model, config["arch"], "finetune", config["boundary"])
    trainer = two_paths(model, calibration.astype(np.float32))
    trainer.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=consistency_loss(config["label_smoothing"]))
    batches = ImageBatches(
        train_images,
        train["label_index"].to_numpy(),
        batch_size=config["batch_size"],
        shuffle=True,
        augment=AugmentConfig(**config["augment"]),
        imbalance=config["imbalance"],
        class_weight_power=config["class_weight_power"],
        seed=1,
    )
    started = time.monotonic()
    trainer.fit(batches, epochs=EPOCHS, shuffle=False, verbose=2)
    result["train_seconds"] = round(time.monotonic() - started)
    measure("after")
    path = write_result(RESULT, {**environment(), **result})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
