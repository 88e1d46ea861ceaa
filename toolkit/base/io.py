"""Writing files so that a reader never sees half of one: write beside the target, then rename over it."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from toolkit.base.errors import ToolkitError


def check_writable(path: str | Path) -> None:
    """Refuse, before any work, a file path that cannot be written: a folder, a missing folder, a read-only place."""
    path = Path(path)
    if path.is_dir():
        raise ToolkitError(f"cannot write {path}: it is a folder; give a file name inside it")
    if not path.parent.is_dir():
        if path.parent.exists():
            raise ToolkitError(f"cannot write {path}: {path.parent} is a file, not a folder")
        raise ToolkitError(f"output folder does not exist: {path.parent}")
    try:  # the one sure test of a place (read-only, /proc, full): make a file there and remove it
        with tempfile.NamedTemporaryFile(prefix=f".{path.name}.", suffix=".probe", dir=path.parent):
            pass
    except OSError as error:
        raise ToolkitError(f"cannot write {path}: {error.strerror or error}; choose another place") from None


def write_atomic(path: str | Path, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Call ``write(temporary_path)`` and rename the result into place, so an error never leaves half a file.

    ``suffix``: the temporary file's, for writers that insist on one (Keras: ``.keras``, ``.weights.h5``).

    A path that cannot be written (a folder, a folder that does not exist, a file where a folder should be, a
    read-only place) is refused in one line naming it.
    """
    path = Path(path)
    check_writable(path)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as error:
        raise ToolkitError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(handle)
    try:
        write(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as open() would have made it, not mkstemp's owner-only mode
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise ToolkitError(f"cannot write {path}: {error.strerror or error}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    write_atomic(path, lambda temporary: Path(temporary).write_bytes(data))


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, payload: dict) -> None:
    """``payload`` as indented JSON with a final newline, atomically."""
    write_text(path, json.dumps(payload, indent=2) + "\n")
