"""The machine, library versions, command and date that every measurement records."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

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
