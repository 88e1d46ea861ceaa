"""The Flutter app's point of view: only the bundle folder, no ``toolkit`` import.

The app's steps (``app_steps.py``, one for one what ``lesion_classifier.dart`` does) on real
HAM10000 JPEGs (200x150, so squash and pad differ) must give the answer ``python -m toolkit
predict`` prints, for the test runs' exports and for the bundles shipped in ``flutter_assets/``;
and, since both read the same manifest, they must also give what the run's own Keras model gives
on images resized as the run was trained.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import HAM, SHIPPED_PARAMS, bundle_for, spread_images, toolkit_cli

from app_steps import app_classify, app_resize

IMAGES = spread_images(16)


BUNDLES = {  # name: (fixture, resize mode, input dtype)
    "passing float32": ("passing_bundle", "squash", "float32"),
    "test int8": ("int8_bundle", "squash", "uint8"),
    "pad float32": ("pad_float32_bundle", "pad", "float32"),
    "pad int8 io": ("pad_int8_bundle", "pad", "int8"),
}


@pytest.fixture(scope="module")
def pad_run(tmp_path_factory, keras_home) -> Path:
    """A tiny run trained with ``--resize-mode pad``: the app must letterbox, not stretch. A head on ImageNet
    features, so its answers depend on the image (from scratch, one epoch gave every image the same answer)."""
    out = tmp_path_factory.mktemp("runs") / "pad"
    toolkit_cli(
        *("train", "--data", str(HAM), "--weights", "imagenet", "--input-size", "48", "--resize-mode", "pad"),
        *("--limit", "40", "--epochs-head", "2", "--epochs-finetune", "0", "--out", str(out)),
        env={"KERAS_HOME": str(keras_home)},
    )
    return out


def _export(run: Path, out: Path, *args: str) -> Path:
    toolkit_cli("export", "--run", str(run), "--out", str(out), "--skip-drift", "--calibration-images", "40", *args)
    return out / run.name


@pytest.fixture(scope="module")
def pad_float32_bundle(pad_run, tmp_path_factory) -> Path:
    return _export(pad_run, tmp_path_factory.mktemp("pad_float32"))


@pytest.fixture(scope="module")
def pad_int8_bundle(pad_run, tmp_path_factory) -> Path:
    return _export(pad_run, tmp_path_factory.mktemp("pad_int8"), "--quantize", "int8", "--io", "int8")


@pytest.fixture(params=[*BUNDLES, *SHIPPED_PARAMS])
def bundle(request) -> Path:
    return bundle_for(request, {name: fixture for name, (fixture, _, _) in BUNDLES.items()})


@pytest.mark.parametrize("name", BUNDLES)
def test_the_bundle_is_self_describing(name, request):
    fixture, resize_mode, dtype = BUNDLES[name]
    bundle = request.getfixturevalue(fixture)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for file, entry in manifest["files"].items():
        data = (bundle / file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"], file
    assert set(manifest["files"]) == {
        "model.tflite", "labels.txt", "README.md", "lesion_classifier.dart", "lesion_classifier_test.dart"
    }  # fmt: skip
    labels = (bundle / "labels.txt").read_text().splitlines()
    assert [c["label"] for c in manifest["classes"]] == labels
    assert manifest["preprocessing"]["resize_mode"] == resize_mode
    assert manifest["input"]["dtype"] == dtype and manifest["output"]["dtype"] == dtype
    if dtype != "float32":  # bytes go in as they are (uint8) or shifted by 128 (int8)
        zero_point = {"uint8": 0, "int8": -128}[dtype]
        assert (manifest["input"]["scale"], manifest["input"]["zero_point"]) == (1.0, zero_point)


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


@pytest.mark.parametrize("name", ["passing float32", "pad float32"])
def test_the_app_follows_the_run_not_just_the_manifest(name, request):
    """The run's config, not the manifest, says how to resize; a float32 bundle leaves only rounding to differ."""
    import keras

    bundle = request.getfixturevalue(BUNDLES[name][0])
    run = Path(request.getfixturevalue({"passing float32": "small_run", "pad float32": "pad_run"}[name]))
    config = json.loads((run / "config.json").read_text())
    app_probs, _, _ = app_classify(bundle, IMAGES)
    size, mode = config["input_size"], config["resize_mode"]
    rgb = [cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for path in IMAGES]
    model = keras.saving.load_model(run / "model.keras")
    as_trained = model.predict(np.stack([app_resize(image, size, mode) for image in rgb]).astype(np.float32), verbose=0)
    assert np.abs(app_probs - as_trained).max() < 1e-4
    other = {"squash": "pad", "pad": "squash"}[mode]  # what a manifest naming the wrong mode would feed
    misfed = model.predict(np.stack([app_resize(image, size, other) for image in rgb]).astype(np.float32), verbose=0)
    assert np.abs(misfed - as_trained).max() > 1e-2  # so the check above would see it


def test_the_golden_files_for_flutter_test_are_what_the_toolkit_computes(bundle):
    """``lesion_classifier_test.dart`` holds the Dart side to these: they must be the toolkit's own answers."""
    import hashlib

    from toolkit.export.bundle import Bundle

    opened = Bundle.open(bundle)
    golden = json.loads((bundle / "golden" / "golden.json").read_text())
    assert golden["manifest"]["input"]["shape"] == opened.manifest["input"]["shape"] and len(golden["images"]) == 4
    for case in golden["images"]:
        resized = opened.preprocess(bundle / "golden" / case["file"])
        assert hashlib.sha256(resized.tobytes()).hexdigest() == case["resized_sha256"]
        probs = opened.predict(resized[None])[0]
        assert int(probs.argmax()) == case["top1"]
        assert np.abs(probs - case["probabilities"]).max() <= golden["tolerance"]
