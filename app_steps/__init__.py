"""The Flutter app's steps, one for one, with no ``toolkit`` import: what ``lesion_classifier.dart`` does.

Read the manifest and labels, resize real JPEGs as the manifest says, feed bytes of the input dtype,
dequantise the output with the manifest's scale and zero point. ``test_contract.py`` holds
``python -m toolkit predict`` to these steps, and the accuracy benchmark scores bundles with them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter


def _taps(source: int, target: int) -> list[list[tuple[int, float]]]:
    """Per output pixel, (source index, weight): area when the axis shrinks, linear when it grows (resize.js)."""
    scale, rows = source / target, []
    for j in range(target):
        if target < source:
            start, end = j * scale, (j + 1) * scale
            stop = min(math.ceil(end), source)
            rows.append([(i, (min(i + 1, end) - max(i, start)) / scale) for i in range(math.floor(start), stop)])
        else:
            centre = min(max((j + 0.5) * scale - 0.5, 0.0), source - 1.0)
            left = math.floor(centre)
            rows.append([(left, 1.0 - (centre - left)), (min(left + 1, source - 1), centre - left)])
    return rows


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Columns, then rows, each output value summed tap by tap in float64; rounded half up once."""
    columns = np.zeros((rgb.shape[0], width, 3))
    for j, row in enumerate(_taps(rgb.shape[1], width)):
        for index, weight in row:
            columns[:, j] += weight * rgb[:, index].astype(np.float64)
    rows = np.zeros((height, width, 3))
    for j, row in enumerate(_taps(rgb.shape[0], height)):
        for index, weight in row:
            rows[j] += weight * columns[index]
    return np.clip(np.floor(rows + 0.5), 0, 255).astype(np.uint8)


def app_resize(rgb: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Step 2: squash or pad to the square with the contract's resize (``resize.js``, line for line)."""
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = (
        (size, size) if mode == "squash" else (math.floor(width * scale + 0.5), math.floor(height * scale + 0.5))
    )
    canvas = np.zeros((size, size, 3), np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = _resize(rgb, new_w, new_h)
    return canvas


def app_classify(bundle: Path, image_paths: list[Path]) -> tuple[np.ndarray, list[str], float]:
    """Steps 1-4; returns probabilities, labels and the output's quantization step."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    labels = (bundle / "labels.txt").read_text().splitlines()
    spec_in, spec_out, recipe = manifest["input"], manifest["output"], manifest["preprocessing"]
    assert recipe["color_order"] == "RGB" and recipe["value_range"] == [0, 255]
    interpreter = Interpreter(model_path=str(bundle / "model.tflite"))
    interpreter.allocate_tensors()
    size = spec_in["shape"][1]
    probs = []
    for path in image_paths:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # IMREAD_COLOR: EXIF orientation applied
        pixels = app_resize(rgb, size, recipe["resize_mode"]).astype(np.float32)[None]
        if spec_in["dtype"] != "float32":
            info = np.iinfo(spec_in["dtype"])
            pixels = np.clip(np.round(pixels / spec_in["scale"]) + spec_in["zero_point"], info.min, info.max)
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels.astype(spec_in["dtype"]))
        interpreter.invoke()
        raw = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0].astype(np.float32)
        probs.append(raw if spec_out["dtype"] == "float32" else (raw - spec_out["zero_point"]) * spec_out["scale"])
    step = spec_out["scale"] if spec_out["dtype"] != "float32" else 1e-6
    return np.array(probs), labels, step
