"""Where benchmark results go; every result records the command, machine, library versions and date."""

from __future__ import annotations

import json
from pathlib import Path

from toolkit.bench.environment import environment

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared"

__all__ = ["RESULTS", "SHARED", "environment", "write_result"]


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
