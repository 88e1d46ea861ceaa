"""Where benchmark results go; every result records the command, machine, library versions and date."""

from __future__ import annotations

import json
from pathlib import Path

from toolkit.bench.environment import environment

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED = REPO.parent / "shared"

__all__ = ["REPO", "RESULTS", "SHARED", "environment", "in_repo", "write_result"]


def in_repo(path: Path) -> str:
    """``path`` as a committed result names it: relative to the checkout when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
