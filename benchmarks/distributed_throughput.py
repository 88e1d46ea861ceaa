"""Training images per second on 1, 2 and 4 virtual CPU devices (JAX, Keras DataParallel), side by side in one run.

On a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=4 splits the same cores into 4 devices: the numbers show
the overhead of sharding the batch and all-reducing the gradients, not a speed-up. On a machine with several GPUs,
``--real`` measures the real devices instead, in the same JSON format.

    .venv/bin/python benchmarks/distributed_throughput.py            # writes results/distributed_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from common import environment, write_result

BATCH, SIZE = 32, 96  # global batch; a small input, so that the step is not all convolution


def measure(devices: int, steps: int) -> dict:
    """Fine-tune steps of MobileNetV2 (full backbone, random weights: BatchNorm trains) on ``devices`` devices."""
    import keras

    from toolkit.data.pipeline import ImageBatches
    from toolkit.model.classifier import build_classifier
    from toolkit.train.distribute import place

    placement = place(str(devices), BATCH)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (BATCH * 4, SIZE, SIZE, 3), dtype=np.uint8), rng.integers(0, 7, BATCH * 4)
    model = build_classifier("mobilenet_v2", SIZE, "none")
    model.compile(keras.optimizers.Adam(1e-4), keras.losses.CategoricalCrossentropy())
    batches = ImageBatches(images, labels, BATCH, shuffle=True, multiple_of=devices)
    model.fit(batches, epochs=1, verbose=0, shuffle=False)  # compiles the step
    started = time.perf_counter()
    epochs = max(1, steps // len(batches))
    model.fit(batches, epochs=epochs, verbose=0, shuffle=False)
    seconds = time.perf_counter() - started
    return {"devices": len(placement.devices), "per_device_batch": BATCH // devices,
            "images_per_second": round(epochs * len(batches) * BATCH / seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16, help="timed steps of the global batch per device count")
    parser.add_argument("--real", action="store_true", help="the machine's own devices, not virtual CPU ones")
    parser.add_argument("--devices", type=int, help=argparse.SUPPRESS)  # one count, in a child
    args = parser.parse_args()
    if args.devices:
        print(json.dumps(measure(args.devices, args.steps)))
        return
    results = {}
    for count in (1, 2, 4):
        env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
        if not args.real:
            env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
        command = [sys.executable, __file__, "--devices", str(count), "--steps", str(args.steps)]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(f"{count} devices failed:\n{done.stderr[-2000:]}")
        results[str(count)] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{count} device(s): {results[str(count)]['images_per_second']:8.1f} images/s", flush=True)
    kind = "real devices" if args.real else "virtual CPU devices (XLA_FLAGS): overhead, not speed-up"
    result = {**environment(), "global_batch": BATCH, "input_size": SIZE, "devices_are": kind, "runs": results}
    print(f"wrote {write_result('distributed_throughput.json', result)}")


if __name__ == "__main__":
    main()
