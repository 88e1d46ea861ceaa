"""bench: interleaved local runs with honest statistics, benchmark_model over a fake adb, app timings."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from conftest import HAM, REPO, one_line

from toolkit.base.errors import ToolkitError
from toolkit.bench.android import import_app_timings, parse_benchmark_model

RECORDED = Path(__file__).parent / "data" / "benchmark_model"


def test_local_bench_interleaves_bundles_and_compares_with_float(int8_bundle, passing_bundle, tmp_path, cli):
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((HAM / "images").glob("*.jpg"))[:5]:
        (images / path.name).symlink_to(path)
    report_file = tmp_path / "bench.json"
    out = cli(
        "bench",
        "--bundle",
        str(passing_bundle),
        "--bundle",
        str(int8_bundle),
        "--threads",
        "1,2",
        "--runs",
        "100",
        "--warmup",
        "3",
        "--images",
        str(images),
        "--json",
        str(report_file),
    ).stdout
    assert "speed-up" in out and "peak resident memory" in out
    report = json.loads(report_file.read_text())
    assert report["machine"]["cores"] == os.cpu_count() and report["versions"]["ai-edge-litert"] and report["date"]
    assert report["settings"]["inputs"].startswith("5 images")
    results = report["results"]
    assert [(Path(r["bundle"]).name, r["threads"]) for r in results] == [
        ("float32", 1),
        ("float32", 2),
        ("ham_small", 1),
        ("ham_small", 2),
    ]
    for result in results:
        assert result["runs"] == 100 and result["min_ms"] <= result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"]
        assert result["init_ms"] > 0 and result["first_inference_ms"] > 0
    int8 = results[2]
    on_disk = {bundle.name: (bundle / "model.tflite").stat().st_size for bundle in (passing_bundle, int8_bundle)}
    assert (results[0]["model_bytes"], int8["model_bytes"]) == (on_disk["float32"], on_disk["ham_small"])
    assert int8["size_ratio_vs_float32"] == pytest.approx(on_disk["float32"] / on_disk["ham_small"], abs=0.01)
    assert int8["size_ratio_vs_float32"] > 3 and "speedup_vs_float32" in int8
    assert report["peak_rss_mb"] > 0
    for result in results[1:]:  # the first also pays the runtime's own start-up (166 MB measured)
        # each interpreter holds its model and XNNPACK's packed weights: measured 2.2x the file's size
        assert result["rss_added_mb"] >= 0.5 * result["model_bytes"] / 1e6, result


def test_timed_runs_take_turns_across_bundles_and_no_xnnpack_reaches_the_interpreter(
    int8_bundle, passing_bundle, monkeypatch, cli
):
    """Interleaving: every timed step runs each (bundle, threads) once, so a machine slowing down mid-run slows all."""
    from toolkit.export.bundle import Bundle

    calls, built = [], []
    interpreter = Bundle.interpreter

    def recorded(bundle, threads=None, xnnpack=True):
        runner = interpreter(bundle, threads=threads, xnnpack=xnnpack)
        built.append(xnnpack)
        invoke = runner.invoke

        def counted():
            calls.append((bundle.path.name, threads))
            invoke()

        runner.invoke = counted
        return runner

    monkeypatch.setattr(Bundle, "interpreter", recorded)
    args = ["bench", "--bundle", str(passing_bundle), "--bundle", str(int8_bundle), "--threads", "1,2"]
    cli(*args, "--runs", "100", "--warmup", "2", "--no-xnnpack")
    configs = [("float32", 1), ("float32", 2), ("ham_small", 1), ("ham_small", 2)]
    assert calls[-400:] == configs * 100 and built == [False] * 4
    assert calls[:12] == [config for config in configs for _ in range(3)]  # first inference and warm-up: apart


@pytest.mark.parametrize("name", ["plain", "peak_memory", "op_profiling"])
def test_benchmark_model_output_variants_parse(name):
    parsed = parse_benchmark_model((RECORDED / f"{name}.txt").read_text())
    expected_mean = {"plain": 11.791, "peak_memory": 7.817, "op_profiling": 24.366}[name]
    assert parsed["mean_ms"] == pytest.approx(expected_mean, abs=1e-3)
    assert parsed["runs"] in (100, 128) and parsed["min_ms"] <= parsed["mean_ms"] <= parsed["max_ms"]
    assert parsed["first_inference_ms"] > parsed["mean_ms"] and parsed["init_ms"] > 0
    assert ("peak_memory_mb" in parsed) == (name == "peak_memory") and parsed["memory_overall_mb"] > 0
    with pytest.raises(ToolkitError, match="cannot parse benchmark_model output"):
        parse_benchmark_model("\n".join((RECORDED / f"{name}.txt").read_text().splitlines()[:10]))


FAKE_ADB = """#!{python}
import os, sys
args = sys.argv[1:]
if args[:1] == ["-s"]:
    args = args[2:]
log = os.environ["FAKE_ADB_LOG"]
open(log, "a").write(" ".join(args) + "\\n")
if args == ["devices"]:
    print("List of devices attached")
    for serial in os.environ.get("FAKE_ADB_DEVICES", "").split():
        print(serial + "\\tdevice")
elif args[:1] == ["shell"] and args[1].endswith("benchmark_model"):
    print(open(os.environ["FAKE_ADB_OUTPUT"]).read())
elif args[:2] == ["shell", "getprop"]:
    print("Pixel 7")
"""


@pytest.fixture
def fake_adb(tmp_path) -> dict[str, str]:
    folder = tmp_path / "bin"
    folder.mkdir()
    adb = folder / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    return {
        "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}",
        "FAKE_ADB_LOG": str(tmp_path / "adb.log"),
        "FAKE_ADB_OUTPUT": str(RECORDED / "peak_memory.txt"),
        "FAKE_ADB_DEVICES": "emulator-5554",
        "BINARY": str(binary),
    }


def test_adb_path_pushes_runs_and_parses(int8_bundle, fake_adb, tmp_path, cli):
    args = [
        "bench",
        "--adb",
        "--bundle",
        str(int8_bundle),
        "--benchmark-binary",
        fake_adb["BINARY"],
        "--threads",
        "1,4",
        "--gpu",
        "--json",
        str(tmp_path / "phone.json"),
    ]
    out = cli(*args, env=fake_adb).stdout
    assert "ham_small" in out
    report = json.loads((tmp_path / "phone.json").read_text())
    assert report["machine"]["device"] == "Pixel 7" and [r["threads"] for r in report["results"]] == [1, 4]
    assert report["results"][0]["mean_ms"] == pytest.approx(7.817) and report["results"][0]["delegate"] == "gpu"
    log = Path(fake_adb["FAKE_ADB_LOG"]).read_text()
    assert "push" in log and "--num_threads=4" in log and "--use_gpu=true" in log and "--num_runs=100" in log
    nnapi = tmp_path / "nnapi.json"
    cli("bench", "--adb", "--bundle", str(int8_bundle), "--benchmark-binary", fake_adb["BINARY"], "--nnapi",
        "--json", str(nnapi), env=fake_adb)  # fmt: skip
    assert json.loads(nnapi.read_text())["results"][0]["delegate"] == "nnapi"
    assert "--use_nnapi=true" in Path(fake_adb["FAKE_ADB_LOG"]).read_text()


def test_adb_failures_are_one_line(int8_bundle, fake_adb, cli):
    args = ["bench", "--adb", "--bundle", str(int8_bundle), "--benchmark-binary", fake_adb["BINARY"]]
    no_device = cli(*args, check=False, env={**fake_adb, "FAKE_ADB_DEVICES": ""})
    assert no_device.returncode == 2 and "adb finds no Android device" in no_device.stderr
    empty_path = Path(fake_adb["BINARY"]).parent / "empty"
    empty_path.mkdir()
    no_adb = cli(*args, check=False, env={**fake_adb, "PATH": str(empty_path)})
    assert no_adb.returncode == 2 and "adb not found on PATH" in no_adb.stderr
    garbage = Path(fake_adb["BINARY"]).parent / "garbage.txt"
    garbage.write_text("Segmentation fault\n")
    unparsable = cli(*args, check=False, env={**fake_adb, "FAKE_ADB_OUTPUT": str(garbage)})
    one_line(unparsable, 2, "cannot parse benchmark_model output")


def test_app_timings_import(tmp_path, cli):
    lines = [{"model": "demo", "device": "Pixel 7", "threads": 2, "delegate": "xnnpack", "latency_ms": 30.0}]
    lines += [
        {"model": "demo", "device": "Pixel 7", "threads": 2, "delegate": "xnnpack", "latency_ms": 9.0, "warmup": True}
    ] * 3
    lines += [
        {"model": "demo", "device": "Pixel 7", "threads": 2, "delegate": "xnnpack", "latency_ms": 10.0 + i % 5}
        for i in range(100)
    ]
    path = tmp_path / "timings.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = import_app_timings(path)["results"][0]
    assert result["first_inference_ms"] == 30.0 and result["runs"] == 100
    assert result["p50_ms"] == 12.0 and result["max_ms"] == 14.0
    assert "Pixel 7" in cli("bench", "--import", str(path)).stdout
    path.write_text("not json\n")
    bad = cli("bench", "--import", str(path), check=False)
    assert bad.returncode == 2 and "line 1: expected a JSON object with latency_ms" in bad.stderr


def test_bad_bench_input(int8_bundle, tmp_path, cli):
    empty, unreadable, no_model = tmp_path / "no_images", tmp_path / "unreadable", tmp_path / "no_model"
    empty.mkdir()
    unreadable.mkdir()
    shutil.copytree(int8_bundle, no_model, ignore=shutil.ignore_patterns("model.tflite"))
    (unreadable / "broken.png").write_bytes(b"not an image")  # images that cannot fill the model's input
    cases = [
        (["--bundle", str(tmp_path / "missing")], "bundle folder not found"),
        (["--bundle", str(no_model)], "no model.tflite in bundle"),
        (["--bundle", str(int8_bundle), "--images", str(empty)], "no images"),
        (["--bundle", str(int8_bundle), "--images", str(unreadable)], "broken.png"),
        (["--bundle", str(int8_bundle), "--runs", "20"], "at least 100"),
        (["--bundle", str(int8_bundle), "--threads", "two"], "--threads takes comma-separated numbers"),
    ]
    for extra, message in cases:
        one_line(cli("bench", *extra, check=False), 2, message)


def test_the_latency_benchmark_cross_checks_with_litert_own_tool(passing_bundle, monkeypatch):
    """README quotes ``benchmarks/latency.py``'s cross-check against ``benchmark_litert_model``: the tool must run on
    a bundle and its mean be read back (the gap itself is a benchmark result, not asserted here)."""
    import importlib.util

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # latency.py imports its neighbour common.py
    spec = importlib.util.spec_from_file_location("latency", REPO / "benchmarks" / "latency.py")
    latency = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(latency)
    check = latency.cross_check(passing_bundle, ours_ms=1.0, threads=1, runs=20)
    assert check["bundle"] == "float32" and check["benchmark_litert_model_mean_ms"] > 0
    assert check["relative_gap"] == pytest.approx(
        abs(1.0 - check["benchmark_litert_model_mean_ms"]) / check["benchmark_litert_model_mean_ms"], abs=1e-3
    )
    committed = json.loads((REPO / "benchmarks" / "results" / "latency.json").read_text())["cross_check"]
    assert committed["within_tolerance"] and committed["relative_gap"] <= latency.CROSS_CHECK_TOLERANCE
