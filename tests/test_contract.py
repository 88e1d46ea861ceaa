"""The Flutter app's point of view: only the bundle folder, no ``toolkit`` import.

These are the steps ``lesion_classifier.dart`` takes, one for one: read the manifest and labels,
resize real HAM10000 JPEGs as the manifest says, feed bytes of the input dtype, dequantise the
output with the manifest's scale and zero point. The answer must match ``python -m toolkit predict``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from conftest import HAM, toolkit_cli

IMAGES = sorted((HAM / "images").glob("*.jpg"))[::500][:16]  # 16 real images spread over the set


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


def test_the_bundle_is_self_describing(int8_bundle):
    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        data = (int8_bundle / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"], name
    assert set(manifest["files"]) == {"model.tflite", "labels.txt", "README.md", "lesion_classifier.dart"}
    labels = (int8_bundle / "labels.txt").read_text().splitlines()
    assert [c["label"] for c in manifest["classes"]] == labels
    assert manifest["input"]["dtype"] == "uint8" and manifest["output"]["dtype"] == "uint8"
    assert (manifest["input"]["scale"], manifest["input"]["zero_point"]) == (1.0, 0)  # raw bytes go in as they are


def test_the_app_gets_what_predict_prints(int8_bundle):
    probs, labels, step = app_classify(int8_bundle, IMAGES)
    printed = json.loads(
        toolkit_cli("predict", "--bundle", str(int8_bundle), "--top", "7", "--json", *map(str, IMAGES)).stdout
    )
    assert [Path(p["image"]).name for p in printed] == [p.name for p in IMAGES]
    for app, cli in zip(probs, printed, strict=True):
        assert labels[int(app.argmax())] == cli["top"][0]["label"]
        by_label = {entry["label"]: entry["probability"] for entry in cli["top"]}
        assert np.abs(app - np.array([by_label[label] for label in labels])).max() <= step + 1e-6
        assert abs(app.sum() - 1) < 0.05  # a softmax, dequantised
