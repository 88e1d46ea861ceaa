"""predict: the top classes under the not-a-medical-device line, the referral at the default operating point, and a
one-line refusal of a bundle whose files changed since export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import one_line, spread_images

from toolkit.base.classes import CLASSES

IMAGES = spread_images(2, step=700)


def test_predict_prints_the_top_classes(int8_bundle, cli):
    out = cli("predict", "--bundle", str(int8_bundle), "--top", "2", *map(str, IMAGES)).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("Not a medical device") and "DEMO" not in out
    assert lines[1].endswith(IMAGES[0].name) and len(lines) == 9
    label, probability = lines[2].split()[1:]
    assert label in CLASSES and 0 <= float(probability) <= 1
    # the referral at the default operating point, from the manifest's threshold and this image's probabilities
    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    point = next(p for p in manifest["referral"]["points"] if p["name"] == manifest["referral"]["default"])
    args = ("predict", "--bundle", str(int8_bundle), "--json", "--top", "7", str(IMAGES[0]))
    printed = json.loads(cli(*args).stdout)
    probs = {entry["label"]: entry["probability"] for entry in printed[0]["top"]}
    malignancy = probs["mel"] + probs["bcc"] + probs["akiec"]
    referral = printed[0]["referral"]
    assert referral["score"] == pytest.approx(malignancy, abs=1e-4) and referral["threshold"] == point["threshold"]
    assert referral["refer"] == (malignancy >= point["threshold"]) and point["name"] == "malignant_sens95"
    verdict = "refer to a dermatologist" if referral["refer"] else "no referral"
    assert f"malignancy score (mel + bcc + akiec) {malignancy:.3f}: {verdict}" in lines[4]


def test_predict_refuses_a_bundle_whose_labels_disagree(int8_bundle, tmp_path, cli):
    broken = Path(shutil.copytree(int8_bundle, tmp_path / "broken"))
    (broken / "labels.txt").write_text("a\nb\n")
    one_line(
        cli("predict", "--bundle", str(broken), str(IMAGES[0]), check=False),
        2,
        "labels.txt has changed since export (its sha256 differs from manifest.json files.labels.txt)",
    )
    one_line(
        cli("predict", "--bundle", str(tmp_path / "nope"), str(IMAGES[0]), check=False),
        2,
        "bundle folder not found",
    )
