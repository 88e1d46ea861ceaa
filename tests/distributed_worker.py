"""Run by ``test_distributed.py`` in a subprocess, where XLA_FLAGS splits the CPU into 4 devices before JAX loads.

``same``: the same tiny run on 1 device and on 4 (global batch 16), for the BatchNorm fix and for BatchNorm
training; prints, as JSON, both loss curves and how far the final weights are apart. ``twin``: one process of
a two-process run (the ``train`` command's flags after it); prints a digest of its weights after each phase.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from toolkit.train.config import TrainConfig
from toolkit.train.trainer import train


def tiny(data: str, weights: str, devices: str) -> TrainConfig:
    return TrainConfig(
        data=data,
        arch="mobilenet_v2",
        alpha=1.0 if weights == "imagenet" else 0.35,
        input_size=32,
        weights=weights,
        epochs_head=0,
        epochs_finetune=2,
        batch_size=16,
        limit=48,
        boundary="all",
        lr_finetune=1e-5,
        mixup=0.2,
        ema=0.9,  # the moving average as well: each device's copy of it must agree too
        decision="none",
        devices=devices,
    )


def same(data: str, out: Path) -> dict:
    found = {}
    for weights in ("imagenet", "none"):
        runs = {devices: train(tiny(data, weights, devices), out / f"{weights}_{devices}") for devices in ("1", "4")}
        models = {devices: keras.saving.load_model(run / "model.keras") for devices, run in runs.items()}
        moving = {d: [v.numpy() for v in m.weights if "moving" in v.path] for d, m in models.items()}
        found[weights] = {
            "loss": {d: pd.read_csv(run / "history.csv")["loss"].tolist() for d, run in runs.items()},
            "max_weight_diff": max(
                float(np.abs(a - b).max())
                for a, b in zip(models["1"].get_weights(), models["4"].get_weights(), strict=True)
            ),
            "max_moving_diff": max(float(np.abs(a - b).max()) for a, b in zip(moving["1"], moving["4"], strict=True)),
            "moving_equal_pretrained": weights == "imagenet"
            and all(np.array_equal(a, b) for a, b in zip(moving["4"], pretrained_moving(), strict=True)),
            "config": json.loads((runs["4"] / "config.json").read_text())["distribution"],
            "devices": json.loads((runs["4"] / "state.json").read_text())["devices"],
            "reference_device": str(np.load(runs["4"] / "reference.npz")["device"]),
        }
    return found


def pretrained_moving() -> list[np.ndarray]:
    from toolkit.model.classifier import build_classifier

    model = build_classifier("mobilenet_v2", 32, "imagenet", 1.0, 0.0)
    return [v.numpy() for v in model.weights if "moving" in v.path]


def twin(argv: list[str]) -> None:
    """The ``train`` command, with each process's weights printed after every stage (process 1 writes nothing)."""
    import hashlib

    import toolkit.train.trainer as trainer
    from toolkit.cli import main

    fit_stage = trainer.fit_stage

    def reporting(model, config, stage, *args, **kwargs):
        optimizer = fit_stage(model, config, stage, *args, **kwargs)
        digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights())).hexdigest()
        print(f"WEIGHTS {stage.name} {digest}", flush=True)
        return optimizer

    trainer.fit_stage = reporting
    sys.exit(main(["train", *argv]))


if __name__ == "__main__":
    if sys.argv[1] == "twin":
        twin(sys.argv[2:])
    print("RESULT " + json.dumps(same(sys.argv[2], Path(sys.argv[3]))))
