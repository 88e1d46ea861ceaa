"""Latency here: each bundle in ``ai_edge_litert``, init and first inference apart, then interleaved timed runs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.base.errors import ToolkitError
from toolkit.base.runtime import timed_invoke
from toolkit.bench.environment import environment
from toolkit.bench.options import MIN_TIMED_RUNS, THREADS, WARMUP
from toolkit.export.bundle import MODEL, Bundle


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


def _prepared(bundle: Bundle, threads: int, xnnpack: bool, warmup: int, inputs: list[np.ndarray]) -> _Config:
    """An interpreter for ``bundle`` at ``threads``, its init and first inference timed, warmed up."""
    before = _rss_mb()
    start = time.perf_counter()
    runner = bundle.interpreter(threads=threads, xnnpack=xnnpack)
    init_ms = 1000 * (time.perf_counter() - start)
    first_ms = timed_invoke(runner, inputs[0])
    for step in range(warmup):
        timed_invoke(runner, inputs[step % len(inputs)])
    after = _rss_mb()
    result = {
        "bundle": str(bundle.path),
        "architecture": bundle.manifest.get("architecture"),
        "input_size": bundle.input_size,
        "quantization": bundle.manifest.get("quantization"),
        "input_dtype": bundle.manifest["input"]["dtype"],
        "threads": threads,
        "xnnpack": xnnpack,
        "model_bytes": (bundle.path / MODEL).stat().st_size,
        "init_ms": round(init_ms, 3),
        "first_inference_ms": round(first_ms, 3),
        "rss_added_mb": round(after - before, 1) if after is not None and before is not None else None,
    }
    return _Config(bundle, threads, runner, inputs, result)


def bench_local(
    bundles: list[Path],
    threads: tuple[int, ...] = THREADS,
    runs: int = MIN_TIMED_RUNS,
    warmup: int = WARMUP,
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
        configs += [_prepared(bundle, count, xnnpack, warmup, inputs) for count in threads]
    timings = [[] for _ in configs]
    for step in tqdm(range(runs), desc="timed runs (interleaved)", leave=False, disable=None):
        for config, times in zip(configs, timings, strict=True):
            times.append(timed_invoke(config.runner, config.inputs[step % len(config.inputs)]))
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
