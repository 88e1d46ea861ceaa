"""The seven HAM10000 diagnostic classes, in the canonical (HAM10000 / DermaMNIST) order."""

from __future__ import annotations

import re

from toolkit.base.errors import ToolkitError

CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

DISPLAY_NAMES: dict[str, str] = {
    "akiec": "Actinic keratoses / intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesions",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevi",
    "vasc": "Vascular lesions",
}


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


_ALIASES = {_normalise(c): c for c in CLASSES} | {_normalise(d): c for c, d in DISPLAY_NAMES.items()}


def canonical_class(name: str, where: str = "") -> str:
    """Map a short or display class name, in any case, to its canonical short name."""
    found = _ALIASES.get(_normalise(str(name)))
    if found is None:
        place = f" in {where}" if where else ""
        raise ToolkitError(f"unknown class {name!r}{place}; expected one of {', '.join(CLASSES)}")
    return found
