"""Golden files for the Dart side of the contract: small synthetic images, their resized bytes' SHA-256 and the
model's answers, which ``lesion_classifier_test.dart`` checks with ``flutter test`` on the app developer's machine.

No Dart SDK runs here, so these files are how the Dart transliteration of the contract gets checked at all. The
images are synthetic PNGs (lossless: every decoder reads the same pixels; no dataset image leaves ``../shared``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from toolkit.base.runtime import dequantize_output, interpreter, quantize_input
from toolkit.data.images import decode_image, resize_image

GOLDEN = "golden"
SHAPES = {  # file: (height, width, channels): 4:3 shrinking across and growing down, a downscale, odd sizes, gray
    "photo_220x165.png": (165, 220, 3),
    "large_640x480.png": (480, 640, 3),
    "odd_7x5.png": (5, 7, 3),
    "gray_40x30.png": (30, 40, 1),
}


def golden_image(height: int, width: int, channels: int, seed: int) -> np.ndarray:
    """A smooth gradient with texture: enough structure for the resize's every tap to matter."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width]
    base = 255 * (rows / max(height - 1, 1) + columns / max(width - 1, 1)) / 2
    pixels = base[..., None] + rng.normal(0, 25, (height, width, channels)) + 40 * np.arange(channels)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_goldens(folder: Path, model: bytes, manifest: dict) -> None:
    """``golden/``: the images and ``golden.json`` with what the toolkit computes for each of them."""
    import cv2

    (folder / GOLDEN).mkdir(exist_ok=True)
    size, mode = manifest["input"]["shape"][1], manifest["preprocessing"]["resize_mode"]
    spec_in, spec_out = manifest["input"], manifest["output"]
    runner = interpreter(model)  # XNNPACK, as predict and tflite_flutter run it
    cases = []
    for seed, (name, (height, width, channels)) in enumerate(SHAPES.items()):
        pixels = golden_image(height, width, channels, seed)
        cv2.imwrite(str(folder / GOLDEN / name), pixels if channels == 1 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
        resized = resize_image(decode_image(folder / GOLDEN / name), size, mode)
        inputs = quantize_input(resized[None], spec_in["dtype"], spec_in["scale"], spec_in["zero_point"])
        runner.set_tensor(runner.get_input_details()[0]["index"], inputs)
        runner.invoke()
        raw = runner.get_tensor(runner.get_output_details()[0]["index"])[0]
        probs = dequantize_output(raw, spec_out["dtype"], spec_out["scale"], spec_out["zero_point"])
        cases.append(
            {
                "file": name,
                "resized_sha256": hashlib.sha256(resized.tobytes()).hexdigest(),
                "top1": int(np.argmax(probs)),
                "probabilities": [round(float(p), 6) for p in probs],
            }
        )
    # int8 kernels may round one step apart on another CPU: two steps; float16 weights: 1e-3
    tolerance = 2 * spec_out["scale"] if spec_out["dtype"] != "float32" else 1e-3
    golden = {
        "manifest": {"input": {"shape": spec_in["shape"]}, "preprocessing": {"resize_mode": mode}},
        "tolerance": tolerance,
        "images": cases,
    }
    (folder / GOLDEN / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
