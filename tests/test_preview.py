"""The browser preview in real Chromium: the page decodes and resizes to the same bytes as Python, and LiteRT.js
answers as ``predict`` does; skipped, by name, where Chromium is not installed (CI installs it)."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest
from conftest import SHIPPED, spread_images

from toolkit.base.errors import ToolkitError
from toolkit.data.images import decode_image
from toolkit.export.bundle import Bundle
from toolkit.preview.browser import browser_classify, chromium, classify_files, open_page

pytestmark = pytest.mark.skipif(chromium() is None, reason="skipped: chromium not installed")
HAM_IMAGES = spread_images(20)


def classify(page, path) -> dict:
    return page.evaluate(
        "async (b64) => window.preview.classify(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)))",
        base64.b64encode(path.read_bytes()).decode(),
    )


def edge_cases(folder) -> list:
    """Files an app meets: odd sizes, one pixel, upscaling, every EXIF orientation, opaque RGBA, gray, 16-bit."""
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for name, pixels in {
        "odd.png": rng.integers(0, 256, (7, 5, 3), dtype=np.uint8),
        "pixel.png": rng.integers(0, 256, (1, 1, 3), dtype=np.uint8),
        "small.png": rng.integers(0, 256, (30, 40, 3), dtype=np.uint8),
        "big.png": rng.integers(0, 256, (600, 800, 3), dtype=np.uint8),
        "rgba.png": np.dstack([rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), np.full((20, 30), 255, np.uint8)]),
        "gray.png": rng.integers(0, 256, (20, 30), dtype=np.uint8),
        "deep.png": rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16),
    }.items():
        cv2.imwrite(str(folder / name), pixels)
        files.append(folder / name)
    upright = decode_image(HAM_IMAGES[0])
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(upright).save(folder / f"exif{orientation}.jpg", exif=exif, quality=95)
        files.append(folder / f"exif{orientation}.jpg")
    return files


def test_the_page_decodes_and_resizes_to_pythons_bytes(tmp_path):
    """20 real HAM10000 JPEGs and 15 edge cases: the browser's decoder and resize.js, byte for byte."""
    shipped = Bundle.open(SHIPPED)
    with open_page(SHIPPED) as page:
        differing = []
        for path in [*HAM_IMAGES, *edge_cases(tmp_path)]:
            resized = np.array(classify(page, path)["resized"], np.uint8).reshape(shipped.input_size, -1, 3)
            if not np.array_equal(resized, shipped.preprocess(path)):
                differing.append(path.name)
        assert differing == []


@pytest.mark.parametrize("name", ["shipped float16", "int8"])
def test_the_page_answers_as_predict_does(name, request, tmp_path):
    """The 16 contract images: the same top-1 as ``predict``, probabilities within one output quantization step."""
    bundle = SHIPPED if name == "shipped float16" else request.getfixturevalue("int8_bundle")
    opened = Bundle.open(bundle)
    images = spread_images(16)
    expected = opened.predict(np.stack([opened.preprocess(path) for path in images]))
    step = opened.manifest["output"]["scale"] if opened.manifest["output"]["dtype"] != "float32" else 1e-5
    with open_page(bundle) as page:
        for path, probs, answer in zip(images, expected, np.array(classify_files(page, images)), strict=True):
            assert answer.argmax() == probs.argmax() and np.abs(answer - probs).max() <= step + 1e-6, path.name
        page.set_input_files("#files", [str(images[0]), str(images[1])])
        page.wait_for_selector(".result >> nth=1")
        text = page.inner_text("body")
        assert "Not a medical device" in text and "Malignancy score" in text and "ms in this browser" in text
        page.screenshot(path=str(tmp_path / "preview.png"), full_page=True)
        assert (tmp_path / "preview.png").stat().st_size > 20_000


def test_the_browser_path_names_an_image_the_page_refuses(tmp_path):
    """drift's browser path stops at a file the page will not take, naming it and the page's reason."""
    see_through = np.dstack([np.full((20, 30, 3), 128, np.uint8), np.full((20, 30), 100, np.uint8)])
    cv2.imwrite(str(tmp_path / "clear.png"), see_through)
    with pytest.raises(ToolkitError, match=r"the browser refused .*clear\.png: an image with transparency"):
        browser_classify(SHIPPED, [str(HAM_IMAGES[0]), str(tmp_path / "clear.png")])
