"""Input pipeline throughput at 224x224 with augmentation on all shared HAM10000 images.

Side by side in one run: the toolkit's path (decode and resize once into memory, then one composed
affine warp and one colour lookup per image, batched by worker threads) and a naive baseline doing the
same work as the original notebooks' ImageDataGenerator did: every epoch, per image in a Python loop,
read, resize, rotate/shift/zoom and flip with ``cv2.warpAffine``, then jitter brightness and contrast.

    python benchmarks/pipeline_throughput.py [--data ../shared/data/ham10000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import cv2
import numpy as np
from common import SHARED, environment, write_result

from toolkit.base.classes import CLASSES
from toolkit.data.augment import AugmentConfig
from toolkit.data.images import load_images
from toolkit.data.pipeline import ImageBatches
from toolkit.data.readers import read_dataset


def naive_epoch(paths: list[str], size: int, batch_size: int, config: AugmentConfig, rng: np.random.Generator) -> int:
    """The notebook way: nothing cached, one image at a time, every transform a separate step."""
    seen = 0
    for start in range(0, len(paths), batch_size):
        batch = []
        for path in paths[start : start + batch_size]:
            image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
            image = cv2.resize(image, (size, size))
            centre = (size / 2, size / 2)
            matrix = cv2.getRotationMatrix2D(centre, rng.uniform(-config.rotation, config.rotation), 1.0)
            image = cv2.warpAffine(image, matrix, (size, size), borderMode=cv2.BORDER_REFLECT_101)
            shift = np.float32(
                [[1, 0, rng.uniform(-1, 1) * config.shift * size], [0, 1, rng.uniform(-1, 1) * config.shift * size]]
            )
            image = cv2.warpAffine(image, shift, (size, size), borderMode=cv2.BORDER_REFLECT_101)
            zoom = cv2.getRotationMatrix2D(centre, 0, rng.uniform(1 - config.zoom, 1 + config.zoom))
            image = cv2.warpAffine(image, zoom, (size, size), borderMode=cv2.BORDER_REFLECT_101)
            if rng.random() < 0.5:
                image = cv2.flip(image, 1)
            if rng.random() < 0.5:
                image = cv2.flip(image, 0)
            contrast, offset = rng.uniform(0.9, 1.1), rng.uniform(-0.1, 0.1) * 255
            image = np.clip((image.astype(np.float32) - image.mean()) * contrast + image.mean() + offset, 0, 255)
            batch.append(image.astype(np.uint8))
        seen += len(np.stack(batch))
    return seen


def toolkit_epoch(batches: ImageBatches) -> int:
    return sum(len(x) for x, _ in batches.epoch_batches())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "data" / "ham10000"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    table = read_dataset(args.data).table
    paths, labels = table["path"].tolist(), table["label"].map(CLASSES.index).to_numpy()
    config, rng = AugmentConfig(), np.random.default_rng(0)
    rates: dict[str, list[float]] = {"naive": [], "toolkit": []}
    batches = None
    for epoch in range(args.epochs):
        start = time.perf_counter()
        count = naive_epoch(paths, args.size, args.batch_size, config, rng)
        rates["naive"].append(count / (time.perf_counter() - start))

        start = time.perf_counter()
        if batches is None:  # the first epoch pays for decoding and resizing into the cache
            images = load_images(paths, args.size, "squash", workers=args.workers).images
            batches = ImageBatches(images, labels, args.batch_size, shuffle=True, augment=config, workers=args.workers)
        count = toolkit_epoch(batches)
        rates["toolkit"].append(count / (time.perf_counter() - start))
        print(f"epoch {epoch + 1}: naive {rates['naive'][-1]:.0f} img/s, toolkit {rates['toolkit'][-1]:.0f} img/s")

    later = {name: float(np.mean(r[1:])) for name, r in rates.items()}
    result = {
        "benchmark": "input pipeline throughput, decode + resize + augment + batch",
        "images": len(paths),
        "size": args.size,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "augmentation": asdict(config),
        "images_per_second": {name: [round(r) for r in values] for name, values in rates.items()},
        "from_epoch_2": {name: round(value) for name, value in later.items()},
        "speedup_from_epoch_2": round(later["toolkit"] / later["naive"], 2),
        "speedup_epoch_1": round(rates["toolkit"][0] / rates["naive"][0], 2),
        "target_speedup": 3.0,
        **environment("opencv-python-headless", "numpy", "keras"),
    }
    print(f"speed-up from epoch 2 on: {result['speedup_from_epoch_2']}x (target 3x)")
    print(f"wrote {write_result('pipeline_throughput.json', result)}")


if __name__ == "__main__":
    main()
