"""Batches for ``model.fit`` on any Keras 3 backend: cached uint8 images, augmentation, imbalance handling.

No ``tf.data``: the same code feeds TensorFlow and JAX. Augmentation is :mod:`.augment`'s, class
weights and sampling modes :mod:`.balance`'s. Batches stay uint8 in [0, 255] (float with mixup):
normalisation lives inside the model, after augmentation, so nothing is clipped to the wrong range.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from toolkit.base.classes import CLASSES
from toolkit.base.errors import ToolkitError
from toolkit.data.augment import AugmentConfig, augment_image, check_mixup, mix_batch
from toolkit.data.balance import IMBALANCE_MODES, class_weights


class ImageBatches(keras.utils.PyDataset):
    """Shuffled, augmented, class-balanced batches of cached images, with one-hot labels.

    ``imbalance`` is ``class_weight`` (each batch carries per-sample weights), ``oversample`` (each epoch draws
    images with probability proportional to those weights: the same objective in expectation, with each rare image
    seen more often under fresh augmentation instead of counted more), or ``logit_adjust`` or ``none`` (the batches
    as drawn; logit adjustment lives in the loss). ``class_weight_power`` applies to both weighted modes. ``mixup``
    > 0 blends each image and its one-hot target with another image of the same batch, by a weight drawn from
    Beta(mixup, mixup) (Zhang et al. 2018); a regulariser against the fine-tune's overfitting. Random draws depend
    only on (seed, epoch, batch, the image's place in it), so worker threads cannot change them, nor can the number
    of devices.

    Data-parallel training: ``shard`` (process index, process count) makes each process build only its slice of
    every global batch, and ``multiple_of`` (the device count) trims a last, short batch to a multiple of it, as
    a sharded batch must be. Mixup pairs images within the process's slice. ``epoch``: the first epoch's number,
    for a ``fit`` that carries on from another's.
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
        shard: tuple[int, int] = (0, 1),
        multiple_of: int = 1,
        epoch: int = 0,
    ):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
        if imbalance not in IMBALANCE_MODES:
            raise ToolkitError(f"unknown imbalance mode {imbalance!r}; expected one of {', '.join(IMBALANCE_MODES)}")
        if len(images) != len(labels) or len(images) < multiple_of:
            raise ToolkitError(
                f"need as many labels as images, and at least {multiple_of}: got {len(images)} and {len(labels)}"
            )
        check_mixup(mixup)
        self.images, self.labels = images, np.asarray(labels, np.int64)
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.imbalance, self.seed, self.epoch, self.mixup = imbalance, seed, epoch, mixup
        self.shard, self.multiple_of = shard, multiple_of
        self.class_weights = class_weights(self.labels, class_weight_power)
        self.weights = self.class_weights if imbalance == "class_weight" else None
        self.order = self._epoch_order()

    def _epoch_order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.imbalance == "oversample":
            probability = self.class_weights[self.labels]
            return rng.choice(len(self.labels), size=len(self.labels), p=probability / probability.sum())
        return rng.permutation(len(self.labels)) if self.shuffle else np.arange(len(self.labels))

    def __len__(self) -> int:
        usable = len(self.order) - len(self.order) % self.multiple_of
        return math.ceil(usable / self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        rows = rows[: len(rows) - len(rows) % self.multiple_of]
        process, processes = self.shard
        share = len(rows) // processes
        places = np.arange(process * share, (process + 1) * share)  # this process's slice of the global batch
        rows = rows[places]
        images = self.images[rows]
        if self.augment is not None:
            images = np.stack(
                [
                    augment_image(image, self.augment, np.random.default_rng([self.seed, self.epoch, index, place]))
                    for image, place in zip(images, places, strict=True)
                ]
            )
        targets = np.eye(len(CLASSES), dtype=np.float32)[self.labels[rows]]
        weights = None if self.weights is None else self.weights[self.labels[rows]]
        if self.mixup:
            rng = np.random.default_rng([self.seed, self.epoch, index, processes, process])
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
