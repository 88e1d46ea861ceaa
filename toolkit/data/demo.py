"""The embedded demo set: synthetic, lesion-like images of the 7 classes, made on the spot.

It is NOT dermoscopy and says so everywhere it shows (image ids start with ``DEMO``). Each class
has its own colour, size, border irregularity and texture, loosely after its real look, so a small
model learns it far above chance in a minute on a CPU. About a third of the lesions get a second
"shot" (rotated, rescaled), so the lesion-grouped split has something to group. It is written in the
HAM10000 layout, so every reader, split and pipeline runs on it unchanged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from toolkit.base.classes import CLASSES

DEMO_VERSION = 1


@dataclass(frozen=True)
class LesionLook:
    colour: tuple[int, int, int]  # RGB
    radius: tuple[float, float]  # fraction of image size
    irregularity: float  # radial noise of the border
    texture: str


LOOKS = {
    "akiec": LesionLook((205, 95, 90), (0.22, 0.30), 0.18, "scaly"),
    "bcc": LesionLook((230, 170, 175), (0.20, 0.28), 0.10, "vessels"),
    "bkl": LesionLook((160, 110, 70), (0.24, 0.32), 0.12, "dots"),
    "df": LesionLook((130, 85, 60), (0.14, 0.19), 0.05, "white_centre"),
    "mel": LesionLook((60, 40, 35), (0.28, 0.38), 0.35, "blue_patches"),
    "nv": LesionLook((120, 80, 50), (0.18, 0.26), 0.03, "smooth"),
    "vasc": LesionLook((150, 30, 70), (0.12, 0.18), 0.08, "lobules"),
}


def _outline(rng: np.random.Generator, size: int, look: LesionLook) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    harmonics = sum(rng.normal(0, look.irregularity / k) * np.cos(k * angles + rng.uniform(0, 6.3)) for k in (2, 3, 5))
    radius = size * rng.uniform(*look.radius) * (1 + harmonics) * np.array([[1.0], [rng.uniform(0.75, 1.0)]])
    centre = size / 2 + rng.normal(0, size * 0.04, (2, 1))
    return np.round((centre + radius * [np.cos(angles), np.sin(angles)]).T).astype(np.int32)


def _texture(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, kind: str, size: int) -> None:
    ys, xs = np.nonzero(mask)
    centre = (int(xs.mean()), int(ys.mean()))
    pick = lambda n: rng.integers(0, len(xs), n)  # noqa: E731 - a point inside the lesion
    if kind == "scaly":
        noise = rng.normal(0, 28, image.shape).astype(np.int16)
        image[mask] = np.clip(image[mask] + noise[mask], 0, 255)
    elif kind == "vessels":
        for i in pick(5):
            end = (int(xs[i] + rng.normal(0, size / 6)), int(ys[i] + rng.normal(0, size / 6)))
            cv2.line(image, (int(xs[i]), int(ys[i])), end, (170, 20, 40), 1, cv2.LINE_AA)
    elif kind == "dots":
        for i in pick(12):
            cv2.circle(image, (int(xs[i]), int(ys[i])), 1, (235, 225, 200), -1)
    elif kind == "white_centre":
        cv2.circle(image, centre, max(2, size // 14), (240, 235, 230), -1, cv2.LINE_AA)
    elif kind == "blue_patches":
        for i in pick(3):
            cv2.circle(image, (int(xs[i]), int(ys[i])), max(2, size // 12), (90, 100, 140), -1, cv2.LINE_AA)
    elif kind == "lobules":
        for i in pick(6):
            cv2.circle(image, (int(xs[i]), int(ys[i])), max(2, size // 16), (110, 10, 50), -1, cv2.LINE_AA)


def draw_lesion(label: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic RGB image of a lesion of class ``label`` on skin-coloured background."""
    look = LOOKS[label]
    skin = np.array([225, 180, 150]) + rng.normal(0, 12) + rng.normal(0, 5, 3)
    ramp = np.linspace(-12, 12, size)[None, :, None] * rng.uniform(-1, 1)
    image = np.clip(skin + ramp + rng.normal(0, 4, (size, size, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [_outline(rng, size, look)], 1)
    mask = mask.astype(bool)
    lesion = image.copy()
    lesion[mask] = np.clip(np.array(look.colour) + rng.normal(0, 10, 3), 0, 255).astype(np.uint8)
    _texture(lesion, mask, rng, look.texture, size)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), size / 64 * (1 + 3 * look.irregularity))[..., None]
    return (soft * lesion + (1 - soft) * image).astype(np.uint8)


def _second_shot(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(0, 360), rng.uniform(0.9, 1.1))
    return cv2.warpAffine(image, matrix, (size, size), borderMode=cv2.BORDER_REFLECT_101)


def write_demo_set(root: Path, per_class: int = 60, size: int = 64, seed: int = 0) -> Path:
    """Write ``per_class`` images of each class and a HAM10000-style ``metadata.csv`` into ``root``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for label in CLASSES:
        lesion = 0
        while sum(r[2] == label for r in rows) < per_class:
            lesion_id = f"DEMO_{label}_L{lesion:04d}"
            image = draw_lesion(label, size, rng)
            shots = [image, _second_shot(image, rng)] if rng.random() < 0.33 else [image]
            for shot in shots[: per_class - sum(r[2] == label for r in rows)]:
                image_id = f"DEMO_{label}_{len(rows):05d}"
                cv2.imwrite(str(root / "images" / f"{image_id}.png"), cv2.cvtColor(shot, cv2.COLOR_RGB2BGR))
                rows.append((lesion_id, image_id, label, "synthetic-demo"))
            lesion += 1
    pd.DataFrame(rows, columns=["lesion_id", "image_id", "dx", "dx_type"]).to_csv(root / "metadata.csv", index=False)
    return root


def demo_root(cache: Path | None = None) -> Path:
    """Where the demo set lives: ``$TOOLKIT_CACHE`` or ``~/.cache/lesion_toolkit``."""
    base = cache or Path(os.environ.get("TOOLKIT_CACHE", Path.home() / ".cache" / "lesion_toolkit"))
    return base / f"demo-v{DEMO_VERSION}"


def ensure_demo_set(cache: Path | None = None) -> Path:
    """Make the demo set once (written aside and renamed, so an interrupted run leaves nothing half made)."""
    root = demo_root(cache)
    if (root / "metadata.csv").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=root.parent))
    try:
        write_demo_set(staging / "set")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(staging / "set", root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
