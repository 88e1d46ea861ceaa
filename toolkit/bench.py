"""Latency, memory and size of bundles, measured the way on-device benchmarks measure them.

Locally: each bundle's model in ``ai_edge_litert`` (XNNPACK on unless asked otherwise), init and first
inference timed apart, a warm-up, then timed ``invoke()`` calls interleaved across bundles and thread
counts (A B A B ...), so a noisy machine slows all of them alike and their ratios hold. On a phone:
TensorFlow Lite's ``benchmark_model`` over ``adb``, its output parsed into the same report; or the
timings a Flutter app wrote, imported.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from toolkit.bundle import MODEL, Bundle
from toolkit.errors import ToolkitError

MIN_TIMED_RUNS = 100  # percentiles need at least this many
PACKAGES = ("ai-edge-litert", "tensorflow-cpu", "numpy", "lesion-toolkit")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_features() -> list[str]:
    """The CPU flags that change how fast TensorFlow trains and XNNPACK runs (Linux only)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    present = set(flags.split(":", 1)[1].split())
    return [flag for flag in SPEED_FLAGS if flag in present]


def environment(*packages: str) -> dict:
    """The command, machine, library versions and date that every result records."""
    versions = {}
    for name in packages or PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "command": "python " + shlex.join(sys.argv),
        "machine": {
            "cpu": cpu_model(),
            "cpu_features": cpu_features(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "versions": versions,
        "date": datetime.date.today().isoformat(),
    }


def latency_stats(milliseconds: list[float] | np.ndarray) -> dict:
    times = np.asarray(milliseconds, dtype=float)
    return {
        "runs": len(times),
        "mean_ms": round(float(times.mean()), 3),
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p90_ms": round(float(np.percentile(times, 90)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
        "std_ms": round(float(times.std()), 3),
        "min_ms": round(float(times.min()), 3),
        "max_ms": round(float(times.max()), 3),
    }


def _rss_mb(field: str = "VmRSS") -> float | None:
    """Resident memory of this process (VmRSS) or its peak so far (VmHWM), from /proc (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


@dataclass
class _Config:
    bundle: Bundle
    threads: int
    runner: object
    inputs: list[np.ndarray]
    result: dict


def _inputs(bundle: Bundle, images: list[Path], count: int, seed: int = 0) -> list[np.ndarray]:
    """Real images preprocessed as the manifest says, or random bytes of the input dtype."""
    if images:
        pixels = bundle.load([str(p) for p in images], desc=f"preprocessing for {bundle.path.name}")
    else:
        shape = (count, *bundle.manifest["input"]["shape"][1:])
        pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return [bundle.to_input(image[None]) for image in pixels]


def _image_files(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    if not folder.is_dir():
        raise ToolkitError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
    if not files:
        raise ToolkitError(f"no images (.jpg, .png, .bmp) in {folder}")
    return files[:64]


def bench_local(
    bundles: list[Path],
    threads: tuple[int, ...] = (1, 2),
    runs: int = MIN_TIMED_RUNS,
    warmup: int = 10,
    xnnpack: bool = True,
    images: Path | None = None,
) -> dict:
    """Benchmark every bundle at every thread count, interleaved; returns the report (see README)."""
    from tqdm.auto import tqdm

    if runs < MIN_TIMED_RUNS:
        raise ToolkitError(f"--runs {runs} is too few for percentiles: at least {MIN_TIMED_RUNS}")
    files = _image_files(images)
    configs = []
    for path in bundles:
        bundle = Bundle.open(path)
        inputs = _inputs(bundle, files, 16)
        for count in threads:
            before = _rss_mb()
            start = time.perf_counter()
            runner = bundle.interpreter(threads=count, xnnpack=xnnpack)
            init_ms = 1000 * (time.perf_counter() - start)
            index = runner.get_input_details()[0]["index"]
            runner.set_tensor(index, inputs[0])
            start = time.perf_counter()
            runner.invoke()
            first_ms = 1000 * (time.perf_counter() - start)
            for step in range(warmup):
                runner.set_tensor(index, inputs[step % len(inputs)])
                runner.invoke()
            after = _rss_mb()
            result = {
                "bundle": str(path),
                "architecture": bundle.manifest.get("architecture"),
                "input_size": bundle.input_size,
                "quantization": bundle.manifest.get("quantization"),
                "input_dtype": bundle.manifest["input"]["dtype"],
                "threads": count,
                "xnnpack": xnnpack,
                "model_bytes": (bundle.path / MODEL).stat().st_size,
                "init_ms": round(init_ms, 3),
                "first_inference_ms": round(first_ms, 3),
                "rss_added_mb": round(after - before, 1) if after is not None and before is not None else None,
            }
            configs.append(_Config(bundle, count, runner, inputs, result))
    timings = [[] for _ in configs]
    for step in tqdm(range(runs), desc="timed runs (interleaved)", leave=False, disable=None):
        for config, times in zip(configs, timings, strict=True):
            runner = config.runner
            runner.set_tensor(runner.get_input_details()[0]["index"], config.inputs[step % len(config.inputs)])
            start = time.perf_counter()
            runner.invoke()
            times.append(1000 * (time.perf_counter() - start))
    results = [{**config.result, **latency_stats(times)} for config, times in zip(configs, timings, strict=True)]
    _add_ratios(results)
    return {
        **environment(),
        "settings": {
            "threads": list(threads),
            "runs": runs,
            "warmup": warmup,
            "xnnpack": xnnpack,
            "inputs": f"{len(files)} images from {images}" if files else "random bytes",
        },
        "peak_rss_mb": _rss_mb("VmHWM"),
        "results": results,
    }


def _add_ratios(results: list[dict]) -> None:
    """Speed-up and size ratio against the float32 bundle of the same architecture, input size and threads."""

    def key(result: dict) -> tuple:
        return result["architecture"], result["input_size"], result["threads"]

    floats = {key(r): r for r in results if r["quantization"] == "float32"}
    for result in results:
        reference = floats.get(key(result))
        if reference is not None and result is not reference:
            result["speedup_vs_float32"] = round(reference["mean_ms"] / result["mean_ms"], 2)
            result["size_ratio_vs_float32"] = round(reference["model_bytes"] / result["model_bytes"], 2)


def table(report: dict) -> str:
    """The report as a fixed-width table for the terminal."""
    header = f"{'bundle':<28} {'quant':<8} {'thr':>3} {'MB':>6} {'init':>7} {'first':>7} {'mean':>7} {'p50':>7} "
    header += f"{'p90':>7} {'p99':>7} {'std':>6} {'speed-up':>8}"
    lines = [header, "-" * len(header)]
    for r in report["results"]:
        speedup = f"{r['speedup_vs_float32']:.2f}x" if "speedup_vs_float32" in r else ""
        size = f"{r['model_bytes'] / 1e6:6.2f}" if r.get("model_bytes") else "     -"
        name = Path(r.get("bundle", r.get("model", "?"))).name[:28]
        lines.append(
            f"{name:<28} {r.get('quantization') or '-'!s:<8} {r.get('threads') or '-':>3} {size} "
            f"{_ms(r.get('init_ms'))} {_ms(r.get('first_inference_ms'))} {_ms(r['mean_ms'])} {_ms(r.get('p50_ms'))} "
            f"{_ms(r.get('p90_ms'))} {_ms(r.get('p99_ms'))} {_ms(r.get('std_ms'), 6)} {speedup:>8}"
        )
    lines.append("(milliseconds; " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()) + ")")
    if report.get("peak_rss_mb"):
        lines.append(f"peak resident memory of the process: {report['peak_rss_mb']} MB")
    return "\n".join(lines)


def _ms(value: float | None, width: int = 7) -> str:
    return f"{value:{width}.2f}" if value is not None else " " * (width - 1) + "-"


# --- On a phone: benchmark_model over adb --------------------------------------------------------

_TIMINGS = re.compile(
    r"Inference timings in us: Init: (?P<init>[\d.]+), First inference: (?P<first>[\d.]+), "
    r"Warmup \(avg\): (?P<warmup>[\d.eE+]+), Inference \(avg\): (?P<avg>[\d.eE+]+)"
)
_COUNT = re.compile(
    r"count=(?P<count>\d+) first=(?P<first>[\d.]+) curr=[\d.]+ min=(?P<min>[\d.]+) max=(?P<max>[\d.]+) "
    r"avg=(?P<avg>[\d.eE+]+) std=(?P<std>[\d.]+)"
)
_MEMORY = re.compile(
    r"Memory footprint delta from the start of the tool \(MB\): init=(?P<init>[\d.]+) "
    r"overall=(?P<overall>[\d.]+)"
)
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: (?P<peak>[\d.]+)")


def parse_benchmark_model(output: str) -> dict:
    """TensorFlow Lite ``benchmark_model`` output as the report's numbers (milliseconds, MB)."""
    timings = _TIMINGS.search(output)
    # count= lines: the warm-up, then the timed runs; op profiling may print more after the summary line.
    counts = [m for m in _COUNT.finditer(output) if timings is not None and m.start() < timings.start()]
    if timings is None or not counts:
        raise ToolkitError("cannot parse benchmark_model output: no 'Inference timings in us' or 'count=' line")
    measured = counts[-1]
    result = {
        "init_ms": float(timings["init"]) / 1000,
        "first_inference_ms": float(timings["first"]) / 1000,
        "warmup_mean_ms": float(timings["warmup"]) / 1000,
        "mean_ms": float(timings["avg"]) / 1000,
        "runs": int(measured["count"]),
        "min_ms": float(measured["min"]) / 1000,
        "max_ms": float(measured["max"]) / 1000,
        "std_ms": float(measured["std"]) / 1000,
    }
    memory, peak = _MEMORY.search(output), _PEAK.search(output)
    if memory:
        result["memory_init_mb"], result["memory_overall_mb"] = float(memory["init"]), float(memory["overall"])
    if peak:
        result["peak_memory_mb"] = float(peak["peak"])
    return {key: round(value, 3) if isinstance(value, float) else value for key, value in result.items()}


def _adb(adb: str, serial: str | None, *args: str) -> str:
    command = [adb, *(["-s", serial] if serial else []), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise ToolkitError(f"adb timed out: {shlex.join(command)}") from None
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise ToolkitError(f"adb failed ({shlex.join(args[:2])}): {reason[-1] if reason else done.returncode}")
    return done.stdout


def bench_adb(
    bundle_path: Path,
    benchmark_binary: Path,
    serial: str | None = None,
    threads: tuple[int, ...] = (1, 2),
    runs: int = MIN_TIMED_RUNS,
    warmup: int = 10,
    xnnpack: bool = True,
    gpu: bool = False,
    nnapi: bool = False,
    adb: str = "adb",
) -> dict:
    """Push the model and ``benchmark_model`` to an Android device, run it per thread count, parse the output."""
    bundle = Bundle.open(bundle_path)
    if not benchmark_binary.is_file():
        raise ToolkitError(f"benchmark_model binary not found: {benchmark_binary}")
    if shutil.which(adb) is None:
        raise ToolkitError(f"{adb} not found on PATH: install Android platform-tools")
    devices = [line.split()[0] for line in _adb(adb, None, "devices").splitlines()[1:] if line.endswith("device")]
    if not devices:
        raise ToolkitError("adb finds no Android device: connect one and enable USB debugging")
    if serial is not None and serial not in devices:
        raise ToolkitError(f"adb finds no device {serial}; found: {', '.join(devices)}")
    folder = "/data/local/tmp/lesion_toolkit"
    _adb(adb, serial, "shell", "mkdir", "-p", folder)
    _adb(adb, serial, "push", str(bundle.path / MODEL), f"{folder}/{MODEL}")
    _adb(adb, serial, "push", str(benchmark_binary), f"{folder}/benchmark_model")
    _adb(adb, serial, "shell", "chmod", "+x", f"{folder}/benchmark_model")
    model = (bundle.path / MODEL).stat().st_size
    results = []
    for count in threads:
        flags = [
            f"--graph={folder}/{MODEL}",
            f"--num_threads={count}",
            f"--num_runs={runs}",
            f"--warmup_runs={warmup}",
            f"--use_xnnpack={str(xnnpack).lower()}",
            f"--use_gpu={str(gpu).lower()}",
            f"--use_nnapi={str(nnapi).lower()}",
            "--report_peak_memory_footprint=true",
        ]
        output = _adb(adb, serial, "shell", f"{folder}/benchmark_model", *flags)
        parsed = parse_benchmark_model(output)
        delegate = "gpu" if gpu else "nnapi" if nnapi else "xnnpack" if xnnpack else "cpu"
        results.append(
            {
                "bundle": str(bundle.path),
                "quantization": bundle.manifest.get("quantization"),
                "threads": count,
                "delegate": delegate,
                "model_bytes": model,
                **parsed,
            }
        )
    device = _adb(adb, serial, "shell", "getprop", "ro.product.model").strip() or (serial or devices[0])
    report = environment()
    report["machine"] = {"device": device, "serial": serial or devices[0], "via": "adb benchmark_model"}
    return {**report, "settings": {"threads": list(threads), "runs": runs, "warmup": warmup}, "results": results}


# --- From a Flutter app: timings it wrote ---------------------------------------------------------


def import_app_timings(path: Path) -> dict:
    """Timings a Flutter app wrote as JSON lines into the report: one record per timed inference.

    Each line: ``{"model": "demo", "device": "Pixel 7", "threads": 2, "delegate": "xnnpack",
    "latency_ms": 12.3, "warmup": false}``; ``warmup`` is optional (default false). The first record
    of each group is its first inference, kept out of the statistics as benchmark_model does.
    Records group by model, device, threads and delegate.
    """
    if not path.is_file():
        raise ToolkitError(f"timings file not found: {path}")
    groups: dict[tuple, list[dict]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            float(record["latency_ms"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ToolkitError(f"{path} line {number}: expected a JSON object with latency_ms") from None
        key = tuple(record.get(k) for k in ("model", "device", "threads", "delegate"))
        groups.setdefault(key, []).append(record)
    if not groups:
        raise ToolkitError(f"{path} holds no timing records")
    results = []
    for (model, device, threads, delegate), records in groups.items():
        timed = [float(r["latency_ms"]) for r in records[1:] if not r.get("warmup", False)]
        if not timed:
            raise ToolkitError(f"{path}: {model} on {device} has only warm-up records")
        results.append(
            {
                "model": model,
                "device": device,
                "threads": threads,
                "delegate": delegate,
                "first_inference_ms": float(records[0]["latency_ms"]),
                **latency_stats(timed),
            }
        )
    report = environment()
    report["machine"] = {"devices": sorted({str(r["device"]) for r in results}), "via": f"app timings {path.name}"}
    return {**report, "results": results}


def write_json(report: dict, path: Path) -> None:
    try:
        path.write_text(json.dumps(report, indent=2) + "\n")
    except OSError as error:
        raise ToolkitError(f"cannot write {path}: {error.strerror}") from None
