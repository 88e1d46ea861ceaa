"""Export: int8 is integer-only, metadata reads back (also in MediaPipe), every preset and back end
runs and agrees with the float model, and bad input writes nothing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import HAM, SHIPPED_PARAMS, SMALL_RUN_SIZE, bundle_for, one_line, spread_images

from toolkit.base.classes import CLASSES
from toolkit.base.errors import ToolkitError
from toolkit.export.bundle import Bundle
from toolkit.export.convert import check_integer_only, convert, float_ops
from toolkit.export.metadata import read_metadata
from toolkit.export.quantization import Quantization
from toolkit.train.runs import open_run

REAL_IMAGES = spread_images(12, step=700)


@pytest.fixture(scope="module")
def test_images(small_run) -> tuple[np.ndarray, np.ndarray]:
    """The run's test split as the bundle feeds it, and the float Keras model's probabilities on it."""
    run = open_run(small_run)
    rows = run.rows("test")
    from toolkit.data.images import load_images

    images = load_images(rows["path"].tolist(), run.input_size, run.resize_mode).images
    return images, np.asarray(run.load_model().predict(images.astype(np.float32), verbose=0))


def test_int8_export_is_integer_only_with_raw_byte_input(int8_bundle, small_run):
    model = (int8_bundle / "model.tflite").read_bytes()
    assert float_ops(model) == []
    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    assert manifest["quantization"] == "int8" and manifest["quantizer"] == "tflite"
    calibration = manifest["source"]["calibration"]
    assert calibration["images"] == 100 and all(n > 0 for n in calibration["per_class"].values())
    assert manifest["output"]["scale"] == pytest.approx(1 / 256)
    float_metrics = json.loads((small_run / "metrics.json").read_text())["test"]
    assert manifest["metrics"]["float"]["balanced_accuracy"] == round(float_metrics["balanced_accuracy"], 4)
    exported = float_metrics["balanced_accuracy"] - manifest["drift"]["balanced_accuracy_drop_points"] / 100
    assert manifest["metrics"]["exported"]["balanced_accuracy"] == pytest.approx(exported, abs=1e-4)


def test_mirror_views_convert_integer_only_and_answer_a_mirrored_image_byte_for_byte(small_run, test_images):
    from toolkit.base.runtime import interpreter, quantize_input
    from toolkit.model.views import with_views

    run = open_run(small_run)
    images = test_images[0][:4]
    converted = convert(with_views(run.load_model(), 4), run.input_size, Quantization("int8"), test_images[0][:50])
    assert float_ops(converted) == []
    runner = interpreter(converted)
    given, taken = runner.get_input_details()[0], runner.get_output_details()[0]
    assert list(given["shape"]) == [1, SMALL_RUN_SIZE, SMALL_RUN_SIZE, 3] and list(taken["shape"]) == [1, len(CLASSES)]

    def answer(image: np.ndarray) -> np.ndarray:
        runner.set_tensor(given["index"], quantize_input(image[None], "uint8", *given["quantization"]))
        runner.invoke()
        return runner.get_tensor(taken["index"])[0].copy()

    for image in images:  # the mirrors are the same four views in another order: integer sums do not care
        assert np.array_equal(answer(image), answer(np.ascontiguousarray(image[::-1, ::-1])))


def test_metadata_reads_back_with_labels_and_normalisation(int8_bundle):
    found, files = read_metadata((int8_bundle / "model.tflite").read_bytes())
    assert files["labels.txt"].decode().splitlines() == list(CLASSES)
    assert found["name"] == "ham_small" and "HAM10000" in found["license"] and found["version"] == "1.0.0"
    image = found["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert image["name"] == "image" and image["content"]["content_properties"]["color_space"] == "RGB"
    assert image["process_units"][0]["options"] == {"mean": [0.0], "std": [1.0]}
    assert image["stats"] == {"max": [255.0], "min": [0.0]}


@pytest.fixture(params=["passing float32", "test int8", *SHIPPED_PARAMS])
def any_bundle(request) -> Path:
    """The test run's gated float32 and int8 exports, and each bundle shipped in ``flutter_assets/``."""
    return bundle_for(request, {"passing float32": "passing_bundle", "test int8": "int8_bundle"})


def test_mediapipe_image_classifier_reads_the_bundle(any_bundle):
    """MediaPipe reads labels and tensor types from the metadata alone, as an app's classifier task does."""
    import mediapipe as mp  # installed by make: a broken import must fail, not skip
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(any_bundle / "model.tflite")), max_results=7
    )
    bundle = Bundle.open(any_bundle)
    images = np.stack([bundle.preprocess(p) for p in REAL_IMAGES])  # resized as the manifest says
    ours = bundle.predict(images)
    output = bundle.manifest["output"]
    step = output["scale"] if output["dtype"] != "float32" else 1e-5  # a float output: only rounding may differ
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image, probs in zip(images, ours, strict=True):
            frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
            categories = classifier.classify(frame).classifications[0].categories
            scores = {c.category_name: c.score for c in categories}
            assert sorted(scores) == sorted(CLASSES)
            assert all(CLASSES[c.index] == c.category_name for c in categories)
            assert np.abs(np.array([scores[name] for name in CLASSES]) - probs).max() <= step + 1e-6


@pytest.mark.parametrize(
    ("quantization", "io_dtype"),
    [
        (Quantization("float32"), "float32"),
        (Quantization("float16"), "float32"),
        (Quantization("dynamic"), "float32"),
        (Quantization("int8", io="int8"), "int8"),
        (Quantization("int8", io="float32"), "float32"),
        (Quantization("int8", backend="litert"), "int8"),
    ],
    ids=["float32", "float16", "dynamic", "int8-io-int8", "int8-io-float32", "int8-litert"],
)
def test_every_preset_and_back_end_agrees_with_the_float_model(
    quantization, io_dtype, small_run, tmp_path, test_images, cli
):
    args = ["export", "--run", str(small_run), "--out", str(tmp_path), "--calibration-images", "60", "--skip-drift"]
    if quantization.mode != "float32":
        args += ["--quantize", quantization.mode, "--quantizer", quantization.backend]
        args += ["--io", quantization.io] if quantization.mode == "int8" else []  # --io is int8's alone
    cli(*args)
    bundle = Bundle.open(tmp_path / small_run.name)
    assert bundle.manifest["input"]["dtype"] == io_dtype and bundle.manifest["output"]["dtype"] == io_dtype
    images, reference = test_images
    probs = bundle.predict(images)
    agreement = (probs.argmax(1) == reference.argmax(1)).mean()
    # Measured on this run's 600 test images (top-1 agreement, mean absolute probability error): float16 0.993 and
    # 0.0026; dynamic, int8 and int8 through litert 0.88 to 0.93 and 0.014 to 0.021 (a weak head-only model flips on
    # small noise). The limits leave about 4 agreement points and twice the error; a constant answer (the mean
    # probabilities) scores 0.50 and 0.110, shuffled predictions 0.32 and 0.144, so a broken export fails them.
    floor, mean_error = {"float32": (1.0, 1e-4), "float16": (0.98, 0.006)}.get(quantization.mode, (0.84, 0.035))
    assert agreement >= floor and np.abs(probs - reference).mean() < mean_error, agreement


def _int8_probabilities(model, images: np.ndarray, quantization: Quantization, calibration: np.ndarray) -> np.ndarray:
    from toolkit.base.runtime import interpreter

    runner = interpreter(convert(model, SMALL_RUN_SIZE, quantization, calibration))
    (source,), (target,) = runner.get_input_details(), runner.get_output_details()
    outputs = []
    for image in images:
        runner.set_tensor(source["index"], image[None])
        runner.invoke()
        outputs.append(runner.get_tensor(target["index"])[0])
    return np.asarray(outputs, dtype=np.float32) / 255


def test_bias_correction_brings_int8_closer_to_the_float_model(small_run, test_images):
    from toolkit.export.calibration import calibration_images

    run = open_run(small_run)
    model = run.load_model()
    calibration, _ = calibration_images(run, 60)
    images, reference = test_images
    plain = _int8_probabilities(model, images, Quantization("int8", bias_correction=False), calibration)
    corrected = _int8_probabilities(model, images, Quantization("int8"), calibration)
    plain_error, corrected_error = np.abs(plain - reference).mean(), np.abs(corrected - reference).mean()
    assert corrected_error < 0.8 * plain_error, (corrected_error, plain_error)
    # the float model is left as it was: the correction only lives while converting
    assert np.allclose(model.predict(images.astype(np.float32), verbose=0), reference, atol=1e-6)


def test_bias_correction_still_finds_every_pair_once_its_layers_are_called_in_another_model(small_run):
    import keras

    from toolkit.export.bias_correction import folded_pairs
    from toolkit.model.classifier import backbone_of

    backbone = backbone_of(open_run(small_run).load_model())
    pairs = folded_pairs(backbone)
    assert len(pairs) > 10  # every convolution of the small MobileNetV2 that feeds a BatchNorm
    for conv, norm in pairs:  # as a copy with extra ops (a quantization simulation, say) would call them
        norm(conv(keras.Input(conv.input.shape[1:])))
    assert folded_pairs(backbone) == pairs


def test_adaptive_rounding_never_loses_to_nearest_and_stays_within_a_step():
    from toolkit.export.bias_correction import _depthwise_rounding

    folded = np.random.default_rng(0).normal(0, 30, size=(9, 40))  # (taps, channels) in quantization steps
    rows, cols = np.divmod(np.arange(9), 3)
    distance = np.hypot(rows[:, None] - rows, cols[:, None] - cols)
    covariance = np.broadcast_to(0.8**distance, (40, 9, 9))  # neighbouring pixels correlate, as in images

    def variance(rounded):
        error = (rounded - folded).T
        return np.einsum("ci,cij,cj->c", error, covariance, error)

    adaptive = _depthwise_rounding(folded, covariance)
    assert np.all(np.abs(adaptive - folded) < 1) and np.all(adaptive == np.round(adaptive))
    assert np.all(variance(adaptive) <= variance(np.round(folded)) + 1e-9)
    assert variance(adaptive).sum() < 0.5 * variance(np.round(folded)).sum()  # 0.32 measured


def test_float_ops_are_named_and_refused(small_run):
    model = open_run(small_run).load_model()
    float16 = convert(model, SMALL_RUN_SIZE, Quantization("float16"))
    found = float_ops(float16)
    assert sum(op == "CONV_2D" for op, _ in found) == 35
    with pytest.raises(ToolkitError, match=r"op\(s\) stayed float \(.*CONV_2D x35.*--allow-float-ops"):
        check_integer_only(float16, Quantization("int8"))
    check_integer_only(float16, Quantization("int8", allow_float_ops=True))


def test_export_takes_the_newest_finished_run_and_force_and_labels_do_what_they_say(small_run, tmp_path, cli):
    import os
    import time

    runs = tmp_path / "runs"
    for name, age in (("older", 200), ("newer", 100), ("newest.partial", 0)):  # an interrupted run never counts
        shutil.copytree(small_run, runs / name)
        os.utime(runs / name / "model.keras", (time.time() - age,) * 2)
    export = ("export", "--quantize", "float16", "--skip-drift", "--out", "assets")
    cli(*export, cwd=tmp_path)
    assert [p.name for p in (tmp_path / "assets").iterdir()] == ["newer"]
    names = [f"Class {short}" for short in CLASSES]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    cli(*export, "--labels", "names.txt", "--force", cwd=tmp_path)
    bundle = tmp_path / "assets" / "newer"
    assert (bundle / "labels.txt").read_text().splitlines() == names
    assert [c["label"] for c in json.loads((bundle / "manifest.json").read_text())["classes"]] == names
    assert read_metadata((bundle / "model.tflite").read_bytes())[1]["labels.txt"].decode().splitlines() == names


def test_calibration_images_come_from_train_resized_as_in_training(small_run):
    import cv2

    from app_steps import app_resize
    from toolkit.export.calibration import calibration_images

    run = open_run(small_run)
    images, rows = calibration_images(run, 21)
    assert len(rows) == 21 and set(rows["image_id"]) <= set(run.rows("train")["image_id"])
    assert images.dtype == np.uint8 and images.shape == (21, SMALL_RUN_SIZE, SMALL_RUN_SIZE, 3)
    for image, path in zip(images, rows["path"], strict=True):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # 200x150: squash really stretches
        assert np.array_equal(image, app_resize(rgb, SMALL_RUN_SIZE, run.resize_mode))


def test_bad_input_gets_one_line_and_leaves_nothing(small_run, int8_bundle, tmp_path, cli):
    runs = tmp_path / "runs"
    no_model = runs / "no_model"
    shutil.copytree(small_run, no_model, ignore=shutil.ignore_patterns("model.keras"))
    corrupt = runs / "corrupt"
    shutil.copytree(small_run, corrupt)
    (corrupt / "model.keras").write_bytes(b"not a zip file")
    no_df = runs / "no_df"
    shutil.copytree(small_run, no_df)
    manifest = pd.read_csv(small_run / "splits.csv")
    manifest[~((manifest["split"] == "train") & (manifest["label"] == "df"))].to_csv(no_df / "splits.csv", index=False)
    six_labels = tmp_path / "six.txt"
    six_labels.write_text("\n".join(CLASSES[:6]) + "\n")
    moved = tmp_path / "moved.txt"  # nv named on akiec's output, and akiec on nv's
    moved.write_text("\n".join(["nv", *CLASSES[1:5], "akiec", CLASSES[6]]) + "\n")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = tmp_path / "assets"
    cases = [
        (["--run", str(no_model)], "no model.keras in"),
        (["--run", str(corrupt)], f"{corrupt / 'model.keras'} is not a .keras archive"),
        (["--run", str(no_df)], "has no df images"),
        (["--run", str(small_run), "--labels", str(six_labels)], "has 6 labels but the model has 7 outputs"),
        (["--run", str(small_run), "--labels", str(moved)], "puts 'nv' on output 0, which is akiec"),
        (["--run", str(small_run), "--quantizer", "litert", "--io", "uint8"], "pass --io int8"),
        (["--run", str(tmp_path / "missing")], "run folder not found"),
    ]
    for extra, message in cases:
        one_line(cli("export", "--quantize", "--out", str(out), *extra, check=False), 2, message)
    assert not out.exists() or not any(out.iterdir())
    cannot_write = cli("export", "--run", str(small_run), "--out", str(blocker / "sub"), check=False)
    one_line(cannot_write, 2, "cannot write to")
    exists = cli("export", "--run", str(small_run), "--out", str(int8_bundle.parent), check=False)
    one_line(exists, 2, "already exists: pass --force")
    empty = tmp_path / "empty"
    empty.mkdir()
    no_run = cli("export", "--quantize", check=False, cwd=str(empty))
    one_line(no_run, 2, "make demo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "empty", "moved.txt", "runs", "six.txt"]


def test_pack_keeps_what_drift_and_export_need_without_optimizer_state(small_run, tmp_path, cli):
    import zipfile

    import keras

    from toolkit.model.classifier import set_phase

    trained = Path(shutil.copytree(small_run, tmp_path / "trained"))
    model = keras.saving.load_model(trained / "model.keras")
    set_phase(model, "mobilenet_v2", "finetune", "all")  # as a fine-tuned run is saved: with optimizer state
    model.compile(keras.optimizers.AdamW(1e-4), "categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    model.save(trained / "model.keras")
    table = pd.read_csv(trained / "splits.csv")  # rows in another order than the rebuilt split's, as decide leaves them
    table.sample(frac=1, random_state=0).to_csv(trained / "splits.csv", index=False)
    checkout = tmp_path / "repo"
    (checkout / ".git").mkdir(parents=True)
    packed = checkout / "models" / "small"
    cli("pack", "--run", str(trained), "--out", str(packed))
    with zipfile.ZipFile(trained / "model.keras") as archive:
        assert json.loads(archive.read("config.json")).get("compile_config")  # compiled, with optimizer state
    with zipfile.ZipFile(packed / "model.keras") as archive:
        assert not json.loads(archive.read("config.json")).get("compile_config")  # uncompiled: no optimizer
    assert (packed / "model.keras").stat().st_size < 0.8 * (trained / "model.keras").stat().st_size
    assert json.loads((packed / "config.json").read_text())["data"] == os.path.relpath(HAM, checkout)
    assert not (packed / "splits.csv").exists()  # the dataset's metadata stays with the dataset
    run, original = open_run(packed), open_run(trained)
    by_id = ["image_id", "split", "path", "label"]
    rebuilt = run.table.sort_values("image_id")[by_id].reset_index(drop=True)
    assert rebuilt.equals(original.table.sort_values("image_id")[by_id].reset_index(drop=True))
    packed_reference, trained_reference = run.reference(), original.reference()
    for split in ("val", "test"):  # the same probabilities and labels for each image, whatever the order
        columns = [
            (r[f"{split}_ids"], r[f"{split}_probs"], r[f"{split}_labels"])
            for r in (packed_reference, trained_reference)
        ]
        by_image = [{i: (tuple(p), y) for i, p, y in zip(*column, strict=True)} for column in columns]
        assert by_image[0] == by_image[1] and len(by_image[0]) == len(original.rows(split))
    (packed / "split.json").write_text('{"sha256": "0"}')  # other data than the run was trained on
    with pytest.raises(ToolkitError, match="is not the one"):
        open_run(packed)
    probe = np.random.default_rng(0).integers(0, 256, (4, run.input_size, run.input_size, 3)).astype("float32")
    same = [model.predict(probe, verbose=0) for model in (run.load_model(), original.load_model())]
    np.testing.assert_allclose(*same)
    assert "already exists" in cli("pack", "--run", str(trained), "--out", str(packed), check=False).stderr


def test_export_refuses_a_manifest_that_disagrees_with_the_run(small_run, tmp_path, cli, monkeypatch):
    from toolkit.export import stage

    assert json.loads((small_run / "config.json").read_text())["resize_mode"] == "squash"
    recipe = stage.preprocessing_recipe
    monkeypatch.setattr(stage, "preprocessing_recipe", lambda mode, dtype: recipe("pad", dtype))  # the bug
    out = tmp_path / "out"
    result = cli("export", "--run", str(small_run), "--quantize", "float16", "--out", str(out), check=False)
    one_line(result, 2, "manifest says resize_mode pad but")
    assert "trained with squash" in result.stderr and not out.exists()
