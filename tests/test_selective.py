"""``export --selective``: a model failing the gate is retried with more calibration images, then with the
layers int8 hurts most left in float, each try priced in size and latency."""

from __future__ import annotations

import json


def test_selective_names_the_worst_layers_and_prices_each_retry(small_run, tmp_path, cli):
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
        *["--min-agreement", "1.01"],
    )  # a gate nothing passes: every retry runs, and the last one is published
    assert "finding the layers int8 hurts most" in result.stdout
    manifest = json.loads((out / "ham_small" / "manifest.json").read_text())
    attempts = manifest["drift"]["attempts"]
    assert attempts[0]["attempt"] == "as asked" and attempts[1]["calibration_images"] == 120
    assert all(a["model_bytes"] > 0 and a["latency_ms_2_threads"] > 0 for a in attempts)
    report = json.loads((out / "ham_small" / "drift" / "drift.json").read_text())
    errors = [layer["rmse_over_scale"] for layer in report["layers"]]
    worst = [layer["tensor"] for layer in report["layers"]]
    assert len(errors) == 20 and errors == sorted(errors, reverse=True)
    # the app paths (the slowest part) run where they can still decide: on the last try, not on those retried
    assert result.stdout.count("the gate failed before them") == 2 * 4 and "python" in report["app_paths"]
    assert "Layers with the largest int8 error" in (out / "ham_small" / "drift" / "drift.md").read_text()
    assert [len(a["float_layers"]) for a in attempts] == [0, 0, 5, 10, 20] and not any(a["passed"] for a in attempts)
    sizes = [a["model_bytes"] for a in attempts]
    assert sizes[0] == sizes[1] < sizes[2] < sizes[3] < sizes[4]  # each layer left in float costs bytes
    assert manifest["float_layers"] == attempts[4]["float_layers"] == [name.split(";")[0] for name in worst]
