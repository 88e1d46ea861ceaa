"""The moving average of the fine-tune's weights: what the epoch-end callbacks see, what training goes on from,
what ``fit`` leaves in the model, and the run option that turns it on."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest
from test_train import TINY

from toolkit.base.errors import ToolkitError
from toolkit.train.ema import AverageAtEpochEnd
from toolkit.train.trainer import train

MOMENTUM = 0.9


class Recorder(keras.callbacks.Callback):
    """The weights after every step, at every epoch's start and at every epoch's end."""

    def __init__(self):
        super().__init__()
        self.steps, self.begins, self.ends = [], [], []

    def _weights(self):
        return [keras.ops.convert_to_numpy(v).copy() for v in self.model.trainable_variables]

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self._weights())

    def on_epoch_begin(self, epoch, logs=None):
        self.begins.append(self._weights())

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(self._weights())


def fitted(ema: bool, stop_after: int = 0) -> tuple[keras.Model, Recorder]:
    """A small dense model fitted for 3 epochs of 4 steps, the same data and initial weights every time."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    options = {"use_ema": True, "ema_momentum": MOMENTUM} if ema else {}
    model.compile(keras.optimizers.Adam(0.05, **options), "mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 5)).astype("float32"), rng.normal(size=(32, 3)).astype("float32")
    recorder = Recorder()
    callbacks = [AverageAtEpochEnd(), recorder] if ema else [recorder]
    if stop_after:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda e, _: setattr(model, "stop_training", e + 1 >= stop_after)
            )
        )
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=callbacks)
    return model, recorder


def moving_average(steps: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Keras's average: the first step's weights, then ``momentum * average + (1 - momentum) * weights``."""
    average = steps[0]
    for weights in steps[1:]:
        average = [MOMENTUM * a + (1 - MOMENTUM) * w for a, w in zip(average, weights, strict=True)]
    return average


def test_epoch_end_callbacks_see_the_average_and_training_goes_on_from_the_trained_weights():
    _, plain = fitted(ema=False)
    model, averaged = fitted(ema=True)
    for trained, seen in zip(plain.steps, averaged.steps, strict=True):  # the average never leaks into training
        assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(trained, seen, strict=True))
    for epoch in range(3):
        expected = moving_average(averaged.steps[: 4 * (epoch + 1)])
        assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(averaged.ends[epoch], expected, strict=True))
        assert not all(np.allclose(a, b) for a, b in zip(averaged.ends[epoch], plain.ends[epoch], strict=True))
    for epoch in (1, 2):  # each epoch starts from where the previous one's steps left off
        assert all(np.allclose(a, b) for a, b in zip(averaged.begins[epoch], plain.ends[epoch - 1], strict=True))
    final = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(final, averaged.ends[-1], strict=True))


def test_an_early_stop_leaves_the_average_in_the_model():
    model, averaged = fitted(ema=True, stop_after=2)
    assert len(averaged.ends) == 2
    final = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(final, averaged.ends[-1], strict=True))


def test_a_run_with_ema_fine_tunes_on_an_averaging_optimizer(tmp_path, monkeypatch):
    seen = []
    fit = keras.Model.fit

    def recording_fit(model, *args, **kwargs):
        seen.append((model.optimizer.use_ema, model.optimizer.ema_momentum, kwargs["callbacks"]))
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    run = train(replace(TINY, input_size=32, limit=24, epochs_finetune=1, ema=0.99), tmp_path / "ema")
    (head_ema, _, head_callbacks), (finetune_ema, momentum, callbacks) = seen
    assert not head_ema and not any(isinstance(c, AverageAtEpochEnd) for c in head_callbacks)
    assert finetune_ema and momentum == 0.99 and isinstance(callbacks[0], AverageAtEpochEnd)
    assert (run / "model.keras").exists()


@pytest.mark.parametrize("momentum", [-0.1, 1.0])
def test_a_momentum_outside_0_to_1_is_refused(momentum):
    with pytest.raises(ToolkitError, match="ema must be 0"):
        replace(TINY, ema=momentum)
