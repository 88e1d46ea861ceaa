"""Finished training runs as the later stages read them: config, split manifest, metrics and the model.

Export, drift and evaluate all start from a run folder written by :mod:`toolkit.train`; this module
is their one way in, with the errors a wrong folder deserves.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.classes import CLASSES
from toolkit.data.readers import read_manifest
from toolkit.errors import ToolkitError
from toolkit.paths import find_portable, portable_path

RUNS_ROOT = Path("runs")
SPLIT_DIGEST = "split.json"  # a packed run's split: rebuilt from the data, checked by this digest
TRAIN_HINT = "train one with `python -m toolkit train --demo --out runs/demo` (or run `make demo`)"


def latest_run(root: Path = RUNS_ROOT) -> Path:
    """The most recently finished run under ``root`` (interrupted ``.partial`` runs do not count)."""
    finished = [p.parent for p in root.glob("*/model.keras") if not p.parent.name.endswith(".partial")]
    if not finished:
        raise ToolkitError(f"no finished training run under {root}/: {TRAIN_HINT}")
    return max(finished, key=lambda p: (p / "model.keras").stat().st_mtime)


@dataclass
class Run:
    """A finished run folder: ``config.json``, ``splits.csv``, ``model.keras`` and what else it holds."""

    path: Path
    config: dict
    table: pd.DataFrame

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def input_size(self) -> int:
        return int(self.config["input_size"])

    @property
    def resize_mode(self) -> str:
        return self.config.get("resize_mode", "squash")

    @cached_property
    def metrics(self) -> dict:
        path = self.path / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @cached_property
    def decision(self) -> dict | None:
        """The decision rule folded into the model's head (``decision.json``), if the run fitted one."""
        path = self.path / "decision.json"
        return json.loads(path.read_text()) if path.exists() else None

    def rows(self, split: str) -> pd.DataFrame:
        """The manifest rows of one split, in image-id order, with ``label_index``."""
        rows = self.table[self.table["split"] == split].sort_values("image_id", kind="stable")
        if rows.empty:
            raise ToolkitError(f"the {split} split of {self.path / 'splits.csv'} is empty")
        return rows.assign(label_index=rows["label"].map(CLASSES.index).to_numpy())

    def reference(self) -> dict[str, np.ndarray]:
        """The float reference; a packed run's ids and labels come from its rebuilt split, checked by digest."""
        path = self.path / "reference.npz"
        if not path.exists():
            raise ToolkitError(f"no reference.npz in {self.path}: retrain the run to get the float reference")
        with np.load(path) as npz:
            reference = {key: npz[key] for key in npz.files}
        for split in ("val", "test"):
            if f"{split}_ids_sha256" in reference:
                rows = self.table[self.table["split"] == split]
                if split_digest(rows["image_id"]) != str(reference.pop(f"{split}_ids_sha256")):
                    raise ToolkitError(f"the {split} split of {self.path} does not match its reference.npz")
                reference[f"{split}_ids"] = rows["image_id"].to_numpy(str)
                reference[f"{split}_labels"] = rows["label"].map(CLASSES.index).to_numpy()
        return reference

    def load_model(self, compile: bool = True):
        import keras

        path = self.path / "model.keras"
        try:
            return keras.saving.load_model(path, compile=compile)
        except Exception as error:  # Keras raises ValueError, OSError, zipfile.BadZipFile and more
            raise ToolkitError(f"cannot load {path}: {str(error).splitlines()[0] or type(error).__name__}") from None

    def load_raw_model(self):
        """The best model with its folded decision rule (prior shift, temperature) taken out of the head."""
        from toolkit.calibrate import Decision, unfold_from_head

        model = self.load_model()
        if self.decision is not None:
            unfold_from_head(model, Decision(**self.decision))
        return model


def open_run(path: Path | None = None) -> Run:
    """The run at ``path`` (default: the latest under ``runs/``), checked to be a finished run."""
    path = Path(path) if path is not None else latest_run()
    if not path.is_dir():
        raise ToolkitError(f"run folder not found: {path}")
    manifest = "splits.csv" if not (path / SPLIT_DIGEST).exists() else SPLIT_DIGEST
    for needed in ("model.keras", "config.json", manifest):
        if not (path / needed).exists():
            raise ToolkitError(f"no {needed} in {path}: is it a finished training run? ({TRAIN_HINT})")
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as error:
        raise ToolkitError(f"cannot parse {path / 'config.json'}: {error}") from None
    table = read_manifest(path / manifest).table if manifest == "splits.csv" else _rebuilt_split(path, config)
    return Run(path=path, config=config, table=table)


def split_digest(ids: object, splits: object = ()) -> str:
    """sha256 of image ids (with their splits, if given), in the order given."""
    text = "\n".join(f"{i},{s}" for i, s in zip(ids, splits, strict=True)) if len(splits) else "\n".join(ids)
    return hashlib.sha256(text.encode()).hexdigest()


def _rebuilt_split(path: Path, config: dict) -> pd.DataFrame:
    """A packed run keeps no split manifest, which would copy the dataset's metadata into the repository.

    Its split is rebuilt from the data as training built it (the split is deterministic) and checked
    against the digest the pack recorded.
    """
    from toolkit.data.split import run_split

    data = find_portable(config["data"], path)
    if not data.exists():
        raise ToolkitError(f"{path} rebuilds its split from {data}, which does not exist: put the dataset there")
    table = run_split(data, **{key: config[key] for key in ("val", "test", "seed", "limit") if key in config})
    expected = json.loads((path / SPLIT_DIGEST).read_text())["sha256"]
    ordered = table.sort_values("image_id", kind="stable")
    if split_digest(ordered["image_id"], ordered["split"]) != expected:
        raise ToolkitError(f"the split rebuilt from {data} is not the one {path} was trained on: is it the same data?")
    return table


PACKED_FILES = (
    "config.json",
    "state.json",
    "history.csv",
    "metrics.json",
    "decision.json",
    "reference.npz",
    "training_curves.png",
    "confusion_matrix.png",
)


def pack_run(source: Path, out: Path, force: bool = False) -> Path:
    """A finished run as it can be committed: the float model without optimizer state, paths that travel.

    With it anyone can rerun ``drift`` on a shipped bundle or export another preset without training.
    The data path becomes relative to the checkout; the split is kept as a digest (see :func:`_pack_split`).
    """
    import shutil

    from toolkit.data.split import write_manifest

    run = open_run(source)
    if out.exists() and not force:
        raise ToolkitError(f"{out} already exists: pass --force to replace it")
    staging = out.with_name(f".{out.name}.packing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name in PACKED_FILES:
            if (run.path / name).exists():
                shutil.copy2(run.path / name, staging / name)
        data = run.config.get("data", "")
        if data and data != "demo":
            config = {**run.config, "data": portable_path(data, out)}
            (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            _pack_split(run, staging)
        else:
            write_manifest(run.table, staging / "splits.csv")
        run.load_model(compile=False).save(staging / "model.keras")  # uncompiled: no optimizer state
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def _pack_split(run: Run, staging: Path) -> None:
    """Digests instead of the split manifest and of the reference's ids and labels: no dataset metadata."""
    ordered = run.table.sort_values("image_id", kind="stable")
    digest = {"sha256": split_digest(ordered["image_id"], ordered["split"]), "images": len(ordered)}
    (staging / SPLIT_DIGEST).write_text(json.dumps(digest, indent=2) + "\n")
    reference = run.reference()
    for split in ("val", "test"):
        reference[f"{split}_ids_sha256"] = split_digest(reference.pop(f"{split}_ids"))
        reference.pop(f"{split}_labels")
    np.savez(staging / "reference.npz", **reference)
