"""What makes a training step cheaper on a 2-core CPU: the levers of the shipping recipe, side by side in one run.

Each variant trains MobileNetV2 (ImageNet weights, the BatchNorm fix) on the same real HAM10000 images in
its own process (TensorFlow's thread pools are fixed once it starts) and reports images per second:

- ``finetune_176``: the recipe's step, the whole backbone fine-tuning at 176 px, TensorFlow's default threads;
- ``finetune_144`` and ``finetune_112``: progressive resizing's early, smaller steps (Keras loads its 224 px
  ImageNet file for sizes outside 96/128/160/192/224, the only MobileNetV2 file on these machines);
- ``finetune_176_bfloat16``: the recipe's step under Keras's ``mixed_bfloat16`` policy (AMX or AVX512-BF16 CPUs);
- ``threads_intra2_inter1`` and ``threads_intra1_inter1``: TensorFlow's thread settings at 176 px;
- ``head_through_backbone``: a head epoch with the frozen backbone run on every batch (``--augment-head``);
- ``head_cached``: a head epoch on cached backbone features (the default head phase), the caching pass
  included, spread over the recipe's two head epochs.

    .venv/bin/python benchmarks/train_levers.py [--images 640] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from common import SHARED, environment, write_result

VARIANTS = {
    "finetune_176": {"size": 176, "phase": "finetune"},
    "finetune_144": {"size": 144, "phase": "finetune"},
    "finetune_112": {"size": 112, "phase": "finetune"},
    "finetune_176_from_block_3": {"size": 176, "phase": "finetune", "boundary": "block_3"},
    "finetune_176_bfloat16": {"size": 176, "phase": "finetune", "policy": "mixed_bfloat16"},
    "threads_intra2_inter1": {"size": 176, "phase": "finetune", "intra": 2, "inter": 1},
    "threads_intra1_inter1": {"size": 176, "phase": "finetune", "intra": 1, "inter": 1},
    "head_through_backbone": {"size": 176, "phase": "head"},
    "head_cached": {"size": 176, "phase": "head", "cached": True},
}
BATCH = 32
HEAD_EPOCHS = 2  # the recipe's head phase: the caching pass is paid once for both epochs


def images(count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    from toolkit.base.classes import CLASSES
    from toolkit.data.images import load_images
    from toolkit.data.readers import read_dataset

    table = read_dataset(SHARED / "data" / "ham10000").table.sample(count, random_state=0)
    return load_images(table["path"].tolist(), size, "squash").images, table["label"].map(CLASSES.index).to_numpy()


def measure(variant: str, count: int, steps: int) -> dict:
    """Images per second of ``steps`` training batches after two warm-up batches, in this process."""
    spec = VARIANTS[variant]
    import tensorflow as tf

    if "intra" in spec:
        tf.config.threading.set_intra_op_parallelism_threads(spec["intra"])
        tf.config.threading.set_inter_op_parallelism_threads(spec["inter"])
    import keras

    keras.mixed_precision.set_global_policy(spec.get("policy", "float32"))
    from toolkit.model.classifier import build_classifier, set_phase

    keras.utils.set_random_seed(0)
    pixels, labels = images(count, spec["size"])
    targets = np.eye(7, dtype="float32")[labels]
    model = build_classifier("mobilenet_v2", spec["size"], "imagenet", dropout=0.3)
    set_phase(model, "mobilenet_v2", spec["phase"], spec.get("boundary", "all"))
    started = time.perf_counter()
    if spec.get("cached"):
        features_model = keras.Model(model.input, model.get_layer("pool").output)
        inputs = features_model.predict(pixels, batch_size=64, verbose=0)
        cache_seconds = time.perf_counter() - started
        model = keras.Sequential([keras.Input(inputs.shape[1:]), model.get_layer("head")])
    else:
        inputs, cache_seconds = pixels, 0.0
    model.compile(keras.optimizers.Adam(1e-4), keras.losses.CategoricalCrossentropy(label_smoothing=0.05))
    batches = [(inputs[i : i + BATCH], targets[i : i + BATCH]) for i in range(0, len(inputs) - BATCH + 1, BATCH)]
    for x, y in batches[:2]:
        model.train_on_batch(x, y)
    timed = [batches[i % len(batches)] for i in range(steps)]
    clock = time.perf_counter()
    for x, y in timed:
        model.train_on_batch(x, y)
    step_seconds = (time.perf_counter() - clock) / (steps * BATCH)
    # per image of a head epoch: the head's step, plus the caching pass shared by the head epochs
    per_image = step_seconds + cache_seconds / len(pixels) / HEAD_EPOCHS
    return {**spec, "images_per_second": round(1 / per_image, 1), "caching_seconds": round(cache_seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640, help="real HAM10000 images to train on")
    parser.add_argument("--steps", type=int, default=12, help="timed batches of 32 per variant")
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)  # one variant, in a child
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.images, args.steps)))
        return
    results = {}
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--variant", variant, "--images", str(args.images)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run([*command, "--steps", str(args.steps)], capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(f"{variant} failed:\n{done.stderr[-2000:]}")
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{variant:24s} {results[variant]['images_per_second']:8.1f} images/s", flush=True)
    base = results["finetune_176"]["images_per_second"]
    for result in results.values():
        result["speed_vs_finetune_176"] = round(result["images_per_second"] / base, 2)
    path = write_result("train_levers.json", {**environment(), "batch_size": BATCH, "variants": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
