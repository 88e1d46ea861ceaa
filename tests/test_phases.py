"""What each training phase's ``fit`` receives: the optimizer, loss, schedule and callbacks the config asks for, and
the head's fast path on cached features."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest
from conftest import HAM
from test_train import TINY

from toolkit.train.config import TrainConfig
from toolkit.train.ema import AverageAtEpochEnd
from toolkit.train.trainer import train


@pytest.mark.parametrize(("optimizer", "schedule"), [("adam", "plateau"), ("adamw", "cosine")])
def test_each_phase_compiles_what_the_config_asks(optimizer, schedule, tmp_path, monkeypatch):
    """README's recipe knobs: the optimizer (AdamW's weight decay), label smoothing, the learning-rate schedule,
    early stopping on validation balanced accuracy and the fine-tune's weight average, as each phase's ``fit``
    receives them."""
    seen = []
    fit = keras.Model.fit

    def recording_fit(model, *args, **kwargs):
        seen.append((model.optimizer, model.loss, kwargs["callbacks"]))
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    config = replace(
        TINY, input_size=32, limit=24, epochs_finetune=1, optimizer=optimizer, schedule=schedule, weight_decay=0.03,
        label_smoothing=0.1, patience=3, ema=0.99 if optimizer == "adamw" else 0.0,
    )  # fmt: skip
    train(config, tmp_path / "knobs")
    assert len(seen) == 2  # head, then fine-tune
    for (compiled, loss, callbacks), peak, phase in zip(
        seen, (config.lr_head, config.lr_finetune), ("head", "finetune"), strict=True
    ):
        averaged = config.ema > 0 and phase == "finetune"  # the head never averages
        assert compiled.use_ema == averaged and (not averaged or compiled.ema_momentum == 0.99)
        assert isinstance(callbacks[0], AverageAtEpochEnd) == averaged  # first: the others see the average
        assert type(compiled) is {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW}[optimizer]
        assert optimizer == "adam" or compiled.weight_decay == 0.03
        assert isinstance(loss, keras.losses.CategoricalCrossentropy) and loss.label_smoothing == 0.1
        (stopper,) = [c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)]
        assert (stopper.monitor, stopper.patience, stopper.mode) == ("val_balanced_accuracy", 3, "max")
        plateau = [c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau)]
        rate = compiled._learning_rate
        if schedule == "plateau":
            assert len(plateau) == 1 and plateau[0].factor == 0.3 and float(rate) == pytest.approx(peak)
        else:  # a one-epoch linear warm-up from 0 to the peak, then cosine to 0
            assert not plateau and isinstance(rate, keras.optimizers.schedules.CosineDecay)
            assert (rate.initial_learning_rate, rate.warmup_target) == (0.0, peak)


@pytest.mark.parametrize("augment_head", [False, True])
def test_the_head_trains_on_cached_features_unless_augment_head(augment_head, tmp_path, keras_home, monkeypatch):
    """Phase 1's fast path: the frozen backbone runs once and the head fits its pooled features; ``augment_head``
    trains the head through the backbone on augmented images instead."""
    from toolkit.data.pipeline import ImageBatches

    seen = []
    fit = keras.Model.fit

    def recording_fit(model, *args, **kwargs):
        seen.append((model.input_shape, kwargs.get("x")))
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    config = TrainConfig(
        data=str(HAM), weights="imagenet", input_size=48, limit=24, epochs_head=1, epochs_finetune=0,
        augment_head=augment_head,
    )  # fmt: skip
    train(config, tmp_path / "head")
    input_shape, inputs = seen[0]  # the head phase (fine-tuning with 0 epochs calls fit too)
    if augment_head:
        assert input_shape == (None, 48, 48, 3) and isinstance(inputs, ImageBatches) and inputs.augment is not None
    else:
        assert input_shape == (None, 1280) and isinstance(inputs, np.ndarray) and inputs.shape[1:] == (1280,)
