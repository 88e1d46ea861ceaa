"""What ``bench`` measures and how often: every option with its default, free of heavy imports for the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIN_TIMED_RUNS = 100  # percentiles need at least this many
THREADS = (1, 2)
WARMUP = 10


@dataclass(frozen=True)
class BenchOptions:
    """The ``bench`` command's options; the benchmark functions take the same defaults."""

    threads: str = ",".join(map(str, THREADS))  # thread counts, comma-separated
    runs: int = MIN_TIMED_RUNS
    warmup: int = WARMUP
    images: Path | None = None
    xnnpack: bool = True
    json: Path | None = None
    adb: bool = False
    serial: str | None = None  # adb device serial; None: the only device
    benchmark_binary: Path | None = None
    gpu: bool = False
    nnapi: bool = False
    import_file: Path | None = None
