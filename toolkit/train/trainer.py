"""Two-phase transfer learning from a split file to a run folder with the float reference.

Phase 1 trains the new head on a frozen backbone (on cached backbone features when phase 1 has no
augmentation: the fast path on CPU); phase 2 fine-tunes from the boundary at a lower learning rate.
Both phases keep BatchNorm in inference mode (see :mod:`toolkit.model`). The run is built in
``NAME.partial/`` and renamed to ``NAME/`` when complete, so an interrupted run is never mistaken
for a finished one, and ``resume=True`` picks it up from its last completed epoch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from toolkit.base.classes import CLASSES
from toolkit.base.errors import ToolkitError
from toolkit.base.io import write_json
from toolkit.base.layout import RunLayout
from toolkit.base.metrics import compute_metrics
from toolkit.base.plots import plot_confusion, plot_history
from toolkit.base.runtime import training_device
from toolkit.data.images import load_images
from toolkit.data.layouts import SPLITS
from toolkit.data.readers import check_classes, read_splits
from toolkit.data.split import run_split, write_splits
from toolkit.model.backbones import backbone_spec
from toolkit.model.classifier import build_classifier, predict
from toolkit.model.views import with_views
from toolkit.train.config import TrainConfig
from toolkit.train.decision import fit_decision, fold_into_head
from toolkit.train.distribute import Cluster, Placement, join, place, release
from toolkit.train.fit import average_snapshots, fit_stage, save_state, uses_bn_fix
from toolkit.train.runs import open_run


def _prepare_table(config: TrainConfig, demo_root: Path | None) -> pd.DataFrame:
    source = demo_root or Path(config.data)
    table = run_split(source, config.val, config.test, config.seed, config.limit)
    for split in SPLITS:
        if not (table["split"] == split).any():
            raise ToolkitError(f"the {split} split of {source} is empty")
    check_classes(table[table["split"] == "train"], f"the train split of {source}")
    return table


@contextlib.contextmanager
def _one_process(out: Path) -> Iterator[None]:
    """Hold ``NAME.lock`` beside the run while training: a second process resuming the same run would
    interleave its epochs with the first one's (its history rows, checkpoints and best model)."""
    created = [folder for folder in (out.parent, *out.parent.parents) if not folder.exists()]  # deepest first
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.with_name(out.name + ".lock")
    with open(lock, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ToolkitError(f"{out} is being trained by another process: wait for it or stop it first") from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
            for folder in created:  # a run that failed leaves no empty folders either
                with contextlib.suppress(OSError):
                    folder.rmdir()


def train(
    config: TrainConfig,
    out: Path,
    resume: bool = False,
    force: bool = False,
    demo_root: Path | None = None,
    cluster: Cluster | None = None,
) -> Path:
    """Train ``config`` into the run folder ``out`` and return it (one training job per run at a time).

    With several processes (``cluster``), every one calls this; process 0 alone writes ``out``.
    """
    cluster = cluster or Cluster()
    join(cluster)
    with _one_process(out) if cluster.chief else contextlib.nullcontext():
        try:
            return _train(config, out, resume, force, demo_root, cluster.chief)
        finally:
            release()


def _train(config: TrainConfig, out: Path, resume: bool, force: bool, demo_root: Path | None, chief: bool) -> Path:
    started = time.monotonic()
    partial = out.with_name(out.name + ".partial")
    if out.exists() and not force:
        raise ToolkitError(f"run folder {out} already exists: pass --force to replace it")
    if resume:
        if not RunLayout(partial).config.exists():
            raise ToolkitError(f"nothing to resume: no interrupted run in {partial}")
        config = TrainConfig.from_json(json.loads(RunLayout(partial).config.read_text()))
        table = read_splits(RunLayout(partial).splits).table
    else:
        if partial.exists() and not force and chief:  # the other processes may see process 0's new one
            raise ToolkitError(
                f"an interrupted run is in {partial}: pass --resume to continue it or --force to start over"
            )
        table = _prepare_table(config, demo_root)
    placement = place(config.devices, config.batch_size)  # before any model: its variables go where it says
    keras.utils.set_random_seed(config.seed)  # the head's initial weights and dropout: the same seed, the same run
    input_size = config.input_size or backbone_spec(config.arch).default_size
    if config.bn_fix and not uses_bn_fix(config) and chief:
        print("weights none: BatchNorm trains (the BatchNorm fix only protects pretrained statistics)", flush=True)
    _check_progressive(config, input_size, placement)
    flexible = config.progressive_size > 0
    model = build_classifier(config.arch, input_size, config.weights, config.alpha, config.dropout, flexible)
    if resume or not chief:
        return _fit_and_finish(model, config, table, partial, out, input_size, placement, started, resume)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        record = {**asdict(config), "input_size": input_size, "distribution": placement.record()}
        write_json(RunLayout(partial).config, record)
        write_splits(table, RunLayout(partial).splits)
        return _fit_and_finish(model, config, table, partial, out, input_size, placement, started, resume)
    except BaseException:
        if not RunLayout(partial).state.exists():  # no epoch finished: nothing a --resume could continue
            shutil.rmtree(partial, ignore_errors=True)
        raise


def _fit_and_finish(
    model: keras.Model,
    config: TrainConfig,
    table: pd.DataFrame,
    partial: Path,
    out: Path,
    input_size: int,
    placement: Placement,
    started: float,
    resume: bool,
) -> Path:
    """Both phases from where ``partial`` stands, the optional weight average, the evaluation, the rename."""
    bn_fix = uses_bn_fix(config)
    resumed = resume and RunLayout(partial).state.exists()  # another process may be replacing a stale one
    state = json.loads(RunLayout(partial).state.read_text()) if resumed else {}
    distributed = placement.distributed
    device = f"{len(placement.devices)} devices: " + "; ".join(placement.devices) if distributed else training_device()
    state.update(backend=keras.backend.backend(), device=device, devices=list(placement.devices))
    done_before = set(state.get("done", []))

    arrays = {input_size: _train_and_val(table, input_size, config.resize_mode)}
    val_set = arrays[input_size][1]
    seconds = state.setdefault("seconds", {})
    seconds["prepare"] = seconds.get("prepare", 0.0) + time.monotonic() - started  # split, decode and resize
    stages, optimizer = config.stages(input_size), None
    for index, stage in enumerate(stages):
        if stage.name in done_before:
            continue
        previous = stages[index - 1] if index else None
        if previous and previous.name in done_before and RunLayout(partial).after(previous.name).exists():
            model.load_weights(RunLayout(partial).after(previous.name))
        if stage.size not in arrays:
            arrays[stage.size] = _train_and_val(table, stage.size, config.resize_mode)
        cached = stage.phase == "head" and not config.augment_head and bn_fix and not distributed  # one device only
        features_model = keras.Model(model.input, model.get_layer("pool").output) if cached else None
        carried = optimizer if previous and previous.phase == stage.phase else None
        optimizer = fit_stage(
            model, config, stage, partial, state, *arrays[stage.size], placement, features_model, carried
        )
    if distributed:
        release()
        if not placement.chief:
            return out  # process 0 averages, evaluates and writes the run
        model = keras.saving.load_model(RunLayout(partial).model)  # on one device now
    if config.average_last and "average" not in state:
        average_snapshots(model, partial, state, val_set, always=config.keep_average)
    if config.views > 1:  # on the best model as saved, before its decision rule is fit
        with_views(keras.saving.load_model(RunLayout(partial).model), config.views).save(RunLayout(partial).model)
    evaluating = time.monotonic()
    test_set = _split_arrays(table, "test", input_size, config.resize_mode)
    _finish(partial, table, config, state, {"val": val_set, "test": test_set})
    state["seconds"]["evaluate"] = time.monotonic() - evaluating
    state["seconds"]["wall"] = time.monotonic() - started  # this call only, not earlier calls of a resumed run
    save_state(partial, state)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
    return out


def _check_progressive(config: TrainConfig, input_size: int, placement: Placement) -> None:
    if not config.progressive_size:
        return
    if config.progressive_size >= input_size:
        raise ToolkitError(
            f"progressive size {config.progressive_size} must be smaller than the input size {input_size}"
        )
    if placement.distributed:
        raise ToolkitError("progressive resizing trains on one device: pass --devices 1, or leave it off")


def _train_and_val(table: pd.DataFrame, input_size: int, resize_mode: str) -> list[tuple[np.ndarray, np.ndarray]]:
    return [_split_arrays(table, split, input_size, resize_mode) for split in ("train", "val")]


def _split_arrays(table: pd.DataFrame, split: str, input_size: int, resize_mode: str) -> tuple[np.ndarray, np.ndarray]:
    rows = table[table["split"] == split]
    images = load_images(rows["path"].tolist(), input_size, resize_mode, desc=f"loading {split}").images
    return images, rows["label"].map(CLASSES.index).to_numpy()


def refit_decision(run: Path, objective: str | None = None, views: int | None = None) -> Path:
    """Fit a finished run's decision rule again on val, without retraining, and redo what follows from it.

    For another objective, mirror views (``views``), or a run trained before the rule changed. The
    folded shift and temperature come out of the head first; the reference predictions are recomputed
    here. The run is rebuilt in a copy and swapped in, so an interruption leaves it as it was.
    """
    if not RunLayout(run).model.exists() or not RunLayout(run).state.exists():
        raise ToolkitError(f"{run} is not a finished run folder (no model.keras or state.json)")
    config = TrainConfig.from_json(json.loads(RunLayout(run).config.read_text()))
    config = replace(config, decision=objective or config.decision, views=views or config.views)
    work, old = run.with_name(run.name + ".refit"), run.with_name(run.name + ".old")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(run, work)
    try:
        copied = open_run(work)
        with_views(copied.load_raw_model(), config.views).save(RunLayout(work).model)  # refuses another count
        RunLayout(work).decision.unlink(missing_ok=True)
        write_json(RunLayout(work).config, asdict(config))
        table = copied.table
        state = json.loads(RunLayout(work).state.read_text())
        evaluated = {
            split: _split_arrays(table, split, config.input_size, config.resize_mode) for split in ("val", "test")
        }
        _finish(work, table, config, state, evaluated)
    except BaseException:  # a refused or interrupted refit leaves the run as it was, and no copy beside it
        shutil.rmtree(work, ignore_errors=True)
        raise
    os.replace(run, old)
    os.replace(work, run)
    shutil.rmtree(old)
    return run


def _finish(run: Path, table: pd.DataFrame, config: TrainConfig, state: dict, evaluated: dict) -> None:
    """Fold the decision rule into the best model, then its reference predictions, metrics and plots.

    Clean up what only resuming needed.
    """
    best = keras.saving.load_model(RunLayout(run).model)
    reference, metrics = {"backend": keras.backend.backend(), "device": state.get("device", training_device())}, {}
    if config.decision != "none":
        images, labels = evaluated["val"]
        train_labels = table.loc[table["split"] == "train", "label"].map(CLASSES.index).to_numpy()
        probs = predict(best, images, "fitting the decision on val")
        decision = fit_decision(probs, labels, train_labels, config.decision)
        fold_into_head(best, decision)
        best.save(RunLayout(run).model)
        write_json(RunLayout(run).decision, decision.as_dict())
        print(f"decision: tau {decision.tau:+.2f} by val {config.decision}, temperature {decision.temperature:.2f}")
    for split, (images, labels) in evaluated.items():
        ids = table.loc[table["split"] == split, "image_id"].to_numpy(str)
        probs = predict(best, images, f"reference on {split}").astype(np.float32)
        reference.update({f"{split}_ids": ids, f"{split}_labels": labels, f"{split}_probs": probs})
        metrics[split] = compute_metrics(labels, probs)
    np.savez(RunLayout(run).reference, **reference)
    write_json(RunLayout(run).metrics, {"backend": state["backend"], "device": state["device"], **metrics})
    plot_history(pd.read_csv(RunLayout(run).history), RunLayout(run).curves)
    plot_confusion(metrics["test"]["confusion_matrix"], RunLayout(run).confusion, f"{config.arch}, test split")
    for path in RunLayout(run).leftovers():
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
