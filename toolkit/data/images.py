"""Decode and check images with OpenCV, resize them as the contract says, and cache a whole split as uint8.

Decoding is the slow part of an epoch, so each image is decoded and resized once; augmentation
then works on the cached array. Paths of the form ``file.npz#split/index`` address images held
in a MedMNIST-style ``.npz`` file, so every layout flows through the same code.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from toolkit.base.errors import ToolkitError

RESIZE_MODES = ("squash", "pad")
NPZ_SEPARATOR = "#"


@lru_cache(maxsize=4)
def _npz_arrays(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {key: npz[key] for key in npz.files}


def read_npz_image(path: str) -> np.ndarray:
    file, _, address = path.partition(NPZ_SEPARATOR)
    split, _, index = address.partition("/")
    image = _npz_arrays(file)[f"{split}_images"][int(index)]
    return image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)


def _looks_truncated(data: bytes) -> bool:
    """A JPEG that stops before its end-of-image marker: OpenCV would decode it with a grey tail."""
    return data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00").endswith(b"\xff\xd9")


# EXIF orientation -> the steps that turn the stored pixels upright (Pillow's ImageOps.exif_transpose table).
UPRIGHT = {
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],  # mirrored upside down
    5: lambda a: a.transpose(1, 0, 2),  # transposed
    6: lambda a: np.rot90(a, -1),  # stored 90 degrees anticlockwise: turn clockwise
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # transversed
    8: lambda a: np.rot90(a, 1),  # stored 90 degrees clockwise: turn anticlockwise
}
ORIENTATION_TAG = 0x0112


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1 to 8) of an encoded image; 1 (as stored) when it has none or an unreadable one."""
    from PIL import Image  # reads the header only

    try:
        with Image.open(io.BytesIO(data)) as image:
            orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # Pillow raises many types on odd headers; OpenCV judges the pixels
        return 1
    return orientation if orientation in UPRIGHT else 1


def _to_rgb(image: np.ndarray, path: str) -> np.ndarray:
    """OpenCV's decoded pixels as 8-bit RGB, as a browser's decoder gives them: 16-bit keeps its high byte,
    grayscale is repeated into three channels, an alpha channel that is fully opaque is dropped. Transparency
    is refused: what lies under a transparent pixel differs between decoders."""
    import cv2

    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ToolkitError(f"{image.dtype} image, expected 8 or 16 bits per channel: {path}")
    if image.ndim == 2 or image.shape[2] == 1:
        return np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
    if image.shape[2] == 4:
        if (image[..., 3] != 255).any():
            raise ToolkitError(f"image with transparency (alpha below 255), expected an opaque photo: {path}")
        image = image[..., :3]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_image(path: str | os.PathLike) -> np.ndarray:
    """Return the image at ``path`` as upright RGB uint8 (H, W, 3), or raise naming the file and the fault.

    Upright: the EXIF orientation is applied, as phones, browsers and Dart's decoder do; a photo stored on
    its side with orientation 6 was otherwise classified as another lesion than the same photo upright.
    """
    import cv2  # here, not at the top: the CLI checks resize modes without loading OpenCV

    path = str(path)
    if NPZ_SEPARATOR in path and path.split(NPZ_SEPARATOR)[0].endswith(".npz"):
        return read_npz_image(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ToolkitError(f"image file not found: {path}") from None
    except OSError as error:
        raise ToolkitError(f"cannot read image {path}: {error.strerror}") from None
    if not data:
        raise ToolkitError(f"empty image file (0 bytes): {path}")
    if _looks_truncated(data):
        raise ToolkitError(f"truncated JPEG (no end-of-image marker): {path}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ToolkitError(f"unreadable image (not a JPEG/PNG OpenCV can decode): {path}")
    rgb = _to_rgb(image, path)
    orientation = exif_orientation(data)
    return np.ascontiguousarray(UPRIGHT[orientation](rgb)) if orientation != 1 else rgb


def resize_image(image: np.ndarray, size: int, mode: str = "squash") -> np.ndarray:
    """Resize to ``size`` x ``size`` as the preprocessing contract says (:mod:`toolkit.data.resize`): ``squash``
    stretches, ``pad`` keeps the aspect ratio and pads with black; area when an axis shrinks, linear when it grows.
    """
    from toolkit.data.resize import resize_contract

    if mode not in RESIZE_MODES:
        raise ToolkitError(f"unknown resize mode {mode!r}; expected one of {', '.join(RESIZE_MODES)}")
    return resize_contract(image, size, mode)


@dataclass
class LoadedImages:
    """A split decoded into memory: ``images[i]`` belongs to ``kept[i]``, the index into the requested paths."""

    images: np.ndarray
    kept: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)


def load_images(
    paths: list[str],
    size: int | None,
    resize_mode: str = "squash",
    skip_bad: bool = False,
    workers: int | None = None,
    desc: str = "decoding images",
) -> LoadedImages:
    """Decode (and resize, unless ``size`` is None) every image in parallel threads; OpenCV releases the GIL.

    With ``skip_bad`` a bad file is listed in ``skipped`` instead of raising; with ``size=None``
    images are only checked (the returned array is empty).
    """

    def load(path: str) -> np.ndarray | str:
        try:
            image = decode_image(path)
        except ToolkitError as error:
            if not skip_bad:
                raise
            return str(error)
        return resize_image(image, size, resize_mode) if size else image[:0, :0]

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(load, paths), total=len(paths), desc=desc, unit="img", leave=False, disable=None))
    kept = np.array([i for i, r in enumerate(results) if not isinstance(r, str)], dtype=np.int64)
    skipped = [(paths[i], r) for i, r in enumerate(results) if isinstance(r, str)]
    shape = (len(kept), size, size, 3) if size else (len(kept), 0, 0, 3)
    images = np.stack([results[i] for i in kept]) if size and len(kept) else np.zeros(shape, np.uint8)
    return LoadedImages(images=images, kept=kept, skipped=skipped)
