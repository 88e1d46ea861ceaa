"""Batches for ``model.fit`` on any Keras 3 backend: cached uint8 images, OpenCV augmentation, imbalance handling.

No ``tf.data``: the same code feeds TensorFlow and JAX. Rotation, shift, zoom and both flips are
composed into one affine matrix per image, so each image is warped once (Keras's separate random
layers warp four times and run at a quarter of the speed on CPU); brightness and contrast are one
lookup table. Batches stay uint8 in [0, 255]: normalisation lives inside the model, after augmentation,
so nothing is clipped to the wrong range.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import keras
import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from toolkit.classes import CLASSES
from toolkit.errors import ToolkitError

IMBALANCE_MODES = ("class_weight", "oversample", "none")


@dataclass(frozen=True)
class AugmentConfig:
    """Random transforms per image, defaulting to the original notebooks' ``ImageDataGenerator`` settings."""

    rotation: float = 10.0  # maximum rotation, degrees either way
    shift: float = 0.1  # maximum shift, fraction of width and of height
    zoom: float = 0.1  # zoom drawn from [1 - zoom, 1 + zoom]
    horizontal_flip: bool = True
    vertical_flip: bool = True
    brightness: float = 0.1  # added offset, fraction of 255
    contrast: float = 0.1  # contrast factor drawn from [1 - contrast, 1 + contrast]

    @classmethod
    def preset(cls, name: str) -> AugmentConfig | None:
        """``notebook`` (the defaults), ``dermoscopy`` (any rotation: a lesion has no up) or ``none``."""
        if name not in AUGMENT_PRESETS:
            raise ToolkitError(f"unknown augmentation {name!r}; expected one of {', '.join(AUGMENT_PRESETS)}")
        return AUGMENT_PRESETS[name]


AUGMENT_PRESETS: dict[str, AugmentConfig | None] = {
    "notebook": AugmentConfig(),
    "dermoscopy": AugmentConfig(rotation=180.0, shift=0.1, zoom=0.2, brightness=0.1, contrast=0.2),
    "none": None,
}


def _affine_matrix(config: AugmentConfig, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    centre = np.array([(width - 1) / 2, (height - 1) / 2])  # pixel centres sit on integers
    angle = rng.uniform(-config.rotation, config.rotation)
    scale = rng.uniform(1 - config.zoom, 1 + config.zoom)
    matrix = cv2.getRotationMatrix2D(tuple(centre), angle, scale)
    flips = [
        -1.0 if config.horizontal_flip and rng.random() < 0.5 else 1.0,
        -1.0 if config.vertical_flip and rng.random() < 0.5 else 1.0,
    ]
    matrix[:, :2] *= flips  # flipping about the centre is a negative scale on that axis
    shift = rng.uniform(-config.shift, config.shift, 2) * (width, height)
    matrix[:, 2] = centre - matrix[:, :2] @ centre + shift
    return matrix


_LEVELS = np.arange(256, dtype=np.float32)


def augment_image(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One random affine warp (reflecting at the border) and one brightness/contrast lookup, uint8 in and out."""
    height, width = image.shape[:2]
    warped = cv2.warpAffine(
        image, _affine_matrix(config, rng, width, height), (width, height), borderMode=cv2.BORDER_REFLECT_101
    )
    if not (config.brightness or config.contrast):
        return warped
    contrast = rng.uniform(1 - config.contrast, 1 + config.contrast)
    offset = rng.uniform(-config.brightness, config.brightness) * 255
    mean = cv2.mean(cv2.cvtColor(warped, cv2.COLOR_RGB2GRAY))[0]
    table = np.clip(contrast * (_LEVELS - mean) + mean + offset, 0, 255).astype(np.uint8)
    return cv2.LUT(warped, table)


def augment_batch(images: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    return np.stack([augment_image(image, config, rng) for image in images])


def class_weights(labels: np.ndarray, power: float = 1.0) -> np.ndarray:
    """Per-class loss weights from scikit-learn's 'balanced' rule, raised to ``power`` (0.5 for square root)."""
    present = np.unique(labels)
    weights = np.ones(len(CLASSES), np.float32)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels) ** power
    return weights


def check_mixup(alpha: float) -> None:
    if alpha < 0:
        raise ToolkitError(f"mixup must be 0 (off) or a positive Beta parameter such as 0.2, not {alpha}")


def mix_batch(
    images: np.ndarray, targets: np.ndarray, weights: np.ndarray | None, alpha: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Mixup within a batch: each sample blended with a shuffled partner by its own Beta(alpha, alpha) draw.

    Images come back float32 in [0, 255] (the model normalises); targets and class weights blend by the
    same amount, so a mixed sample costs what its two halves would.
    """
    partner = rng.permutation(len(images))
    amount = rng.beta(alpha, alpha, len(images)).astype(np.float32)
    pixels = amount.reshape(-1, *([1] * (images.ndim - 1)))
    mixed = pixels * images.astype(np.float32) + (1 - pixels) * images[partner].astype(np.float32)
    blend = amount[:, None] * targets + (1 - amount[:, None]) * targets[partner]
    if weights is not None:
        weights = amount * weights + (1 - amount) * weights[partner]
    return mixed, blend, weights


class ImageBatches(keras.utils.PyDataset):
    """Shuffled, augmented, class-balanced batches of cached images, with one-hot labels.

    ``imbalance`` is ``class_weight`` (each batch carries per-sample weights), ``oversample``
    (each epoch draws images with probability inversely proportional to their class size) or
    ``none``. ``mixup`` > 0 blends each image and its one-hot target with another image of the same
    batch, by a weight drawn from Beta(mixup, mixup) (Zhang et al. 2018); a regulariser against the
    fine-tune's overfitting. Random draws depend only on (seed, epoch, batch), so worker threads cannot change them.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int = 32,
        shuffle: bool = False,
        augment: AugmentConfig | None = None,
        imbalance: str = "none",
        class_weight_power: float = 1.0,
        seed: int = 0,
        workers: int = 2,
        mixup: float = 0.0,
    ):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
        if imbalance not in IMBALANCE_MODES:
            raise ToolkitError(f"unknown imbalance mode {imbalance!r}; expected one of {', '.join(IMBALANCE_MODES)}")
        if len(images) != len(labels) or not len(images):
            raise ToolkitError(f"need as many labels as images, and at least one: got {len(images)} and {len(labels)}")
        check_mixup(mixup)
        self.images, self.labels = images, np.asarray(labels, np.int64)
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.imbalance, self.seed, self.epoch, self.mixup = imbalance, seed, 0, mixup
        self.weights = class_weights(self.labels, class_weight_power) if imbalance == "class_weight" else None
        self.order = self._epoch_order()

    def _epoch_order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.imbalance == "oversample":
            counts = np.bincount(self.labels, minlength=len(CLASSES))
            probability = 1.0 / counts[self.labels]
            return rng.choice(len(self.labels), size=len(self.labels), p=probability / probability.sum())
        return rng.permutation(len(self.labels)) if self.shuffle else np.arange(len(self.labels))

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.images[rows]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.augment is not None:
            images = augment_batch(images, self.augment, rng)
        targets = np.eye(len(CLASSES), dtype=np.float32)[self.labels[rows]]
        weights = None if self.weights is None else self.weights[self.labels[rows]]
        if self.mixup:
            images, targets, weights = mix_batch(images, targets, weights, self.mixup, rng)
        return (images, targets) if weights is None else (images, targets, weights)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._epoch_order()

    def epoch_batches(self) -> Iterator[tuple]:
        """One epoch in order, built by ``workers`` threads as ``fit`` would, then advance the epoch."""
        with ThreadPoolExecutor(self.workers) as pool:
            yield from pool.map(self.__getitem__, range(len(self)))
        self.on_epoch_end()
