"""The contract's resize gives the same bytes in Python and JavaScript (Node here; the browser test runs it in
Chromium), on real HAM10000 images and on the edge cases an app meets."""

from __future__ import annotations

import json
import shutil
import subprocess

import cv2
import numpy as np
import pytest
from conftest import REPO, spread_images

from toolkit.data.images import decode_image
from toolkit.data.resize import contract_taps, padded_size, resize_contract, resize_exact, tap_arrays

RESIZE_JS = REPO / "toolkit" / "data" / "resize.js"
HARNESS = """
import { readFileSync, writeFileSync } from 'node:fs';
const { resizeContract } = await import(process.argv[2]);
const cases = JSON.parse(readFileSync(process.argv[3], 'utf8'));
for (const c of cases) {
  const rgb = new Uint8Array(readFileSync(c.input));
  writeFileSync(c.output, resizeContract(rgb, c.width, c.height, c.channels, c.size, c.mode));
}
"""


def edge_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    noise = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noqa: E731
    return {
        "1x1": noise(1, 1),
        "1x9": noise(1, 9),
        "odd 7x5": noise(7, 5),
        "upscale 10x10": noise(10, 10),
        "phone-like 900x1200": noise(900, 1200),
        "tall 301x97": noise(301, 97),
        "flat colour": np.full((150, 200, 3), 200, np.uint8),
    }


def cases() -> dict[str, np.ndarray]:
    images = spread_images(20)
    return {**{path.stem[-4:]: decode_image(path) for path in images}, **edge_cases()}


def run_node(tmp_path, jobs: list[dict]) -> None:
    (tmp_path / "harness.mjs").write_text(HARNESS)
    (tmp_path / "cases.json").write_text(json.dumps(jobs))
    subprocess.run(
        ["node", str(tmp_path / "harness.mjs"), RESIZE_JS.as_uri(), str(tmp_path / "cases.json")],
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.mark.skipif(shutil.which("node") is None, reason="skipped: node not installed (make installs it)")
@pytest.mark.parametrize("size", [176, 64])
def test_javascript_resizes_to_the_same_bytes_as_python(tmp_path, size):
    jobs, expected = [], {}
    for name, image in cases().items():
        for mode in ("squash", "pad"):
            stem = f"{name}-{mode}".replace(" ", "_")
            (tmp_path / f"{stem}.rgb").write_bytes(image.tobytes())
            height, width, channels = image.shape
            jobs.append(
                {"input": str(tmp_path / f"{stem}.rgb"), "output": str(tmp_path / f"{stem}.out"), "mode": mode}
                | {"width": width, "height": height, "channels": channels, "size": size}
            )
            expected[stem] = resize_contract(image, size, mode)
    run_node(tmp_path, jobs)
    differing = [
        stem for stem, pixels in expected.items() if (tmp_path / f"{stem}.out").read_bytes() != pixels.tobytes()
    ]
    assert len(expected) == 54 and differing == []


def test_shrinking_averages_areas_and_growing_interpolates():
    """The definition itself: OpenCV's INTER_AREA for a whole-number shrink, identity at the same size, and
    the weights of every output pixel summing to one."""
    image = np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    assert np.array_equal(resize_exact(image, 40, 30), cv2.resize(image, (40, 30), interpolation=cv2.INTER_AREA))
    assert np.array_equal(resize_exact(image, 80, 60), image)
    for source, target in ((200, 176), (150, 176), (1200, 176), (1, 176), (7, 3)):
        weights = tap_arrays(contract_taps(source, target))[1]
        assert np.allclose(weights.sum(1), 1.0) and (weights >= 0).all()


def test_linear_growth_matches_opencv_to_within_its_fixed_point():
    """OpenCV's INTER_LINEAR rounds its weights to 1/2048: one grey level apart at most, the same geometry."""
    image = np.random.default_rng(2).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    ours = resize_exact(image, 240, 180).astype(int)
    opencv = cv2.resize(image, (240, 180), interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(ours - opencv).max() <= 1


def test_pad_rounds_half_up_and_centres():
    assert padded_size(200, 150, 176) == (176, 132) and padded_size(3, 1, 3) == (3, 1)
    assert padded_size(4, 1, 2) == (2, 1)  # 0.5 rounds up, as JavaScript's Math.round and Dart's round do
    padded = resize_contract(np.full((150, 200, 3), 255, np.uint8), 176, "pad")
    assert padded[:22].max() == 0 and padded[22:154].min() == 255 and padded[154:].max() == 0
