"""The moving average of the fine-tune's weights: what the epoch-end callbacks see, what training goes on from,
what ``fit`` leaves in the model, where a resumed run's average starts, and the momentums refused. (That a run's
fine-tune, and only it, averages: ``test_train.py``'s ``test_each_phase_compiles_what_the_config_asks``.)"""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest
from test_train import TINY

from toolkit.base.errors import ToolkitError
from toolkit.train.ema import AverageAtEpochEnd, ema_options

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


def fitted(ema: bool, stop_after: int = 0, resumed_at: int = 0) -> tuple[keras.Model, Recorder]:
    """A small dense model fitted for 3 epochs of 4 steps, the same data and initial weights every time.

    ``resumed_at``: the optimizer starts at this step, as a resumed run's new one does (its average zero).
    """
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model.compile(keras.optimizers.Adam(0.05, **ema_options(MOMENTUM if ema else 0.0)), "mse")
    if resumed_at:
        model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations.assign(resumed_at)
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


def same(weights: list[np.ndarray], others: list[np.ndarray], atol: float = 1e-6) -> bool:
    return all(np.allclose(a, b, atol=atol) for a, b in zip(weights, others, strict=True))


def final_weights(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


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
        assert same(trained, seen)
    for epoch in range(3):
        assert same(averaged.ends[epoch], moving_average(averaged.steps[: 4 * (epoch + 1)]), atol=1e-5)
        assert not same(averaged.ends[epoch], plain.ends[epoch])
    for epoch in (1, 2):  # each epoch starts from where the previous one's steps left off
        assert same(averaged.begins[epoch], plain.ends[epoch - 1])
    assert same(final_weights(model), averaged.ends[-1])


def test_an_early_stop_leaves_the_average_in_the_model():
    model, averaged = fitted(ema=True, stop_after=2)
    assert len(averaged.ends) == 2 and same(final_weights(model), averaged.ends[-1])


def test_a_resumed_optimizer_averages_from_the_weights_it_starts_from_not_from_zero():
    _, averaged = fitted(ema=True, resumed_at=100)
    expected = moving_average([averaged.begins[0], *averaged.steps[:4]])  # past step 0 every step is averaged in
    assert same(averaged.ends[0], expected, atol=1e-5)


@pytest.mark.parametrize("momentum", [-0.1, 1.0])
def test_a_momentum_outside_0_to_1_is_refused(momentum):
    with pytest.raises(ToolkitError, match="ema must be 0"):
        replace(TINY, ema=momentum)
