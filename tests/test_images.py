"""OpenCV decoding (BGR to RGB), resizing and the in-memory cache."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import HAM

from toolkit.data.images import decode_image, load_images, resize_image
from toolkit.errors import ToolkitError


def test_decode_returns_rgb_not_opencv_bgr(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red
    cv2.imwrite(str(tmp_path / "red.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert np.array_equal(decode_image(tmp_path / "red.png"), rgb)


def test_real_ham_image_decodes_at_its_size():
    image = decode_image(HAM / "images" / "ISIC_0024306.jpg")
    assert image.shape == (150, 200, 3) and image.dtype == np.uint8


def test_squash_and_pad():
    image = decode_image(HAM / "images" / "ISIC_0024306.jpg")
    assert resize_image(image, 96, "squash").shape == (96, 96, 3)
    padded = resize_image(image, 224, "pad")
    assert padded.shape == (224, 224, 3)
    assert padded[:28].max() == 0 and padded[-28:].max() == 0  # 200x150 -> 224x168, 28 black rows each side
    assert padded[28:196].mean() > 50
    with pytest.raises(ToolkitError, match="unknown resize mode 'crop'"):
        resize_image(image, 96, "crop")


def test_load_images_caches_a_split_as_uint8(ham_subset):
    paths = sorted(str(p) for p in (ham_subset / "images").iterdir())
    loaded = load_images(paths, 64, "pad")
    assert loaded.images.shape == (len(paths), 64, 64, 3) and loaded.images.dtype == np.uint8
    assert np.array_equal(loaded.images[3], resize_image(decode_image(paths[3]), 64, "pad"))


def test_load_images_skips_bad_files_only_when_asked(ham_subset):
    paths = sorted(str(p) for p in (ham_subset / "images").iterdir())
    paths.insert(2, str(ham_subset / "gone.jpg"))
    with pytest.raises(ToolkitError, match=r"gone\.jpg"):
        load_images(paths, 32)
    loaded = load_images(paths, 32, skip_bad=True)
    assert len(loaded.images) == len(paths) - 1 and 2 not in loaded.kept
    assert loaded.skipped == [(paths[2], f"image file not found: {paths[2]}")]
