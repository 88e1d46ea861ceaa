"""Latency on a phone: TensorFlow Lite's ``benchmark_model`` over ``adb``, or the timings a Flutter app wrote."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from toolkit.base.errors import ToolkitError
from toolkit.bench.environment import environment
from toolkit.bench.local import latency_stats
from toolkit.bench.options import MIN_TIMED_RUNS, THREADS, WARMUP
from toolkit.export.bundle import MODEL, Bundle

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


DEVICE_FOLDER = "/data/local/tmp/lesion_toolkit"


def _push(bundle: Bundle, benchmark_binary: Path, adb: str, serial: str | None) -> list[str]:
    """Check the tools and the device, copy the model and ``benchmark_model`` over; the devices adb sees."""
    if not benchmark_binary.is_file():
        raise ToolkitError(f"benchmark_model binary not found: {benchmark_binary}")
    if shutil.which(adb) is None:
        raise ToolkitError(f"{adb} not found on PATH: install Android platform-tools")
    devices = [line.split()[0] for line in _adb(adb, None, "devices").splitlines()[1:] if line.endswith("device")]
    if not devices:
        raise ToolkitError("adb finds no Android device: connect one and enable USB debugging")
    if serial is not None and serial not in devices:
        raise ToolkitError(f"adb finds no device {serial}; found: {', '.join(devices)}")
    folder = DEVICE_FOLDER
    _adb(adb, serial, "shell", "mkdir", "-p", folder)
    _adb(adb, serial, "push", str(bundle.path / MODEL), f"{folder}/{MODEL}")
    _adb(adb, serial, "push", str(benchmark_binary), f"{folder}/benchmark_model")
    _adb(adb, serial, "shell", "chmod", "+x", f"{folder}/benchmark_model")
    return devices


def bench_adb(
    bundle_path: Path,
    benchmark_binary: Path,
    serial: str | None = None,
    threads: tuple[int, ...] = THREADS,
    runs: int = MIN_TIMED_RUNS,
    warmup: int = WARMUP,
    xnnpack: bool = True,
    gpu: bool = False,
    nnapi: bool = False,
    adb: str = "adb",
) -> dict:
    """Push the model and ``benchmark_model`` to an Android device, run it per thread count, parse the output."""
    bundle = Bundle.open(bundle_path)
    devices = _push(bundle, benchmark_binary, adb, serial)
    folder, model = DEVICE_FOLDER, (bundle.path / MODEL).stat().st_size
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
