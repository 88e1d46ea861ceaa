"""Augmentation for training batches: one affine warp and one colour lookup per image, and mixup.

Rotation, shift, zoom and both flips are composed into one affine matrix per image, so each image is
warped once (Keras's separate random layers warp four times and run at a quarter of the speed on CPU);
brightness, contrast and a gain per colour channel are one lookup table. The presets and their checks
load no OpenCV, so the CLI offers them as choices in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.base.errors import ToolkitError


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
    colour: float = 0.0  # gain per RGB channel drawn from [1 - colour, 1 + colour]: another dermatoscope's light

    @classmethod
    def preset(cls, name: str) -> AugmentConfig | None:
        """``notebook`` (the defaults), ``dermoscopy`` (any rotation: a lesion has no up), ``dermoscopy_colour``
        (also a gain per colour channel, for other dermatoscopes' light) or ``none``."""
        if name not in AUGMENT_PRESETS:
            raise ToolkitError(f"unknown augmentation {name!r}; expected one of {', '.join(AUGMENT_PRESETS)}")
        return AUGMENT_PRESETS[name]


AUGMENT_PRESETS: dict[str, AugmentConfig | None] = {
    "notebook": AugmentConfig(),
    "dermoscopy": AugmentConfig(rotation=180.0, shift=0.1, zoom=0.2, brightness=0.1, contrast=0.2),
    # not the recipe's: with 144 px it lost on val over the full recipe (docs/research-log.md, 2026-12-03)
    "dermoscopy_colour": AugmentConfig(rotation=180.0, shift=0.1, zoom=0.2, brightness=0.1, contrast=0.2, colour=0.1),
    "none": None,
}


def _affine_matrix(config: AugmentConfig, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    import cv2  # here, not at the top: the CLI reads the presets without loading OpenCV

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
    """One random affine warp (reflecting at the border) and one colour lookup, uint8 in and out."""
    import cv2

    height, width = image.shape[:2]
    warped = cv2.warpAffine(
        image, _affine_matrix(config, rng, width, height), (width, height), borderMode=cv2.BORDER_REFLECT_101
    )
    if not (config.brightness or config.contrast or config.colour):
        return warped
    contrast = rng.uniform(1 - config.contrast, 1 + config.contrast)
    offset = rng.uniform(-config.brightness, config.brightness) * 255
    mean = cv2.mean(cv2.cvtColor(warped, cv2.COLOR_RGB2GRAY))[0]
    levels = contrast * (_LEVELS - mean) + mean + offset
    if config.colour:  # drawn last, so the presets without it keep their random streams
        gains = rng.uniform(1 - config.colour, 1 + config.colour, 3).astype(np.float32)
        levels = levels[:, None, None] * gains  # one column per channel: cv2.LUT maps each channel by its own
    return cv2.LUT(warped, np.clip(levels, 0, 255).astype(np.uint8))


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
