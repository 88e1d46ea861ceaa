"""The drift gate: passes a good export, fails a broken one loudly, and holds predictions made on a device to
the same gate."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
from ai_edge_litert.interpreter import Interpreter
from conftest import HAM, REPO, one_line, toolkit_cli

from toolkit.base.classes import CLASSES
from toolkit.preview.browser import chromium

DEMO_GATE = [
    *("--min-agreement", "0.95", "--max-balanced-accuracy-drop", "4", "--max-recall-drop", "25"),
    *("--max-sensitivity-drop", "12"),  # about 26 malignant test images: one flipped referral is 3.8 points
]
LOOSE = [
    *("--min-agreement", "0", "--max-balanced-accuracy-drop", "100", "--max-recall-drop", "100"),
    *("--max-sensitivity-drop", "100"),
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, keras_home) -> Path:
    """The demo model, trained as ``make demo`` trains it."""
    out = tmp_path_factory.mktemp("runs") / "demo"
    toolkit_cli(
        "train",
        "--demo",
        "--epochs-head",
        "3",
        "--epochs-finetune",
        "3",
        "--out",
        str(out),
        env={"KERAS_HOME": str(keras_home), "TOOLKIT_CACHE": str(tmp_path_factory.mktemp("cache"))},
    )
    return out


@pytest.fixture(scope="module")
def demo_bundle(demo_run, tmp_path_factory) -> Path:
    """A good export: the demo run in float16, through the gate with thresholds sized for its 67 test images
    (one flipped image moves a class's recall 8 to 12 points and balanced accuracy 1.2 to 1.8)."""
    out = tmp_path_factory.mktemp("assets")
    result = toolkit_cli("export", "--run", str(demo_run), "--quantize", "float16", "--out", str(out), *DEMO_GATE)
    assert re.search(r"drift gate \(as asked\): top-1 agreement [0-9.]+%.*: passed", result.stdout)
    return out / "demo"


def test_the_demo_model_learns_its_synthetic_classes(demo_run):
    """``make demo`` trains this: measured test balanced accuracy 0.97 on 67 images (one image is 1.5 to 2 points)."""
    metrics = json.loads((demo_run / "metrics.json").read_text())["test"]
    assert metrics["balanced_accuracy"] >= 0.85 and metrics["macro_f1"] >= 0.85  # a constant answer: 1/7 and 0.04


def _make_demo_commands() -> list[list[str]]:
    """The toolkit commands ``make demo`` runs, as ``make -n`` prints them (the install step left out)."""
    import shlex
    import subprocess

    printed = subprocess.run(["make", "-n", "demo"], capture_output=True, text=True, cwd=REPO)
    joined = printed.stdout.replace("\\\n", " ")
    return [shlex.split(line)[3:] for line in joined.splitlines() if " -m toolkit " in line]


def test_make_demo_trains_as_the_fixture_does_and_exports_int8_through_its_gate(demo_run, tmp_path):
    train, export = _make_demo_commands()
    assert train[: train.index("--out")] == ["train", "--demo", "--epochs-head", "3", "--epochs-finetune", "3"]
    assert export[:2] == ["export", "--quantize"] and export[2].startswith("--")  # no value: int8
    assert export[export.index("--min-agreement") :] == DEMO_GATE
    run = export.index("--run")
    export[run + 1] = str(demo_run)
    result = toolkit_cli(*export, "--out", str(tmp_path))
    manifest = json.loads((tmp_path / "demo" / "manifest.json").read_text())
    assert manifest["quantization"] == "int8" and manifest["input"]["dtype"] == manifest["output"]["dtype"] == "uint8"
    assert re.search(r"drift gate \(as asked\): top-1 agreement [0-9.]+%", result.stdout)
    assert manifest["drift"]["top1_agreement"] >= 0.97  # measured 1.0 on its 67 test images (one image: 1.5 points)
    assert manifest["drift"]["passed"]  # its melanoma thresholds were once above what a uint8 output can hold


def test_a_good_export_passes_and_records_its_drift(demo_bundle, cli):
    manifest = json.loads((demo_bundle / "manifest.json").read_text())
    assert manifest["drift"]["passed"] and manifest["drift"]["top1_agreement"] >= 0.95
    exported, reference = manifest["metrics"]["exported"], manifest["metrics"]["float"]
    assert exported["balanced_accuracy"] >= reference["balanced_accuracy"] - 0.04
    report = json.loads((demo_bundle / "drift" / "drift.json").read_text())
    assert report["device_drift"]["max_abs_prob_diff"] < 1e-4  # trained and checked on the same CPU
    assert {p.name for p in (demo_bundle / "drift").iterdir()} == {"drift.json", "drift.md", "drift.png"}
    for name in ("drift.json", "drift.md"):  # committed with a bundle: no image id of the dataset in it
        assert "DEMO_" not in (demo_bundle / "drift" / name).read_text()
    assert sum(c["images"] for c in report["changed_by_class"]) == len(report["total"]["changed"])
    standalone = cli("drift", "--bundle", str(demo_bundle), *DEMO_GATE, "--out", str(demo_bundle.parent / "report"))
    assert "Gate PASSED" in standalone.stdout
    assert standalone.stdout.startswith("warning: demo was trained on the synthetic DEMO set, not dermoscopy")


def test_a_demo_bundle_says_so_before_every_answer(demo_bundle, cli):
    """A real nevus given to the demo model gets an answer that means nothing: it must say so first."""
    nevus = str(HAM / "images" / "ISIC_0024306.jpg")
    lines = cli("predict", "--bundle", str(demo_bundle), nevus).stdout.splitlines()
    assert lines[0].startswith("warning: demo was trained on the synthetic DEMO set")
    assert lines[1].startswith("Not a medical device") and lines[2] == nevus
    as_json = cli("predict", "--bundle", str(demo_bundle), "--json", nevus)
    assert "synthetic DEMO set" in as_json.stderr and json.loads(as_json.stdout)[0]["image"] == nevus


def test_a_perturbed_output_layer_fails_the_gate_and_stays_out_of_place(demo_run, tmp_path, cli):
    broken = Path(shutil.copytree(demo_run, tmp_path / "runs" / "broken"))
    model = keras.saving.load_model(broken / "model.keras")
    dense = model.get_layer("head").layers[-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([np.random.default_rng(0).permutation(kernel.T).T, bias])  # classes swapped around
    model.save(broken / "model.keras")
    out = tmp_path / "assets"
    result = cli("export", "--run", str(broken), "--quantize", "--out", str(out), check=False)
    one_line(result, 1, "drift gate failed for")
    assert not (out / "broken").exists()
    assert (out / "broken.rejected").stat().st_mode & 0o777 == 0o755  # visible and readable, for review
    report = json.loads((out / "broken.rejected" / "drift" / "drift.json").read_text())
    assert not report["gate"]["passed"] and report["device_drift"]["top1_agreement"] < 0.5


def _run_like_a_phone(pack: Path, bundle: Path) -> list[dict]:
    """What an app does with the eval pack: PNG bytes in unchanged, raw output tensor values out."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    interpreter = Interpreter(model_path=str(bundle / "model.tflite"))
    interpreter.allocate_tensors()
    records = []
    for row in pd.read_csv(pack / "eval_pack.csv").itertuples():
        rgb = cv2.cvtColor(cv2.imread(str(pack / row.file)), cv2.COLOR_BGR2RGB)
        interpreter.set_tensor(
            interpreter.get_input_details()[0]["index"], rgb[None].astype(manifest["input"]["dtype"])
        )
        interpreter.invoke()
        raw = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
        records.append({"image_id": row.image_id, "output": raw.tolist()})
    return records


def test_device_predictions_round_trip_through_the_eval_pack(demo_bundle, tmp_path, cli):
    pack = tmp_path / "pack"
    cli("drift", "--bundle", str(demo_bundle), "--export-eval-pack", str(pack))
    listing = pd.read_csv(pack / "eval_pack.csv")
    assert len(listing) == 67 and (pack / listing["file"][0]).exists()
    records = _run_like_a_phone(pack, demo_bundle)
    jsonl = tmp_path / "phone.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    here = json.loads((demo_bundle / "drift" / "drift.json").read_text())["total"]
    cli("drift", "--bundle", str(demo_bundle), "--predictions", str(jsonl), "--out", str(tmp_path / "r1"), *DEMO_GATE)
    phone = json.loads((tmp_path / "r1" / "drift.json").read_text())["total"]
    assert phone["top1_agreement"] == here["top1_agreement"]
    assert phone["mean_abs_prob_diff"] == pytest.approx(here["mean_abs_prob_diff"], abs=1e-6)
    scale = json.loads((demo_bundle / "manifest.json").read_text())["output"]["scale"]
    probabilities = pd.DataFrame([np.array(r["output"]) * scale for r in records], columns=list(CLASSES))
    probabilities.insert(0, "image_id", [r["image_id"] for r in records])
    probabilities[::-1].to_csv(tmp_path / "phone.csv", index=False)  # order does not matter
    cli(
        "drift",
        "--bundle",
        str(demo_bundle),
        "--predictions",
        str(tmp_path / "phone.csv"),
        "--out",
        str(tmp_path / "r2"),
        *DEMO_GATE,
    )
    assert json.loads((tmp_path / "r2" / "drift.json").read_text())["total"]["top1_agreement"] == here["top1_agreement"]
    as_probabilities = tmp_path / "phone_probabilities.jsonl"  # the other JSON-lines form: already dequantised
    as_probabilities.write_text(
        "".join(
            json.dumps({"image_id": row.image_id, "probabilities": list(row[1:])}) + "\n"
            for row in probabilities.itertuples(index=False)
        )
    )
    cli(
        "drift",
        "--bundle",
        str(demo_bundle),
        "--predictions",
        str(as_probabilities),
        "--out",
        str(tmp_path / "r3"),
        *DEMO_GATE,
    )
    from_probabilities = json.loads((tmp_path / "r3" / "drift.json").read_text())["total"]
    assert (
        from_probabilities["changed"] == phone["changed"]
        and from_probabilities["top1_agreement"] == phone["top1_agreement"]
    )
    assert from_probabilities["mean_abs_prob_diff"] == pytest.approx(phone["mean_abs_prob_diff"], abs=1e-6)
    probabilities.head(10).to_csv(tmp_path / "short.csv", index=False)
    short = cli("drift", "--bundle", str(demo_bundle), "--predictions", str(tmp_path / "short.csv"), check=False)
    assert short.returncode == 2 and "lack 57 test image(s)" in short.stderr


def test_device_predictions_that_are_not_probabilities_are_refused(demo_bundle, tmp_path, cli):
    """A JPEG, raw outputs out of the byte range, and probabilities that do not sum to 1: one line each, exit 2."""
    jpeg = tmp_path / "phone.jpg"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"image_id": "x", "output": [900, -5, 0, 0, 0, 0, 0]}) + "\n")
    summed = tmp_path / "summed.csv"
    summed.write_text("image_id," + ",".join(CLASSES) + "\nx,0.5,0.5,0.5,0.5,0.5,0.5,0.5\n")
    for path, message in (
        (jpeg, "is not text"),
        (raw, "is not a probability vector"),
        (summed, "is not a probability vector (values 0.5 to 0.5, sum 3.5)"),
    ):
        one_line(cli("drift", "--bundle", str(demo_bundle), "--predictions", str(path), check=False), 2, message)


def test_drift_on_the_validation_split(demo_bundle, demo_run, tmp_path, cli):
    cli("drift", "--bundle", str(demo_bundle), "--split", "val", "--out", str(tmp_path / "val"), *DEMO_GATE)
    report = json.loads((tmp_path / "val" / "drift.json").read_text())
    val = pd.read_csv(demo_run / "splits.csv").query("split == 'val'")
    assert report["split"] == "val" and report["total"]["images"] == len(val) != 67  # not the test split's 67
    reference = np.load(demo_run / "reference.npz")
    labels = reference["val_labels"]
    assert report["reference_metrics"]["accuracy"] == pytest.approx((reference["val_probs"].argmax(1) == labels).mean())


def test_exit_codes(demo_bundle, int8_bundle, tmp_path, cli):
    passing = cli("drift", "--bundle", str(demo_bundle), *DEMO_GATE, "--out", str(tmp_path / "a"))
    assert passing.returncode == 0
    strict = cli(
        "drift", "--bundle", str(int8_bundle), "--min-agreement", "1.01", "--out", str(tmp_path / "b"), check=False
    )
    assert strict.returncode == 1 and "Gate FAILED" in strict.stdout
    assert cli("drift", "--bundle", str(int8_bundle), *LOOSE, "--out", str(tmp_path / "c")).returncode == 0
    missing = cli("drift", "--bundle", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 2 and "bundle folder not found" in missing.stderr


def test_drift_tells_a_changed_or_unrelated_run_from_quantization(demo_bundle, demo_run, tmp_path, cli):
    """The bundle records the sha256 of the model.keras it came from; any other model is named, not measured."""
    import hashlib

    manifest = json.loads((demo_bundle / "manifest.json").read_text())
    assert manifest["source"]["model_sha256"] == hashlib.sha256((demo_run / "model.keras").read_bytes()).hexdigest()
    other = Path(shutil.copytree(demo_run, tmp_path / "other"))
    model = keras.saving.load_model(other / "model.keras")
    model.get_layer("head").layers[-1].bias.assign(np.zeros(len(CLASSES)))
    model.save(other / "model.keras")
    unrelated = cli("drift", "--bundle", str(demo_bundle), "--run", str(other), check=False)
    one_line(unrelated, 2, f"{other} is not the run {demo_bundle} was exported from (its model.keras sha256 differs")
    moved = Path(shutil.copytree(demo_bundle, tmp_path / "bundle"))
    manifest["source"]["run"] = str(other)  # as if the run had been retrained in place
    (moved / "manifest.json").write_text(json.dumps(manifest))
    changed = cli("drift", "--bundle", str(moved), check=False)
    assert changed.returncode == 2 and f"the run {other} changed since {moved} was exported" in changed.stderr


def test_drift_holds_the_apps_own_steps_to_the_gate(demo_bundle, tmp_path, cli, monkeypatch):
    """The bundle is also run through ``app_steps`` (the app's decode and resize.js transliterated); an app whose
    preprocessing drifts fails the gate by name, even when the toolkit's own path passes."""
    import app_steps

    cli("drift", "--bundle", str(demo_bundle), "--out", str(tmp_path / "ok"), *DEMO_GATE)
    report = json.loads((tmp_path / "ok" / "drift.json").read_text())
    assert report["app_paths"]["python"]["top1_agreement"] == report["total"]["top1_agreement"]  # the same bytes
    assert "through the app's steps, python" in (tmp_path / "ok" / "drift.md").read_text()
    monkeypatch.setattr(app_steps, "app_resize", lambda rgb, size, mode: np.zeros((size, size, 3), np.uint8))
    broken = cli("drift", "--bundle", str(demo_bundle), "--out", str(tmp_path / "broken"), *DEMO_GATE, check=False)
    assert broken.returncode == 1 and "the app's steps (python): top-1 agreement" in broken.stdout


def test_drift_says_which_app_paths_did_not_run(demo_bundle, tmp_path, cli, monkeypatch):
    """Without Chromium the browser path is not run, and the report and drift.md say so and why."""
    from toolkit.preview import browser

    monkeypatch.setattr(browser, "chromium", lambda: None)
    cli("drift", "--bundle", str(demo_bundle), "--out", str(tmp_path), *DEMO_GATE)
    report = json.loads((tmp_path / "drift.json").read_text())
    assert set(report["app_paths"]) == {"python"}
    assert report["app_paths_skipped"]["browser"].startswith("chromium not installed")
    assert "the app's steps, browser: not run here (chromium not installed" in (tmp_path / "drift.md").read_text()


@pytest.mark.skipif(chromium() is None, reason="skipped: chromium not installed")
def test_drift_holds_the_browser_page_to_the_gate(demo_bundle, tmp_path, cli, monkeypatch):
    """With Chromium, the preview page (the browser's decoder, resize.js, LiteRT.js) answers the whole split and is
    gated by name: it agrees with the toolkit's path image for image, and a page that answers wrongly fails."""
    from toolkit.preview import browser

    cli("drift", "--bundle", str(demo_bundle), "--out", str(tmp_path / "ok"), *DEMO_GATE)
    report = json.loads((tmp_path / "ok" / "drift.json").read_text())
    assert report["app_paths_skipped"] == {}
    assert report["app_paths"]["browser"]["changed"] == report["total"]["changed"]
    assert report["app_paths"]["browser"]["top1_agreement"] == report["total"]["top1_agreement"]
    assert "through the app's steps, browser" in (tmp_path / "ok" / "drift.md").read_text()
    rolled = browser.CLASSIFY.replace(
        "answers.push(result.probabilities)",
        "answers.push([...result.probabilities.slice(1), result.probabilities[0]])",
    )
    assert rolled != browser.CLASSIFY
    monkeypatch.setattr(browser, "CLASSIFY", rolled)  # every answer shifted by one class
    broken = cli("drift", "--bundle", str(demo_bundle), "--out", str(tmp_path / "broken"), *DEMO_GATE, check=False)
    assert broken.returncode == 1 and "the app's steps (browser): top-1 agreement" in broken.stdout
    assert "the app's steps (python)" not in broken.stdout
