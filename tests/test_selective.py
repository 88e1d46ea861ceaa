"""``export --selective``: a model failing the gate is retried with more calibration images, then with the
layers int8 hurts most left in float, each try priced in size and latency."""

from __future__ import annotations

import json

from toolkit.export import gated


def test_selective_names_the_worst_layers_and_prices_each_retry(small_run, tmp_path, cli, monkeypatch):
    monkeypatch.setattr(gated, "FLOAT_LAYER_STEPS", (5, 10))  # each try is a conversion: the last one (20) is cut
    out = tmp_path / "assets"
    result = cli(
        "export",
        "--run",
        str(small_run),
        "--quantize",
        "--out",
        str(out),
        "--selective",
        "--calibration-images",
        "40",
        "--accept-drift",
        *["--min-agreement", "0.9", "--max-balanced-accuracy-drop", "100", "--max-recall-drop", "100"],
    )  # this tiny model starts near 80% agreement: a few float layers may bring it over 90%
    assert "finding the layers int8 hurts most" in result.stdout
    manifest = json.loads((out / "ham_small" / "manifest.json").read_text())
    attempts = manifest["drift"]["attempts"]
    assert attempts[0]["attempt"] == "as asked" and attempts[1]["calibration_images"] == 120
    assert all(a["model_bytes"] > 0 and a["latency_ms_2_threads"] > 0 for a in attempts)
    report = json.loads((out / "ham_small" / "drift" / "drift.json").read_text())
    errors = [layer["rmse_over_scale"] for layer in report["layers"]]
    assert len(errors) == 10 and errors == sorted(errors, reverse=True)
    assert "Layers with the largest int8 error" in (out / "ham_small" / "drift" / "drift.md").read_text()
    float_layers = [len(a["float_layers"]) for a in attempts]
    assert float_layers == [0, 0, 5, 10][: len(attempts)] and (len(attempts) == 4 or attempts[-1]["passed"])
    if len(attempts) >= 3:  # layers left in float: the model grows, and the manifest names them
        assert attempts[2]["model_bytes"] > attempts[1]["model_bytes"]
        assert manifest["float_layers"] == attempts[-1]["float_layers"]
