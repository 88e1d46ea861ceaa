"""The Flutter app's steps, one for one, with no ``toolkit`` import: what ``lesion_classifier.dart`` does.

Read the manifest and labels, resize real JPEGs as the manifest says, feed bytes of the input dtype,
dequantise the output with the manifest's scale and zero point. ``test_contract.py`` holds
``python -m toolkit predict`` to these steps, and the accuracy benchmark scores bundles with them.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter


def app_resize(rgb: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Step 2: squash or pad to the square, INTER_AREA when shrinking and INTER_LINEAR when enlarging."""
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = (size, size) if mode == "squash" else (round(width * scale), round(height * scale))
    interpolation = cv2.INTER_AREA if new_w * new_h < width * height else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((size, size, 3), np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
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
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
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
