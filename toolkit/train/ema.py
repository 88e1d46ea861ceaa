"""An exponential moving average of the fine-tune's weights, validated, checkpointed and kept in their place.

Averaging the weights along the end of training (Polyak averaging; timm's ``ModelEmaV2``) smooths
out the last steps' noise: the epoch val picks and the model that ships are steadier than any one
step's weights. Keras's optimizers keep the average themselves (``use_ema``, in the compiled step);
:class:`AverageAtEpochEnd` shows it to the epoch-end callbacks.
"""

from __future__ import annotations

import keras


def ema_options(momentum: float) -> dict:
    """Keyword arguments of a Keras optimizer that keeps the average; none when ``momentum`` is 0 (off)."""
    return {"use_ema": True, "ema_momentum": momentum} if momentum else {}


class AverageAtEpochEnd(keras.callbacks.Callback):
    """Puts the optimizer's average into the model for every epoch-end callback after this one (validation, the
    best model, the snapshots, the backup), and the trained weights back before the next epoch.

    Unlike ``keras.callbacks.SwapEMAWeights`` it copies instead of swapping, so the average survives early
    stopping (``fit`` ends by writing the optimizer's average into the model). It restarts the average from the
    weights each ``fit`` call starts from: a resumed run's optimizer is new, and its backup holds the average,
    which is what training goes on from.
    """

    def __init__(self):
        super().__init__()
        self.started, self.trained = False, None

    def _pairs(self):
        optimizer = self.model.optimizer  # Keras's own pairing of the variables with their averages
        return zip(optimizer._trainable_variables, optimizer._model_variables_moving_average, strict=True)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if not self.model.optimizer.built:  # built by the first step otherwise, after this
            self.model.optimizer.build(self.model.trainable_variables)
        if not self.started:
            for variable, average in self._pairs():
                average.assign(_copy(variable))
            self.started = True
        elif self.trained is not None:
            for (variable, _), trained in zip(self._pairs(), self.trained, strict=True):
                variable.assign(trained)
            self.trained = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.trained = []
        for variable, average in self._pairs():
            self.trained.append(_copy(variable))
            variable.assign(_copy(average))


def _copy(variable):
    """The value on the host: under JAX two variables sharing one buffer break the train step (which donates both)."""
    return keras.ops.convert_to_numpy(variable).copy()
