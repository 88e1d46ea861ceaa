"""Paths that committed files can carry: relative to the git checkout, so they mean the same on every machine."""

from __future__ import annotations

import os
from pathlib import Path


def checkout_root(path: Path) -> Path | None:
    """The git checkout that holds ``path``, if any."""
    return next((parent for parent in Path(path).resolve().parents if (parent / ".git").exists()), None)


def portable_path(path: str | Path, anchor: Path) -> str:
    """``path`` as a committed file at ``anchor`` should name it: relative to that checkout's root, else absolute.

    ``../shared/data/ham10000`` then means the same on every machine that lays the checkout out the same way.
    """
    root = checkout_root(anchor)
    resolved = Path(path).resolve()
    return Path(os.path.relpath(resolved, root)).as_posix() if root else str(resolved)


def find_portable(named: str, near: Path) -> Path:
    """A path written by :func:`portable_path`, found from ``near`` (a file of the same checkout) or the cwd."""
    root = checkout_root(near)
    if Path(named).is_absolute() or root is None or not (root / named).exists():
        return Path(named)
    return root / named
