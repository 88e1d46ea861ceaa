"""The Flutter app's point of view: only the bundle folder, no ``toolkit`` import.

The app's steps (``app_steps.py``, one for one what ``lesion_classifier.dart`` does) on real
HAM10000 JPEGs must give the answer ``python -m toolkit predict`` prints: for the test run's
export and for the bundles shipped in ``flutter_assets/``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from app_steps import app_classify
from conftest import HAM, REPO, toolkit_cli

IMAGES = sorted((HAM / "images").glob("*.jpg"))[::500][:16]  # 16 real images spread over the set
SHIPPED = REPO / "flutter_assets" / "ham10000_mobilenet_v2_float16"


@pytest.fixture(params=["test int8", "shipped float16"])
def bundle(request) -> Path:
    return SHIPPED if request.param == "shipped float16" else request.getfixturevalue("int8_bundle")


def test_the_bundle_is_self_describing(int8_bundle):
    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        data = (int8_bundle / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"], name
    assert set(manifest["files"]) == {"model.tflite", "labels.txt", "README.md", "lesion_classifier.dart"}
    assert {path.name for path in int8_bundle.iterdir() if path.is_dir()} == {"card", "drift"}
    labels = (int8_bundle / "labels.txt").read_text().splitlines()
    assert [c["label"] for c in manifest["classes"]] == labels
    assert manifest["input"]["dtype"] == "uint8" and manifest["output"]["dtype"] == "uint8"
    assert (manifest["input"]["scale"], manifest["input"]["zero_point"]) == (1.0, 0)  # raw bytes go in as they are


def test_the_app_gets_what_predict_prints(bundle):
    probs, labels, step = app_classify(bundle, IMAGES)
    printed = json.loads(
        toolkit_cli("predict", "--bundle", str(bundle), "--top", "7", "--json", *map(str, IMAGES)).stdout
    )
    assert [Path(p["image"]).name for p in printed] == [p.name for p in IMAGES]
    for app, cli in zip(probs, printed, strict=True):
        assert labels[int(app.argmax())] == cli["top"][0]["label"]
        by_label = {entry["label"]: entry["probability"] for entry in cli["top"]}
        assert np.abs(app - np.array([by_label[label] for label in labels])).max() <= step + 1e-6
        assert abs(app.sum() - 1) < 0.05  # a softmax, dequantised
        assert "Not a medical device" in cli["note"] and "referral" in cli
