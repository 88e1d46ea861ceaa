"""Reading a bundle as an app does: the manifest's checks, its input and output arithmetic, its flags.

These run on a copy of the committed float16 bundle (no conversion, a second each), so the mutation
pass (``make mutation``) can afford them; the contract and export tests cover bundles the toolkit builds.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import HAM, REPO, SHIPPED

from app_steps import app_resize
from toolkit.base.classes import CLASSES
from toolkit.base.errors import ToolkitError
from toolkit.base.runtime import dequantize_output, quantize_input
from toolkit.data.images import decode_image, resize_image
from toolkit.data.resize import padded_size
from toolkit.export.bundle import NOT_A_DEVICE, Bundle
from toolkit.export.verify import REEXPORT

IMAGES = [HAM / "images" / f"ISIC_00{n}.jpg" for n in (24306, 24307, 24308)]


@pytest.fixture
def bundle(tmp_path) -> Path:
    return Path(shutil.copytree(SHIPPED, tmp_path / "bundle"))


def edit_manifest(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def reseal(bundle: Path) -> Path:
    """The manifest's checksums brought up to date, as someone editing a bundle on purpose would."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        entry["sha256"] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the weights
    path.write_bytes(bytes(data))


def swap_labels(bundle: Path) -> Path:
    """akiec and nv swapped in labels.txt and in the manifest's classes alike: only the packed labels disagree."""
    order = ["nv", "bcc", "bkl", "df", "mel", "akiec", "vasc"]
    (bundle / "labels.txt").write_text("\n".join(order) + "\n")
    edit_manifest(
        bundle, lambda m: [entry.update(label=label) for entry, label in zip(m["classes"], order, strict=True)]
    )
    return bundle


def test_uint8_input_is_the_raw_bytes_and_int8_is_shifted_by_128():
    images = np.array([[0, 1, 127, 128, 254, 255]], np.uint8)
    assert quantize_input(images, "uint8", 1.0, 0).tolist() == images.tolist()
    assert quantize_input(images, "uint8", 1.0, 0).dtype == np.uint8
    shifted = quantize_input(images, "int8", 1.0, -128)
    assert shifted.dtype == np.int8 and shifted.tolist() == [[-128, -127, -1, 0, 126, 127]]
    floats = quantize_input(images, "float32", 1.0, 0)
    assert floats.dtype == np.float32 and floats.tolist() == images.astype(float).tolist()


def test_input_quantization_rounds_half_to_even_and_clips_to_the_dtype():
    images = np.array([[1, 3, 5, 200]], np.uint8)
    assert quantize_input(images, "uint8", 2.0, 3).tolist() == [[3, 5, 5, 103]]  # 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
    assert quantize_input(images, "uint8", 0.5, 0).tolist() == [[2, 6, 10, 255]]  # 400 clipped
    assert quantize_input(images, "int8", 1.0, -100).tolist() == [[-99, -97, -95, 100]]
    assert quantize_input(np.array([[0, 255]], np.uint8), "int8", 0.5, 0).tolist() == [[0, 127]]


def test_output_dequantization_uses_scale_and_zero_point():
    raw = np.array([0, 128, 255], np.uint8)
    assert dequantize_output(raw, "uint8", 1 / 256, 0).tolist() == [0.0, 0.5, 255 / 256]
    assert dequantize_output(raw.astype(np.int16) - 128, "int8", 1 / 256, -128).tolist() == [0.0, 0.5, 255 / 256]
    probs = np.array([0.25, 0.75], np.float32)
    assert dequantize_output(probs, "float32", 1 / 256, 5).tolist() == [0.25, 0.75]


def test_the_shipped_bundle_reads_as_its_manifest_says(bundle):
    opened = Bundle.open(bundle)
    trained = json.loads((REPO / opened.manifest["source"]["run"] / "config.json").read_text())  # its run
    assert opened.labels == list(CLASSES) and opened.input_size == trained["input_size"] > 0
    assert opened.resize_mode == trained["resize_mode"] == "squash"
    assert not opened.is_demo and opened.demo_warning() is None
    default, points = opened.operating_points()
    assert default == "malignant_sens95" and [p.name for p in points][:2] == ["malignant_sens90", default]
    written = json.loads((bundle / "manifest.json").read_text())["referral"]["points"][1]["threshold"]
    assert points[1].threshold == written and 0 < written < 1 and points[1].classes == ("mel", "bcc", "akiec")
    assert opened.manifest["disclaimer"] == NOT_A_DEVICE


def test_predict_feeds_the_manifests_preprocessing_to_the_model(bundle):
    from ai_edge_litert.interpreter import Interpreter

    opened = Bundle.open(bundle)
    images = opened.load([str(path) for path in IMAGES])
    assert np.array_equal(images[1], opened.preprocess(IMAGES[1]))
    rgb = cv2.cvtColor(cv2.imread(str(IMAGES[1])), cv2.COLOR_BGR2RGB)
    assert np.array_equal(images[1], app_resize(rgb, opened.input_size, "squash"))  # the contract, as an app does it
    probs = opened.predict(images)
    direct = Interpreter(str(bundle / "model.tflite"))
    direct.allocate_tensors()
    for image, answer in zip(images, probs, strict=True):
        direct.set_tensor(direct.get_input_details()[0]["index"], image[None].astype(np.float32))
        direct.invoke()
        assert np.allclose(answer, direct.get_tensor(direct.get_output_details()[0]["index"])[0], atol=1e-5)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-3) and not np.allclose(probs[0], probs[2], atol=0.01)


@pytest.mark.parametrize(
    "flag", [lambda m: m["training_data"].update(demo=True), lambda m: m.update(source={"data": "demo"})]
)
def test_a_demo_bundle_says_so(bundle, flag):
    edit_manifest(bundle, flag)
    opened = Bundle.open(bundle)
    assert opened.is_demo
    assert opened.demo_warning() == (
        "warning: bundle was trained on the synthetic DEMO set, not dermoscopy: its answers on real images mean nothing"
    )


def test_a_bundle_without_referral_points_has_none(bundle):
    edit_manifest(bundle, lambda m: m.pop("referral"))
    assert Bundle.open(bundle).operating_points() == ("", [])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: shutil.rmtree(b), "bundle folder not found: {b}"),
        (
            lambda b: (b / "model.tflite").unlink(),
            "no model.tflite in bundle {b}: export one with `python -m toolkit export`",
        ),
        (
            lambda b: (b / "labels.txt").unlink(),
            "no labels.txt in bundle {b}: export one with `python -m toolkit export`",
        ),
        (
            lambda b: (b / "manifest.json").unlink(),
            "no manifest.json in bundle {b}: export one with `python -m toolkit export`",
        ),
        (
            lambda b: (b / "manifest.json").write_text("{"),
            "cannot parse {b}/manifest.json: Expecting property name enclosed in double quotes: line 1 column 2"
            " (char 1): " + REEXPORT,
        ),
        (
            lambda b: edit_manifest(b, lambda m: m.update(schema_version=2)),
            "{b}/manifest.json has schema version 2; this toolkit reads version 1",
        ),
        (
            lambda b: edit_manifest(b, lambda m: m.pop("schema_version")),
            "{b}/manifest.json has schema version None; this toolkit reads version 1",
        ),
        (
            lambda b: edit_manifest(b, lambda m: m.pop("preprocessing")),
            "{b}/manifest.json has no field 'preprocessing.resize_mode': " + REEXPORT,
        ),
        (
            lambda b: edit_manifest(b, lambda m: m["input"].update(dtype="float64")),
            "{b}/manifest.json field 'input.dtype' is 'float64', expected one of uint8, int8, float32: " + REEXPORT,
        ),
        (
            lambda b: edit_manifest(b, lambda m: m["output"].update(scale="0.5")),
            "{b}/manifest.json field 'output.scale' is '0.5', expected a positive number: " + REEXPORT,
        ),
        (
            lambda b: flip_a_byte(b / "model.tflite"),
            "{b}/model.tflite has changed since export (its sha256 differs from manifest.json files.model.tflite): "
            + REEXPORT,
        ),
        (
            lambda b: (b / "labels.txt").write_text("nv\nbcc\nbkl\ndf\nmel\nakiec\nvasc\n"),
            "{b}/labels.txt has changed since export (its sha256 differs from manifest.json files.labels.txt): "
            + REEXPORT,
        ),
        (
            lambda b: reseal((b / "labels.txt").write_text("nv\nbcc\nbkl\ndf\nmel\nakiec\nvasc\n") and b),
            "{b}/labels.txt does not match the field 'classes' of {b}/manifest.json: " + REEXPORT,
        ),
        (
            lambda b: reseal(swap_labels(b)),
            "{b}/labels.txt does not match the labels packed in {b}/model.tflite: " + REEXPORT,
        ),
    ],
    ids=[
        "no folder",
        "no model",
        "no labels",
        "no manifest",
        "bad json",
        "schema 2",
        "no schema",
        "no preprocessing",
        "bad dtype",
        "scale not a number",
        "weights edited",
        "labels reordered",
        "labels reordered and resealed",
        "labels and classes reordered and resealed",
    ],
)
def test_open_refuses_a_broken_bundle_by_file(bundle, damage, message):
    damage(bundle)
    with pytest.raises(ToolkitError) as error:
        Bundle.open(bundle)
    assert str(error.value) == message.format(b=bundle)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda m: m["input"].update(shape=[1, 160, 160, 3]),
            "input.shape [1, 160, 160, 3], but {model} has [1, {size}, ",
        ),
        (lambda m: m["input"].update(dtype="uint8"), "input.dtype 'uint8', but {model} has 'float32'"),
        (lambda m: m["output"].update(scale=0.5), "output.scale 0.5, but {model} has 1.0"),
        (lambda m: m["output"].update(zero_point=3), "output.zero_point 3, but {model} has 0"),
    ],
    ids=["input shape", "input dtype", "output scale", "output zero point"],
)
def test_the_model_must_have_the_tensors_the_manifest_says(bundle, change, message):
    """A manifest that disagrees with its model is refused before any answer (scale 0.5 once printed mel 75.0)."""
    size = Bundle.open(bundle).input_size
    edit_manifest(bundle, change)
    with pytest.raises(ToolkitError) as error:
        Bundle.open(bundle).interpreter()
    said = message.format(model=bundle / "model.tflite", size=size)
    assert str(error.value).startswith(f"{bundle}/manifest.json says {said}")


def test_input_and_output_follow_the_manifests_dtype_scale_and_zero_point(bundle):
    """The app's arithmetic comes from the manifest alone: a uint8 manifest quantizes, even on a float model."""
    edit_manifest(bundle, lambda m: (m["input"].update(dtype="uint8", scale=0.5, zero_point=3),
                                     m["output"].update(dtype="uint8", scale=1 / 256, zero_point=2)))  # fmt: skip
    opened = Bundle.open(bundle)
    images = np.array([[[[1, 3, 100]]]], np.uint8)
    assert opened.to_input(images).tolist() == [[[[5, 9, 203]]]] and opened.to_input(images).dtype == np.uint8
    assert opened.from_output(np.array([2, 130, 255], np.uint8)).tolist() == [0.0, 0.5, 253 / 256]


def test_loading_follows_the_manifests_resize_mode(bundle):
    edit_manifest(bundle, lambda m: m["preprocessing"].update(resize_mode="pad"))
    opened = Bundle.open(bundle)
    padded = resize_image(decode_image(IMAGES[0]), opened.input_size, "pad")
    assert np.array_equal(opened.load([str(IMAGES[0])])[0], padded) and np.array_equal(
        opened.preprocess(IMAGES[0]), padded
    )
    above = (opened.input_size - padded_size(200, 150, opened.input_size)[1]) // 2  # 176 px: 132 rows, 22 above
    assert padded[:above].max() == 0 and padded[above].max() > 0


def test_threads_and_xnnpack_reach_the_interpreter_and_probabilities_are_float32(bundle, monkeypatch):
    module = importlib.import_module("toolkit.export.bundle")
    asked = []
    real = module.interpreter
    monkeypatch.setattr(module, "interpreter", lambda *a, **k: asked.append(k) or real(*a, **k))
    opened = Bundle.open(bundle)
    opened.interpreter(threads=1, xnnpack=False)
    probs = opened.predict(opened.load([str(IMAGES[0])]), threads=2)
    assert asked == [{"threads": 1, "xnnpack": False}, {"threads": 2, "xnnpack": True}] and probs.dtype == np.float32
