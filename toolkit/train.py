"""Two-phase transfer learning from a split manifest to a run folder with the float reference.

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
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from toolkit.calibrate import OBJECTIVES, fit_decision, fold_into_head
from toolkit.classes import CLASSES
from toolkit.data.images import RESIZE_MODES, load_images
from toolkit.data.pipeline import AugmentConfig, ImageBatches, check_mixup, class_weights
from toolkit.data.readers import SPLITS, check_classes, read_manifest
from toolkit.data.split import run_split, write_manifest
from toolkit.errors import ToolkitError
from toolkit.evaluate import compute_metrics, plot_confusion, plot_history, write_json
from toolkit.model import backbone_spec, build_classifier, set_phase
from toolkit.runs import open_run

PHASES = ("head", "finetune")
SNAPSHOTS = "snapshots"  # the last fine-tune epochs' weights, while a run with ``average_last`` trains


@dataclass(frozen=True)
class TrainConfig:
    """Everything needed to rerun a training run; saved as ``config.json`` in the run folder."""

    data: str = ""  # any layout the data layer reads, or a split manifest
    arch: str = "mobilenet_v2"
    alpha: float = 1.0
    input_size: int = 0  # 0: the backbone's default
    weights: str = "imagenet"  # imagenet, none, or a path
    resize_mode: str = "squash"
    boundary: str = ""  # "": the backbone's default; a name or a layer count
    epochs_head: int = 3
    epochs_finetune: int = 10
    batch_size: int = 32
    lr_head: float = 1e-3
    lr_finetune: float = 1e-4
    optimizer: str = "adam"  # adam or adamw
    schedule: str = "plateau"  # plateau: cut on a val-loss plateau; cosine: one-epoch warm-up, then cosine to 0
    weight_decay: float = 1e-4  # adamw only
    label_smoothing: float = 0.0
    dropout: float = 0.2
    imbalance: str = "class_weight"  # class_weight, oversample or none
    class_weight_power: float = 1.0  # 0.5: square-root class weights
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    mixup: float = 0.0  # > 0: Beta parameter of mixup in the fine-tune (0.2 is usual); 0: off
    augment_head: bool = False  # False: phase 1 trains on cached backbone features
    bn_fix: bool = True  # only with pretrained weights: from scratch, BatchNorm must learn its statistics
    decision: str = "macro_f1"  # prior shift chosen on val by this metric, then temperature; "none": neither
    patience: int = 5
    average_last: int = 0  # N > 0: also try the mean weights of the last N fine-tune epochs, kept if val prefers it
    limit: int = 0  # 0: no limit; else at most this many images per split
    val: float = 0.15
    test: float = 0.15
    seed: int = 0

    @classmethod
    def from_json(cls, payload: dict) -> TrainConfig:
        augment = payload.get("augment")
        return cls(**{**payload, "augment": AugmentConfig(**augment) if augment else None})


def training_device() -> str:
    """Which device trains under the current Keras backend, in words, for the record."""
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {device.device_kind}"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"gpu: {gpus[0].name}" if gpus else f"cpu: {platform.processor() or platform.machine()}"


def predict(model: keras.Model, images: np.ndarray, desc: str = "predicting", batch_size: int = 64) -> np.ndarray:
    """``model`` over ``images`` in batches, with a progress bar; the same code on every backend."""
    starts = range(0, len(images), batch_size)
    batches = (np.asarray(model.predict_on_batch(images[i : i + batch_size])) for i in starts)
    return np.concatenate(list(tqdm(batches, total=len(starts), desc=desc, leave=False, disable=None)))


def _optimizer(config: TrainConfig, peak: float, epochs: int, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    learning_rate = peak
    if config.schedule == "cosine":  # a warm-up keeps the first large steps from wrecking pretrained features
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0, max(1, (epochs - 1) * steps_per_epoch), warmup_target=peak, warmup_steps=steps_per_epoch
        )
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(learning_rate)


class EpochReport(keras.callbacks.Callback):
    """Validation balanced accuracy and loss after each epoch, the best full model, the history row.

    It computes ``val_loss`` and ``val_balanced_accuracy`` itself (one pass over the validation
    set) and puts them in the logs for the Keras callbacks after it. With ``keep_snapshots`` it also
    keeps the weights of the last that many epochs for :func:`_average_snapshots`.
    """

    def __init__(
        self,
        full_model,
        val_inputs,
        val_labels,
        run: Path,
        phase: str,
        state: dict,
        smoothing: float,
        clock: PhaseClock,
        keep_snapshots: int = 0,
    ):
        super().__init__()
        self.full_model, self.val_inputs, self.val_labels = full_model, val_inputs, val_labels
        self.run, self.phase, self.state, self.smoothing, self.clock = run, phase, state, smoothing, clock
        self.keep_snapshots = keep_snapshots

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from sklearn.metrics import balanced_accuracy_score

        logs = logs if logs is not None else {}
        probs = predict(self.model, self.val_inputs, "validating")
        target = np.eye(len(CLASSES))[self.val_labels] * (1 - self.smoothing) + self.smoothing / len(CLASSES)
        logs["val_loss"] = float(-(target * np.log(np.clip(probs, 1e-7, 1))).sum(axis=1).mean())
        logs["val_balanced_accuracy"] = float(balanced_accuracy_score(self.val_labels, probs.argmax(axis=1)))
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"phase": self.phase, "epoch": epoch + 1, "learning_rate": learning_rate, **logs}
        history = self.run / "history.csv"
        rows = pd.read_csv(history) if history.exists() else pd.DataFrame()
        if len(rows):
            rows = rows[~((rows["phase"] == self.phase) & (rows["epoch"] == epoch + 1))]
        pd.concat([rows, pd.DataFrame([row])]).to_csv(history, index=False)
        best = self.state.get("best_val_balanced_accuracy", -1.0)
        marker = ""
        if logs["val_balanced_accuracy"] > best:
            self.state["best_val_balanced_accuracy"] = logs["val_balanced_accuracy"]
            self.full_model.save(self.run / "model.keras")
            marker = "  * best, saved"
        if self.keep_snapshots:
            self._snapshot(epoch + 1)
        self.clock.charge()
        _save_state(self.run, self.state)
        print(
            f"{self.phase} epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f}  "
            f"val_loss {logs['val_loss']:.4f}  "
            f"val_balanced_accuracy {logs['val_balanced_accuracy']:.4f}  lr {learning_rate:.2g}{marker}",
            flush=True,
        )

    def _snapshot(self, epoch: int) -> None:
        folder = self.run / SNAPSHOTS
        folder.mkdir(exist_ok=True)
        np.savez(folder / f"epoch_{epoch:03d}.npz", *self.full_model.get_weights())
        for old in sorted(folder.glob("epoch_*.npz"))[: -self.keep_snapshots]:
            old.unlink()


class PhaseClock:
    """Seconds spent in a phase, summed over resumed attempts and charged every epoch, so an attempt
    killed mid-phase (a session ending) still counts."""

    def __init__(self, state: dict, phase: str):
        self.seconds = state.setdefault("seconds", {})
        self.phase, self.before, self.started = phase, self.seconds.get(phase, 0.0), time.monotonic()

    def charge(self) -> None:
        self.seconds[self.phase] = self.before + time.monotonic() - self.started


def _save_state(run: Path, state: dict) -> None:
    tmp = run / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, run / "state.json")


def _prepare_table(config: TrainConfig, demo_root: Path | None) -> pd.DataFrame:
    source = demo_root or Path(config.data)
    table = run_split(source, config.val, config.test, config.seed, config.limit)
    for split in SPLITS:
        if not (table["split"] == split).any():
            raise ToolkitError(f"the {split} split of {source} is empty")
    check_classes(table[table["split"] == "train"], f"the train split of {source}")
    return table


def _validate(config: TrainConfig) -> None:
    backbone_spec(config.arch)
    if config.decision not in (*OBJECTIVES, "none"):
        raise ToolkitError(f"unknown decision {config.decision!r}; expected one of {', '.join(OBJECTIVES)} or none")
    if config.resize_mode not in RESIZE_MODES:
        raise ToolkitError(f"unknown resize mode {config.resize_mode!r}; expected one of {', '.join(RESIZE_MODES)}")
    if config.optimizer not in ("adam", "adamw"):
        raise ToolkitError(f"unknown optimizer {config.optimizer!r}; expected adam or adamw")
    if config.schedule not in ("plateau", "cosine"):
        raise ToolkitError(f"unknown schedule {config.schedule!r}; expected plateau or cosine")
    check_mixup(config.mixup)
    if config.average_last < 0:
        raise ToolkitError(f"average_last must be 0 (off) or a number of epochs, not {config.average_last}")


def uses_bn_fix(config: TrainConfig) -> bool:
    """The fix keeps pretrained statistics; a backbone trained from scratch has none to keep."""
    return config.bn_fix and config.weights != "none"


def _fit_phase(model, config, phase, run, state, train, val, features_model=None) -> None:
    """One phase: compile, fit (resuming from its backup), and mark it done in the state."""
    clock = PhaseClock(state, phase)
    epochs = config.epochs_head if phase == "head" else config.epochs_finetune
    boundary = config.boundary or backbone_spec(config.arch).default_boundary
    set_phase(model, config.arch, phase, boundary, uses_bn_fix(config))
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    learning_rate = config.lr_head if phase == "head" else config.lr_finetune
    (train_images, train_labels), (val_images, val_labels) = train, val
    if features_model is not None:  # the fast path: the frozen backbone runs once, the head trains on its output
        head = model.get_layer("head")
        fit_model = keras.Sequential([keras.Input(features_model.output.shape[1:]), head])
        val_inputs = predict(features_model, val_images, "caching val features")
        features = predict(features_model, train_images, "caching train features")
        targets = np.eye(len(CLASSES), dtype=np.float32)[train_labels]
        weights = (
            class_weights(train_labels, config.class_weight_power)[train_labels]
            if config.imbalance == "class_weight"
            else None
        )
        data = {"x": features, "y": targets, "sample_weight": weights, "batch_size": config.batch_size, "shuffle": True}
    else:
        fit_model, val_inputs = model, val_images
        augment = config.augment if phase == "finetune" or config.augment_head else None
        batches = ImageBatches(
            train_images,
            train_labels,
            config.batch_size,
            shuffle=True,
            augment=augment,
            imbalance=config.imbalance,
            class_weight_power=config.class_weight_power,
            seed=config.seed + PHASES.index(phase),
            mixup=config.mixup if phase == "finetune" else 0.0,
        )
        data = {"x": batches}
    steps_per_epoch = len(data["x"]) if features_model is None else -(-len(features) // config.batch_size)
    fit_model.compile(_optimizer(config, learning_rate, epochs, steps_per_epoch), loss)
    # Built now, not in the first step: TensorFlow traces a step that creates variables twice (14 s for a
    # small MobileNetV2 on 2 cores).
    fit_model.optimizer.build(fit_model.trainable_variables)
    keep = config.average_last if phase == "finetune" else 0
    callbacks = [
        EpochReport(model, val_inputs, val_labels, run, phase, state, config.label_smoothing, clock, keep),
        keras.callbacks.BackupAndRestore(str(run / f"backup_{phase}")),
        keras.callbacks.EarlyStopping("val_balanced_accuracy", patience=config.patience, mode="max"),
    ]
    if config.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.3, patience=max(1, config.patience // 2))
        )
    verbose = 1 if sys.stdout.isatty() else 2  # a progress bar on a terminal, a line per epoch in a log
    fit_model.fit(**data, epochs=epochs, callbacks=callbacks, verbose=verbose if features_model is None else 0)
    if phase == "head":
        model.save_weights(run / "after_head.weights.h5")
    clock.charge()
    state["done"] = [*state.get("done", []), phase]
    _save_state(run, state)


@contextlib.contextmanager
def _one_process(out: Path) -> Iterator[None]:
    """Hold ``NAME.lock`` beside the run while training: a second process resuming the same run would
    interleave its epochs with the first one's (its history rows, checkpoints and best model)."""
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


def train(
    config: TrainConfig, out: Path, resume: bool = False, force: bool = False, demo_root: Path | None = None
) -> Path:
    """Train ``config`` into the run folder ``out`` and return it (one process per run at a time)."""
    with _one_process(out):
        return _train(config, out, resume, force, demo_root)


def _train(config: TrainConfig, out: Path, resume: bool, force: bool, demo_root: Path | None) -> Path:
    started = time.monotonic()
    partial = out.with_name(out.name + ".partial")
    if out.exists() and not force:
        raise ToolkitError(f"run folder {out} already exists: pass --force to replace it")
    if resume:
        if not (partial / "config.json").exists():
            raise ToolkitError(f"nothing to resume: no interrupted run in {partial}")
        config = TrainConfig.from_json(json.loads((partial / "config.json").read_text()))
        table = read_manifest(partial / "splits.csv").table
    else:
        if partial.exists() and not force:
            raise ToolkitError(
                f"an interrupted run is in {partial}: pass --resume to continue it or --force to start over"
            )
        _validate(config)
        table = _prepare_table(config, demo_root)
    keras.utils.set_random_seed(config.seed)  # the head's initial weights and dropout: the same seed, the same run
    input_size = config.input_size or backbone_spec(config.arch).default_size
    bn_fix = uses_bn_fix(config)
    if config.bn_fix and not bn_fix:
        print("weights none: BatchNorm trains (the BatchNorm fix only protects pretrained statistics)", flush=True)
    model = build_classifier(config.arch, input_size, config.weights, config.alpha, config.dropout)
    if not resume:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        write_json(partial / "config.json", {**asdict(config), "input_size": input_size})
        write_manifest(table, partial / "splits.csv")
    state = json.loads((partial / "state.json").read_text()) if (partial / "state.json").exists() else {}
    state.update(backend=keras.backend.backend(), device=training_device())

    train_set, val_set = (_split_arrays(table, split, input_size, config.resize_mode) for split in ("train", "val"))
    seconds = state.setdefault("seconds", {})
    seconds["prepare"] = seconds.get("prepare", 0.0) + time.monotonic() - started  # split, decode and resize
    for phase in PHASES:
        if phase in state.get("done", []):
            continue
        if phase == "finetune" and (partial / "after_head.weights.h5").exists():
            model.load_weights(partial / "after_head.weights.h5")
        cached = phase == "head" and not config.augment_head and bn_fix
        features_model = keras.Model(model.input, model.get_layer("pool").output) if cached else None
        _fit_phase(model, config, phase, partial, state, train_set, val_set, features_model)
    if config.average_last and "average" not in state:
        _average_snapshots(model, partial, state, val_set)
    evaluating = time.monotonic()
    test_set = _split_arrays(table, "test", input_size, config.resize_mode)
    _finish(partial, table, config, state, {"val": val_set, "test": test_set})
    state["seconds"]["evaluate"] = time.monotonic() - evaluating
    state["seconds"]["wall"] = time.monotonic() - started  # this call only, not earlier calls of a resumed run
    _save_state(partial, state)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
    return out


def mean_weights(weight_lists: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The element-wise mean of several ``get_weights()`` lists of one architecture."""
    return [np.mean(arrays, axis=0) for arrays in zip(*weight_lists, strict=True)]


def _average_snapshots(model: keras.Model, run: Path, state: dict, val: tuple[np.ndarray, np.ndarray]) -> None:
    """Average the weights of the last fine-tune epochs and keep the mean if val balanced accuracy beats the best epoch.

    Weight averaging along the tail of the schedule, as in SWA, finds a flatter point than any one
    epoch. SWA's BatchNorm update is not needed with the BatchNorm fix: every snapshot has the same
    pretrained statistics (a backbone trained from scratch averages them too, and val decides).
    """
    from sklearn.metrics import balanced_accuracy_score

    paths = sorted((run / SNAPSHOTS).glob("epoch_*.npz"))
    state["average"] = {"epochs": [int(path.stem.split("_")[1]) for path in paths], "kept": False}
    if len(paths) >= 2:  # early stopping can leave fewer epochs than asked for
        snapshots = []
        for path in paths:
            with np.load(path) as snapshot:
                snapshots.append([snapshot[f"arr_{i}"] for i in range(len(snapshot.files))])
        model.set_weights(mean_weights(snapshots))
        images, labels = val
        probs = predict(model, images, "validating averaged weights")
        score = float(balanced_accuracy_score(labels, probs.argmax(axis=1)))
        kept = score > state["best_val_balanced_accuracy"]
        if kept:
            model.save(run / "model.keras")
            state["best_val_balanced_accuracy"] = score
        state["average"].update(val_balanced_accuracy=score, kept=kept)
        verdict = "kept" if kept else "not kept: the best epoch stays"
        print(
            f"mean of the last {len(paths)} fine-tune epochs: val_balanced_accuracy {score:.4f}, {verdict}", flush=True
        )
    _save_state(run, state)


def _split_arrays(table: pd.DataFrame, split: str, input_size: int, resize_mode: str) -> tuple[np.ndarray, np.ndarray]:
    rows = table[table["split"] == split]
    images = load_images(rows["path"].tolist(), input_size, resize_mode, desc=f"loading {split}").images
    return images, rows["label"].map(CLASSES.index).to_numpy()


def refit_decision(run: Path, objective: str | None = None) -> Path:
    """Fit a finished run's decision rule again on val, without retraining, and redo what follows from it.

    For another objective, or a run trained before the rule changed. The folded shift and
    temperature come out of the head first; the reference predictions are recomputed here. The run
    is rebuilt in a copy and swapped in, so an interruption leaves it as it was.
    """
    if not (run / "model.keras").exists() or not (run / "state.json").exists():
        raise ToolkitError(f"{run} is not a finished run folder (no model.keras or state.json)")
    config = TrainConfig.from_json(json.loads((run / "config.json").read_text()))
    config = replace(config, decision=objective or config.decision)
    _validate(config)
    work, old = run.with_name(run.name + ".refit"), run.with_name(run.name + ".old")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(run, work)
    copied = open_run(work)
    if copied.decision is not None:
        copied.load_raw_model().save(work / "model.keras")
        (work / "decision.json").unlink()
    write_json(work / "config.json", asdict(config))
    table = copied.table
    state = json.loads((work / "state.json").read_text())
    evaluated = {split: _split_arrays(table, split, config.input_size, config.resize_mode) for split in ("val", "test")}
    _finish(work, table, config, state, evaluated)
    os.replace(run, old)
    os.replace(work, run)
    shutil.rmtree(old)
    return run


def _finish(run: Path, table: pd.DataFrame, config: TrainConfig, state: dict, evaluated: dict) -> None:
    """Fold the decision rule into the best model, then its reference predictions, metrics and plots.

    Clean up what only resuming needed.
    """
    best = keras.saving.load_model(run / "model.keras")
    reference, metrics = {"backend": keras.backend.backend(), "device": training_device()}, {}  # where it ran
    if config.decision != "none":
        images, labels = evaluated["val"]
        train_labels = table.loc[table["split"] == "train", "label"].map(CLASSES.index).to_numpy()
        probs = predict(best, images, "fitting the decision on val")
        decision = fit_decision(probs, labels, train_labels, config.decision)
        fold_into_head(best, decision)
        best.save(run / "model.keras")
        write_json(run / "decision.json", decision.as_dict())
        print(f"decision: tau {decision.tau:+.2f} by val {config.decision}, temperature {decision.temperature:.2f}")
    for split, (images, labels) in evaluated.items():
        ids = table.loc[table["split"] == split, "image_id"].to_numpy(str)
        probs = predict(best, images, f"reference on {split}").astype(np.float32)
        reference.update({f"{split}_ids": ids, f"{split}_labels": labels, f"{split}_probs": probs})
        metrics[split] = compute_metrics(labels, probs)
    np.savez(run / "reference.npz", **reference)
    write_json(run / "metrics.json", {"backend": state["backend"], "device": state["device"], **metrics})
    plot_history(pd.read_csv(run / "history.csv"), run / "training_curves.png")
    plot_confusion(metrics["test"]["confusion_matrix"], run / "confusion_matrix.png", f"{config.arch}, test split")
    for leftover in ("after_head.weights.h5", "backup_head", "backup_finetune", SNAPSHOTS):
        path = run / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
