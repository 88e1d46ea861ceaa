"""Progressive resizing: the fine-tune starts small on the same layers and finishes at the input size."""

from __future__ import annotations

import json
from dataclasses import replace

import keras
import pandas as pd
import pytest
from test_train import TINY

from toolkit.base.errors import ToolkitError
from toolkit.base.layout import RunLayout
from toolkit.train.config import TrainConfig
from toolkit.train.fit import EpochReport
from toolkit.train.trainer import train

PROGRESSIVE = replace(TINY, schedule="cosine", progressive_size=32, progressive_epochs=1)  # then 1 epoch at 64 px


def test_the_fine_tune_runs_small_then_at_the_input_size_with_one_optimizer(tmp_path, monkeypatch):
    seen = []
    fit = keras.Model.fit

    def recording_fit(model, *args, **kwargs):
        seen.append((model.input_shape, model.optimizer, kwargs["initial_epoch"], kwargs["epochs"]))
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    out = train(PROGRESSIVE, tmp_path / "progressive")
    (_, head_optimizer, *_), small, final = seen
    assert small[0] == (None, 32, 32, 3) and small[2:] == (0, 1)
    assert final[0] == (None, 64, 64, 3) and final[2:] == (1, 2)
    assert final[1] is small[1] and small[1] is not head_optimizer  # Adam's moments carry on across the switch
    history = pd.read_csv(RunLayout(out).history)
    assert history[["phase", "epoch"]].values.tolist() == [["head", 1], ["finetune_32px", 1], ["finetune", 2]]
    # cosine over both stages: warmed up to the peak after the first epoch, at 0 after the last, not restarted
    assert history["learning_rate"].tolist() == pytest.approx([TINY.lr_head, TINY.lr_finetune, 0.0], abs=1e-9)
    model = keras.saving.load_model(RunLayout(out).model)
    assert model.input_shape == (None, 64, 64, 3)  # what export converts: the input size, whatever trained before
    state = json.loads(RunLayout(out).state.read_text())
    full_size = history.loc[history["phase"] == "finetune", "val_balanced_accuracy"]
    assert state["best_val_balanced_accuracy"] == pytest.approx(full_size.max())
    assert set(state["seconds"]) >= {"head", "finetune_32px", "finetune"}


def test_a_run_interrupted_after_the_small_stage_resumes_at_the_input_size(tmp_path, monkeypatch):
    original = EpochReport.on_epoch_end

    def interrupt_at_the_input_size(self, epoch, logs=None):
        if self.phase == "finetune":
            raise KeyboardInterrupt
        original(self, epoch, logs)

    monkeypatch.setattr(EpochReport, "on_epoch_end", interrupt_at_the_input_size)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(PROGRESSIVE, out)
    partial = RunLayout(out.with_name("resumed.partial"))
    state = json.loads(partial.state.read_text())
    assert state["done"] == ["head", "finetune_32px"] and partial.after("finetune_32px").exists()
    assert "best_val_balanced_accuracy" not in state  # small epochs were scored at 32 px: they do not compete
    monkeypatch.setattr(EpochReport, "on_epoch_end", original)
    train(TrainConfig(), out, resume=True)
    history = pd.read_csv(RunLayout(out).history)
    assert history["phase"].tolist() == ["head", "finetune_32px", "finetune"]
    # a new optimizer after the interruption, its step set where the schedule was: the last epoch still ends at 0
    assert history["learning_rate"].tolist() == pytest.approx([TINY.lr_head, TINY.lr_finetune, 0.0], abs=1e-9)
    assert not list(out.glob("after_*")) and not list(out.glob("backup_*"))  # resuming's files are gone


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"progressive_size": 32}, "needs a size and 1 to 1 of the 2 fine-tune epochs"),
        ({"progressive_size": 32, "progressive_epochs": 2}, "got size 32 for 2 epochs"),
        ({"progressive_epochs": 1}, "got size 0 for 1 epochs"),
    ],
)
def test_a_progressive_stage_must_leave_epochs_at_the_input_size(changes, message):
    with pytest.raises(ToolkitError, match=message):
        replace(TINY, **changes)


def test_the_progressive_size_must_be_smaller_than_the_input_size(tmp_path):
    with pytest.raises(ToolkitError, match="progressive size 64 must be smaller than the input size 64"):
        train(replace(PROGRESSIVE, progressive_size=64), tmp_path / "same")
    assert not list(tmp_path.iterdir())  # refused before anything was written
