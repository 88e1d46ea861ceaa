"""Writing files so that a reader never sees half of one: write beside the target, then rename over it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from toolkit.base.errors import ToolkitError


def write_bytes(path: Path, data: bytes) -> None:
    """``data`` into ``path`` atomically: a temporary file in the same folder, then ``os.replace``."""
    path = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as error:
        if "temporary" in locals() and os.path.exists(temporary):
            os.unlink(temporary)
        raise ToolkitError(f"cannot write {path}: {error.strerror or error}") from None


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, payload: dict) -> None:
    """``payload`` as indented JSON with a final newline, atomically."""
    write_text(path, json.dumps(payload, indent=2) + "\n")
