"""One training phase with Keras's ``fit``: optimizer and schedule, the per-epoch report, and weight averaging."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from toolkit.base.classes import CLASSES
from toolkit.base.io import write_atomic, write_text
from toolkit.base.layout import RunLayout
from toolkit.data.balance import fixed_sample_weights
from toolkit.data.pipeline import ImageBatches
from toolkit.model.backbones import backbone_spec
from toolkit.model.classifier import at_size, predict, set_phase
from toolkit.train.config import PHASES, Stage, TrainConfig
from toolkit.train.distribute import LocalCopy, Placement, one_device
from toolkit.train.ema import AverageAtEpochEnd, ema_options
from toolkit.train.losses import training_loss


def _optimizer(config: TrainConfig, phase: str, epochs: int, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    peak = config.lr_head if phase == "head" else config.lr_finetune
    ema = ema_options(config.ema if phase == "finetune" else 0.0)  # a head's few epochs have nothing to average
    learning_rate = peak
    if config.schedule == "cosine":  # a warm-up keeps the first large steps from wrecking pretrained features
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0, max(1, (epochs - 1) * steps_per_epoch), warmup_target=peak, warmup_steps=steps_per_epoch
        )
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay, **ema)
    return keras.optimizers.Adam(learning_rate, **ema)


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
        local: LocalCopy,
        chief: bool,
        keep_snapshots: int = 0,
    ):
        super().__init__()
        self.full_model, self.val_inputs, self.val_labels = full_model, val_inputs, val_labels
        self.run, self.phase, self.state, self.smoothing, self.clock = run, phase, state, smoothing, clock
        self.local, self.chief, self.keep_snapshots = local, chief, keep_snapshots
        self.saved = local.copy if local.distributed else full_model  # what process 0 writes

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from sklearn.metrics import balanced_accuracy_score

        logs = logs if logs is not None else {}
        probs = self.local.predict(self.val_inputs, "validating")
        target = np.eye(len(CLASSES))[self.val_labels] * (1 - self.smoothing) + self.smoothing / len(CLASSES)
        logs["val_loss"] = float(-(target * np.log(np.clip(probs, 1e-7, 1))).sum(axis=1).mean())
        logs["val_balanced_accuracy"] = float(balanced_accuracy_score(self.val_labels, probs.argmax(axis=1)))
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if self.chief:  # every process scores val the same way; process 0 alone writes, outside the distribution
            with one_device():
                self._record(epoch, logs, learning_rate)

    def _record(self, epoch: int, logs: dict, learning_rate: float) -> None:
        """The history row, the best model, the snapshot, the state and the epoch's line."""
        row = {"phase": self.phase, "epoch": epoch + 1, "learning_rate": learning_rate, **logs}
        history = RunLayout(self.run).history
        rows = pd.read_csv(history) if history.exists() else pd.DataFrame()
        if len(rows):
            rows = rows[~((rows["phase"] == self.phase) & (rows["epoch"] == epoch + 1))]
        pd.concat([rows, pd.DataFrame([row])]).to_csv(history, index=False)
        best = self.state.get("best_val_balanced_accuracy", -1.0)
        marker = ""
        if logs["val_balanced_accuracy"] > best:
            self.state["best_val_balanced_accuracy"] = logs["val_balanced_accuracy"]
            write_atomic(RunLayout(self.run).model, self.saved.save, suffix=".keras")
            marker = "  * best, saved"
        if self.keep_snapshots:
            self._snapshot(epoch + 1)
        self.clock.charge()
        save_state(self.run, self.state)
        print(
            f"{self.phase} epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f}  "
            f"val_loss {logs['val_loss']:.4f}  "
            f"val_balanced_accuracy {logs['val_balanced_accuracy']:.4f}  lr {learning_rate:.2g}{marker}",
            flush=True,
        )

    def _snapshot(self, epoch: int) -> None:
        folder = RunLayout(self.run).snapshots
        folder.mkdir(exist_ok=True)
        np.savez(folder / f"epoch_{epoch:03d}.npz", *self.saved.get_weights())
        for old in sorted(folder.glob("epoch_*.npz"))[: -self.keep_snapshots]:
            old.unlink()


class ChiefBackup(keras.callbacks.BackupAndRestore):
    """Every process restores from the backup; process 0 alone writes it (from the copy the epoch's report
    synced: see :class:`LocalCopy`) and removes it."""

    def __init__(self, backup_dir: str, local: LocalCopy, chief: bool):
        super().__init__(backup_dir)
        self.local, self.chief = local, chief

    def _save_model(self) -> None:
        """Keras's own writes in place: a process killed mid-write left a truncated file ``--resume`` could not open."""
        if not self.chief:
            return
        Path(self.backup_dir).mkdir(parents=True, exist_ok=True)
        with one_device():
            save_weights(self.local.copy, self._weights_path)
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}  # what Keras's restore reads
        write_text(self._training_metadata_path, json.dumps(metadata))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.chief:
            super().on_train_end(logs)


class PhaseClock:
    """Seconds spent in a phase, summed over resumed attempts and charged every epoch, so an attempt
    killed mid-phase (a session ending) still counts."""

    def __init__(self, state: dict, phase: str):
        self.seconds = state.setdefault("seconds", {})
        self.phase, self.before, self.started = phase, self.seconds.get(phase, 0.0), time.monotonic()

    def charge(self) -> None:
        self.seconds[self.phase] = self.before + time.monotonic() - self.started


def save_weights(model: keras.Model, path: str | Path) -> None:
    """``model``'s weights, renamed into place once whole: training is killed at any moment, then resumed."""
    write_atomic(path, lambda temporary: model.save_weights(temporary, overwrite=True), suffix=".weights.h5")


def save_state(run: Path, state: dict) -> None:
    write_text(RunLayout(run).state, json.dumps(state))


def uses_bn_fix(config: TrainConfig) -> bool:
    """The fix keeps pretrained statistics; a backbone trained from scratch has none to keep."""
    return config.bn_fix and config.weights != "none"


def _fit_inputs(model, config, phase, train, val_images, placement: Placement, features_model=None, first_epoch=0):
    """What ``fit`` trains (the model, or its head on cached features), its val inputs and its ``fit`` data."""
    train_images, train_labels = train
    if features_model is not None:  # the fast path: the frozen backbone runs once, the head trains on its output
        head = model.get_layer("head")
        fit_model = keras.Sequential([keras.Input(features_model.output.shape[1:]), head])
        val_inputs = predict(features_model, val_images, "caching val features")
        features = predict(features_model, train_images, "caching train features")
        targets = np.eye(len(CLASSES), dtype=np.float32)[train_labels]
        weights = fixed_sample_weights(train_labels, config.imbalance, config.class_weight_power)
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
            seed=config.seed + PHASES.index(phase) + (config.finetune_seed if phase == "finetune" else 0),
            mixup=config.mixup if phase == "finetune" else 0.0,
            shard=(placement.process_id, placement.processes),
            multiple_of=len(placement.devices),
            epoch=first_epoch,
        )
        data = {"x": batches, "shuffle": False}  # the batches shuffle themselves, by seed; Keras would draw its own
    return fit_model, val_inputs, data


def fit_stage(
    model, config, stage: Stage, run, state, train, val, placement: Placement, features_model=None, optimizer=None
) -> keras.optimizers.Optimizer:
    """One stage: compile, fit (resuming from its backup), and mark it done in the state.

    ``optimizer``: the previous stage's, when this one carries on its phase at another size (its moments and
    its schedule's step go on). Returns the optimizer, for the next stage.
    """
    phase, clock, final_size = stage.phase, PhaseClock(state, stage.name), model.input_shape[1]
    epochs = config.epochs_head if phase == "head" else config.epochs_finetune
    boundary = config.boundary or backbone_spec(config.arch).default_boundary
    set_phase(model, config.arch, phase, boundary, uses_bn_fix(config))
    loss = training_loss(config.imbalance, config.label_smoothing, train[1])
    trained = model if stage.size == final_size else at_size(model, stage.size)
    fit_model, val_inputs, data = _fit_inputs(
        trained, config, phase, train, val[0], placement, features_model, stage.first_epoch
    )
    val_labels = val[1]
    steps_per_epoch = len(data["x"]) if features_model is None else -(-len(data["x"]) // config.batch_size)
    fit_model.compile(optimizer or _optimizer(config, phase, epochs, steps_per_epoch), loss)
    if not fit_model.optimizer.built:
        # Built now, not in the first step: TensorFlow traces a step that creates variables twice (14 s for a
        # small MobileNetV2 on 2 cores).
        fit_model.optimizer.build(fit_model.trainable_variables)
        fit_model.optimizer.iterations.assign(stage.first_epoch * steps_per_epoch)  # resumed after a small stage
    keep = config.average_last if phase == "finetune" and stage.size == final_size else 0
    local, chief = LocalCopy(fit_model, placement), placement.chief
    averaging = [AverageAtEpochEnd()] if fit_model.optimizer.use_ema else []  # first: the others see the average
    callbacks = [
        *averaging,
        EpochReport(
            model, val_inputs, val_labels, run, stage.name, state, config.label_smoothing, clock, local, chief, keep
        ),
        ChiefBackup(str(RunLayout(run).backup(stage.name)), local, chief),
        keras.callbacks.EarlyStopping("val_balanced_accuracy", patience=config.patience, mode="max"),
    ]
    if config.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.3, patience=max(1, config.patience // 2))
        )
    verbose = 1 if sys.stdout.isatty() else 2  # a progress bar on a terminal, a line per epoch in a log
    quiet = features_model is not None or not placement.chief
    fit_model.fit(
        **data,
        initial_epoch=stage.first_epoch,
        epochs=stage.end_epoch,
        callbacks=callbacks,
        verbose=0 if quiet else verbose,
    )
    state["done"] = [*state.get("done", []), stage.name]
    if stage.size != final_size:  # its epochs were validated at their own size: only full-size epochs compete
        state.pop("best_val_balanced_accuracy", None)
    local.sync()  # in every process, as the copy is what process 0 saves
    if chief:
        with one_device():
            save_weights(local.copy if local.distributed else model, RunLayout(run).after(stage.name))
        clock.charge()
        save_state(run, state)
    return fit_model.optimizer


def mean_weights(weight_lists: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The element-wise mean of several ``get_weights()`` lists of one architecture."""
    return [np.mean(arrays, axis=0) for arrays in zip(*weight_lists, strict=True)]


def average_snapshots(
    model: keras.Model, run: Path, state: dict, val: tuple[np.ndarray, np.ndarray], always: bool = False
) -> None:
    """Average the weights of the last fine-tune epochs; keep the mean if val balanced accuracy beats the best epoch.

    Weight averaging along the tail of the schedule, as in SWA, finds a flatter point than any one
    epoch, and flat points hold up better on data from elsewhere (SWAD, Cha et al. 2021). The best
    epoch is the maximum of many noisy val scores, so it flatters itself; ``always`` keeps the mean
    regardless. SWA's BatchNorm update is not needed with the BatchNorm fix: every snapshot has the
    same pretrained statistics (a backbone trained from scratch averages them too, and val decides).
    """
    from sklearn.metrics import balanced_accuracy_score

    paths = sorted(RunLayout(run).snapshots.glob("epoch_*.npz"))
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
        kept = always or score > state["best_val_balanced_accuracy"]
        if kept:
            model.save(RunLayout(run).model)
            state["best_val_balanced_accuracy"] = score
        state["average"].update(val_balanced_accuracy=score, kept=kept)
        verdict = ("kept, as --keep-average asks" if always else "kept") if kept else "not kept: the best epoch stays"
        print(
            f"mean of the last {len(paths)} fine-tune epochs: val_balanced_accuracy {score:.4f}, {verdict}", flush=True
        )
    save_state(run, state)
