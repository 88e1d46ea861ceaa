"""README's latency table: float32, float16, dynamic-range and int8 bundles at 1 and 2 threads, interleaved.

Two models: the demo MobileNetV2 (64x64) and a MobileNetV2 at 224x224 trained on the shared HAM10000
images. Latency does not depend on what the weights learned, so the HAM10000 model here is trained
briefly (its accuracy is the accuracy benchmark's business). All eight bundles run in one
interleaved ``bench`` (A B A B ...). A cross-check runs ``ai_edge_litert``'s own
``benchmark_litert_model`` on the int8 HAM10000 model at 2 threads: its mean must be within 15%.

    .venv/bin/python benchmarks/latency.py            # writes benchmarks/results/latency.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, SHARED, write_result

from toolkit.bench.local import bench_local, table

PRESETS = {
    "float32": [],
    "float16": ["--quantize", "float16"],
    "dynamic": ["--quantize", "dynamic"],
    "int8": ["--quantize", "int8"],
}
CROSS_CHECK_TOLERANCE = 0.15


def toolkit(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "toolkit", *args], cwd=REPO, check=True)


def ensure_runs(work: Path) -> dict[str, Path]:
    runs = {"demo": work / "demo", "ham10000_224": work / "ham10000_224"}
    toolkit("train", "--demo", "--epochs-head", "3", "--epochs-finetune", "3", "--out", str(runs["demo"]))
    toolkit(
        "train",
        "--data",
        str(SHARED / "data" / "ham10000"),
        "--input-size",
        "224",
        "--epochs-head",
        "1",
        "--epochs-finetune",
        "1",
        "--limit",
        "100",
        "--out",
        str(runs["ham10000_224"]),
    )
    return runs


def cross_check(bundle: Path, ours_ms: float, threads: int = 2, runs: int = 100) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ai_edge_litert.tools.benchmark_litert_model",
                f"--model={bundle / 'model.tflite'}",
                f"--num_threads={threads}",
                f"--num_runs={runs}",
                "--warmup_runs=10",
                f"--result_json={result}",
            ],
            check=True,
            capture_output=True,
        )
        theirs = json.loads(result.read_text())["latency"]["avg_ms"]
    gap = abs(ours_ms - theirs) / theirs
    return {
        "bundle": bundle.name,
        "threads": threads,
        "toolkit_mean_ms": round(ours_ms, 3),
        "benchmark_litert_model_mean_ms": theirs,
        "relative_gap": round(gap, 3),
        "within_tolerance": gap <= CROSS_CHECK_TOLERANCE,
    }


def markdown(report: dict) -> str:
    rows = [
        "| model | bundle | size (MB) | 1 thread mean / p90 (ms) | 2 threads mean / p90 (ms) | speed-up vs float32 |",
        "|---|---|---|---|---|---|",
    ]
    by_bundle: dict[str, dict[int, dict]] = {}
    for result in report["results"]:
        by_bundle.setdefault(result["bundle"], {})[result["threads"]] = result
    for bundle, by_threads in by_bundle.items():
        one, two = by_threads[1], by_threads[2]
        model, preset = Path(bundle).name.rsplit("_", 1)
        speedup = f"{two['speedup_vs_float32']:.2f}x" if "speedup_vs_float32" in two else "1.00x"
        rows.append(
            f"| {model} | {preset} | {one['model_bytes'] / 1e6:.2f} | {one['mean_ms']:.2f} / "
            f"{one['p90_ms']:.2f} | {two['mean_ms']:.2f} / {two['p90_ms']:.2f} | {speedup} |"
        )
    return "\n".join(rows)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        runs = ensure_runs(work)
        bundles = []
        for model, run in runs.items():
            for preset, flags in PRESETS.items():
                toolkit(
                    "export",
                    "--run",
                    str(run),
                    *flags,
                    "--out",
                    str(work / "assets"),
                    "--name",
                    f"{model}_{preset}",
                    "--skip-drift",
                )
                bundles.append(work / "assets" / f"{model}_{preset}")
        report = bench_local(bundles, threads=(1, 2), runs=200, warmup=20)  # all 16 configurations interleaved
        report["results"] = [{**r, "bundle": Path(r["bundle"]).name} for r in report["results"]]
        int8_ham = next(r for r in report["results"] if r["bundle"] == "ham10000_224_int8" and r["threads"] == 2)
        report["cross_check"] = cross_check(work / "assets" / "ham10000_224_int8", int8_ham["mean_ms"])
    path = write_result("latency.json", report)
    print(table(report))
    print()
    print(markdown(report))
    print(f"\ncross-check: {report['cross_check']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
