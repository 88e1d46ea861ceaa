"""Finished training runs as the later stages read them: config, split file, metrics and the model.

Export, drift and evaluate all start from a run folder written by :mod:`toolkit.train.trainer`; this module
is their one way in, with the errors a wrong folder deserves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.base.classes import CLASSES
from toolkit.base.errors import ToolkitError
from toolkit.base.io import write_json
from toolkit.base.layout import RunLayout
from toolkit.base.paths import find_portable, portable_path
from toolkit.data.readers import read_splits
from toolkit.data.split import run_split, write_splits
from toolkit.train.decision import Decision, unfold_from_head

RUNS_ROOT = Path("runs")
TRAIN_HINT = "train one with `python -m toolkit train --demo --out runs/demo` (or run `make demo`)"


def latest_run(root: Path = RUNS_ROOT) -> Path:
    """The most recently finished run under ``root`` (interrupted ``.partial`` runs do not count)."""
    finished = [p.parent for p in root.glob("*/model.keras") if not p.parent.name.endswith(".partial")]
    if not finished:
        raise ToolkitError(f"no finished training run under {root}/: {TRAIN_HINT}")
    return max(finished, key=lambda p: RunLayout(p).model.stat().st_mtime)


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
    def files(self) -> RunLayout:
        return RunLayout(self.path)

    @property
    def input_size(self) -> int:
        return int(self.config["input_size"])

    @property
    def resize_mode(self) -> str:
        return self.config.get("resize_mode", "squash")

    @cached_property
    def metrics(self) -> dict:
        path = self.files.metrics
        return json.loads(path.read_text()) if path.exists() else {}

    @cached_property
    def model_sha256(self) -> str:
        """What a bundle records of the model it was exported from, so drift can tell a changed run."""
        return hashlib.sha256(self.files.model.read_bytes()).hexdigest()

    @cached_property
    def decision(self) -> dict | None:
        """The decision rule folded into the model's head (``decision.json``), if the run fitted one."""
        path = self.files.decision
        return json.loads(path.read_text()) if path.exists() else None

    def rows(self, split: str) -> pd.DataFrame:
        """The manifest rows of one split, in image-id order, with ``label_index``."""
        rows = self.table[self.table["split"] == split].sort_values("image_id", kind="stable")
        if rows.empty:
            raise ToolkitError(f"the {split} split of {self.files.splits} is empty")
        return rows.assign(label_index=rows["label"].map(CLASSES.index).to_numpy())

    def reference(self) -> dict[str, np.ndarray]:
        """The float reference; a packed run's ids and labels come from its rebuilt split, checked by digest."""
        path = self.files.reference
        if not path.exists():
            raise ToolkitError(f"no reference.npz in {self.path}: retrain the run to get the float reference")
        with np.load(path) as npz:
            reference = {key: npz[key] for key in npz.files}
        for split in ("val", "test"):
            if f"{split}_ids_sha256" in reference:  # packed: its probabilities are in image-id order
                rows = self.rows(split)
                if split_digest(rows["image_id"]) != str(reference.pop(f"{split}_ids_sha256")):
                    raise ToolkitError(f"the {split} split of {self.path} does not match its reference.npz")
                reference[f"{split}_ids"] = rows["image_id"].to_numpy(str)
                reference[f"{split}_labels"] = rows["label_index"].to_numpy()
        return reference

    def load_model(self, compile: bool = True):
        import keras

        import toolkit.model.views  # noqa: F401 (registers the layers of a model that averages mirror views)

        path = self.files.model
        if not zipfile.is_zipfile(path):  # Keras would call a truncated or foreign file "File not found"
            raise ToolkitError(f"{path} is not a .keras archive (truncated or overwritten?): retrain, or restore it")
        try:
            return keras.saving.load_model(path, compile=compile)
        except Exception as error:  # Keras raises ValueError, OSError, zipfile.BadZipFile and more
            raise ToolkitError(f"cannot load {path}: {str(error).splitlines()[0] or type(error).__name__}") from None

    def load_raw_model(self):
        """The best model with its folded decision rule (prior shift, temperature) taken out of the head."""
        model = self.load_model()
        if self.decision is not None:
            unfold_from_head(model, Decision(**self.decision))
        return model


def open_run(path: Path | None = None) -> Run:
    """The run at ``path`` (default: the latest under ``runs/``), checked to be a finished run."""
    path = Path(path) if path is not None else latest_run()
    if not path.is_dir():
        raise ToolkitError(f"run folder not found: {path}")
    files = RunLayout(path)
    packed = files.split_digest.exists()
    for needed in (files.model, files.config, files.split_digest if packed else files.splits):
        if not needed.exists():
            raise ToolkitError(f"no {needed.name} in {path}: is it a finished training run? ({TRAIN_HINT})")
    try:
        config = json.loads(files.config.read_text())
    except json.JSONDecodeError as error:
        raise ToolkitError(f"cannot parse {files.config}: {error}") from None
    table = _rebuilt_split(path, config) if packed else read_splits(files.splits).table
    return Run(path=path, config=config, table=table)


def check_same_split(runs: list[Run], split: str, purpose: str) -> None:
    """Refuse runs whose ``split`` holds other images than the first run's: their predictions do not line up."""
    first = runs[0].rows(split)["image_id"].to_numpy()
    for run in runs[1:]:
        if not np.array_equal(run.rows(split)["image_id"].to_numpy(), first):
            raise ToolkitError(f"{run.path} was split differently from {runs[0].path}: {purpose} needs one {split} set")


def split_digest(ids: object, splits: object = ()) -> str:
    """sha256 of image ids (with their splits, if given), in the order given."""
    text = "\n".join(f"{i},{s}" for i, s in zip(ids, splits, strict=True)) if len(splits) else "\n".join(ids)
    return hashlib.sha256(text.encode()).hexdigest()


def _rebuilt_split(path: Path, config: dict) -> pd.DataFrame:
    """A packed run keeps no split file, which would copy the dataset's metadata into the repository.

    Its split is rebuilt from the data as training built it (the split is deterministic) and checked
    against the digest the pack recorded.
    """
    data = find_portable(config["data"], path)
    if not data.exists():
        raise ToolkitError(f"{path} rebuilds its split from {data}, which does not exist: put the dataset there")
    table = run_split(data, **{key: config[key] for key in ("val", "test", "seed", "limit") if key in config})
    expected = json.loads(RunLayout(path).split_digest.read_text())["sha256"]
    ordered = table.sort_values("image_id", kind="stable")
    if split_digest(ordered["image_id"], ordered["split"]) != expected:
        raise ToolkitError(f"the split rebuilt from {data} is not the one {path} was trained on: is it the same data?")
    return table


def pack_run(source: Path, out: Path, force: bool = False) -> Path:
    """A finished run as it can be committed: the float model without optimizer state, paths that travel.

    With it anyone can rerun ``drift`` on a shipped bundle or export another preset without training.
    The data path becomes relative to the checkout; the split is kept as a digest (see :func:`_pack_split`).
    """
    run = open_run(source)
    if out.exists() and not force:
        raise ToolkitError(f"{out} already exists: pass --force to replace it")
    staging = out.with_name(f".{out.name}.packing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for path in run.files.committable():
            if path.exists():
                shutil.copy2(path, staging / path.name)
        data = run.config.get("data", "")
        if data and data != "demo":
            config = {**run.config, "data": portable_path(data, out)}
            write_json(RunLayout(staging).config, config)
            _pack_split(run, staging)
        else:
            write_splits(run.table, RunLayout(staging).splits)
        run.load_model(compile=False).save(RunLayout(staging).model)  # uncompiled: no optimizer state
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def _pack_split(run: Run, staging: Path) -> None:
    """Digests instead of the split file and of the reference's ids and labels: no dataset metadata."""
    ordered = run.table.sort_values("image_id", kind="stable")
    digest = {"sha256": split_digest(ordered["image_id"], ordered["split"]), "images": len(ordered)}
    write_json(RunLayout(staging).split_digest, digest)
    reference = run.reference()
    for split in ("val", "test"):  # in image-id order, which the rebuilt split gives whatever the run's row order
        ids = reference.pop(f"{split}_ids")
        order = np.argsort(ids, kind="stable")
        reference[f"{split}_probs"] = reference[f"{split}_probs"][order]
        reference[f"{split}_ids_sha256"] = split_digest(ids[order])
        reference.pop(f"{split}_labels")
    np.savez(RunLayout(staging).reference, **reference)
