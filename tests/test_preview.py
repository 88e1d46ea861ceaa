"""The browser preview in real Chromium: the page decodes and resizes to the same bytes as Python, and LiteRT.js
answers as ``predict`` does; skipped, by name, where Chromium is not installed (CI installs it)."""

from __future__ import annotations

import base64
import shutil

import cv2
import numpy as np
import pytest
from conftest import HAM, REPO

from toolkit.data.images import decode_image
from toolkit.export.bundle import Bundle
from toolkit.preview.server import start

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="skipped: chromium not installed")
SHIPPED = REPO / "flutter_assets" / "ham10000_mobilenet_v2_float16"
HAM_IMAGES = sorted((HAM / "images").glob("*.jpg"))[::500][:20]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def open_page(browser, bundle):
    server = start(bundle)
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
    page.wait_for_function("window.preview && window.preview.ready", timeout=120_000)
    assert errors == []
    return server, page


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


def test_the_page_decodes_and_resizes_to_pythons_bytes(browser, tmp_path):
    """20 real HAM10000 JPEGs and 15 edge cases: the browser's decoder and resize.js, byte for byte."""
    server, page = open_page(browser, SHIPPED)
    try:
        differing = []
        for path in [*HAM_IMAGES, *edge_cases(tmp_path)]:
            resized = np.array(classify(page, path)["resized"], np.uint8).reshape(176, 176, 3)
            if not np.array_equal(resized, Bundle.open(SHIPPED).preprocess(path)):
                differing.append(path.name)
        assert differing == []
    finally:
        server.shutdown()


@pytest.mark.parametrize("name", ["shipped float16", "int8"])
def test_the_page_answers_as_predict_does(browser, name, request, tmp_path):
    """The 16 contract images: the same top-1 as ``predict``, probabilities within one output quantization step."""
    bundle = SHIPPED if name == "shipped float16" else request.getfixturevalue("int8_bundle")
    opened = Bundle.open(bundle)
    images = sorted((HAM / "images").glob("*.jpg"))[::500][:16]
    expected = opened.predict(np.stack([opened.preprocess(path) for path in images]))
    step = opened.manifest["output"]["scale"] if opened.manifest["output"]["dtype"] != "float32" else 1e-5
    server, page = open_page(browser, bundle)
    try:
        for path, probs in zip(images, expected, strict=True):
            answer = np.array(classify(page, path)["probabilities"])
            assert answer.argmax() == probs.argmax() and np.abs(answer - probs).max() <= step + 1e-6, path.name
        page.set_input_files("#files", [str(images[0]), str(images[1])])
        page.wait_for_selector(".result >> nth=1")
        text = page.inner_text("body")
        assert "Not a medical device" in text and "Malignancy score" in text and "ms in this browser" in text
        page.screenshot(path=str(tmp_path / "preview.png"), full_page=True)
        assert (tmp_path / "preview.png").stat().st_size > 20_000
    finally:
        server.shutdown()
