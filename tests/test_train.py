"""Tiny real training runs: a complete, consistent run folder; resume; both backends; evaluate; bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import HAM

from toolkit.cli import main
from toolkit.errors import ToolkitError
from toolkit.evaluate import evaluate_runs
from toolkit.train import SNAPSHOTS, EpochReport, TrainConfig, _average_snapshots, train

TINY = TrainConfig(
    data=str(HAM), arch="mobilenet_v2", alpha=0.35, input_size=64, weights="none",
    epochs_head=1, epochs_finetune=2, batch_size=32, limit=120,
)  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train(TINY, tmp_path_factory.mktemp("runs") / "tiny")


def test_run_folder_is_complete_and_consistent(run):
    names = {p.name for p in run.iterdir()}
    expected = {"config.json", "splits.csv", "history.csv", "model.keras", "metrics.json", "reference.npz"}
    assert expected | {"training_curves.png", "confusion_matrix.png"} <= names
    assert not run.with_name("tiny.partial").exists()
    config = json.loads((run / "config.json").read_text())
    assert TrainConfig.from_json(config) == TrainConfig(**{**TINY.__dict__, "input_size": 64})
    history = pd.read_csv(run / "history.csv")
    assert history[["phase", "epoch"]].values.tolist() == [["head", 1], ["finetune", 1], ["finetune", 2]]
    manifest = pd.read_csv(run / "splits.csv")
    reference = np.load(run / "reference.npz")
    assert str(reference["backend"]) == "tensorflow" and str(reference["device"]).startswith("cpu")
    for split in ("val", "test"):
        ids = manifest.loc[manifest["split"] == split, "image_id"].to_numpy(str)
        assert sorted(reference[f"{split}_ids"]) == sorted(ids)
        assert np.allclose(reference[f"{split}_probs"].sum(axis=1), 1, atol=1e-5)
    metrics = json.loads((run / "metrics.json").read_text())
    test_probs, test_labels = reference["test_probs"], reference["test_labels"]
    assert metrics["test"]["accuracy"] == pytest.approx(float((test_probs.argmax(1) == test_labels).mean()))
    assert set(metrics["test"]) >= {"balanced_accuracy", "macro_f1", "weighted_f1", "per_class", "roc_auc_ovr"}
    assert np.array(metrics["test"]["confusion_matrix"]).sum() == len(test_labels)


def test_the_decision_chosen_on_val_is_the_one_the_model_makes(run):
    decision = json.loads((run / "decision.json").read_text())
    curve, chosen = decision["curve"]["macro_f1"], decision["taus"].index(decision["tau"])
    assert curve[chosen] == max(curve)
    val = json.loads((run / "metrics.json").read_text())["val"]
    assert val["macro_f1"] == pytest.approx(curve[chosen], abs=0.05)  # folded in: near-ties may flip in float32


def test_decide_refits_the_decision_without_retraining(run, tmp_path):
    from toolkit.calibrate import softmax

    def folded(folder: Path) -> tuple[dict, np.ndarray]:
        return json.loads((folder / "decision.json").read_text()), np.load(folder / "reference.npz")["test_probs"]

    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    before, probs = folded(copy)
    logits = np.log(probs) * before["temperature"] - np.asarray(before["shift"])  # what the head gave unfolded
    assert main(["decide", "--run", str(copy)]) == 0  # the same objective: the same decision again
    again, probs_again = folded(copy)
    assert again["tau"] == before["tau"] and again["temperature"] == pytest.approx(before["temperature"])
    assert np.allclose(probs_again, probs, atol=1e-5)
    assert main(["decide", "--run", str(copy), "--decision", "balanced_accuracy"]) == 0
    after, probs_after = folded(copy)
    curve = after["curve"]["balanced_accuracy"]
    assert after["objective"] == "balanced_accuracy" and curve[after["taus"].index(after["tau"])] >= max(curve) - 0.01
    expected = softmax((logits + np.asarray(after["shift"])) / after["temperature"])
    assert np.allclose(probs_after, expected, atol=1e-4)
    assert json.loads((copy / "config.json").read_text())["decision"] == "balanced_accuracy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no copy or old folder left behind
    assert main(["decide", "--run", str(tmp_path / "missing")]) == 2


def test_from_scratch_batchnorm_learns_its_statistics(run):
    import keras

    from toolkit.model import backbone_of

    model = keras.saving.load_model(run / "model.keras")
    norms = [layer for layer in backbone_of(model).layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert any(layer.trainable for layer in norms)  # weights none: no pretrained statistics for the fix to keep
    assert max(float(np.abs(np.asarray(layer.moving_mean)).max()) for layer in norms) > 1e-4  # init: exactly 0


def test_evaluate_recomputes_the_metrics_and_ensembles(run, capsys):
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    again = evaluate_runs([run], "test")
    assert again["balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"])
    assert evaluate_runs([run, run], "test")["accuracy"] == pytest.approx(metrics["accuracy"])
    assert main(["evaluate", "--ensemble", str(run), str(run)]) == 0
    assert "balanced_accuracy" in capsys.readouterr().out


def test_interrupted_training_resumes_without_losing_an_epoch(tmp_path, monkeypatch):
    original = EpochReport.on_epoch_end

    def interrupt_after_first_finetune_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if self.phase == "finetune" and epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(EpochReport, "on_epoch_end", interrupt_after_first_finetune_epoch)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(replace(TINY, schedule="cosine", average_last=2), out)
    partial = out.with_name("resumed.partial")
    assert len(pd.read_csv(partial / "history.csv")) == 2 and not out.exists()
    assert [p.name for p in (partial / SNAPSHOTS).iterdir()] == ["epoch_001.npz"]
    interrupted_seconds = json.loads((partial / "state.json").read_text())["seconds"]["finetune"]
    assert interrupted_seconds > 0  # the killed attempt's time is charged, not lost
    monkeypatch.setattr(EpochReport, "on_epoch_end", original)
    with pytest.raises(Exception, match="pass --resume"):
        train(TINY, out)
    train(TrainConfig(), out, resume=True)  # the saved config wins over the one given
    history = pd.read_csv(out / "history.csv")
    assert history[["phase", "epoch"]].values.tolist() == [["head", 1], ["finetune", 1], ["finetune", 2]]
    # cosine: warmed up to the peak after one epoch, decayed to 0 after the last; the schedule resumed where it was
    assert history["learning_rate"].tolist() == pytest.approx([TINY.lr_head, TINY.lr_finetune, 0.0], abs=1e-9)
    state = json.loads((out / "state.json").read_text())
    assert state["seconds"]["finetune"] > interrupted_seconds
    assert state["average"]["epochs"] == [1, 2]  # the snapshot from before the interruption counts
    assert not (out / SNAPSHOTS).exists()


@pytest.mark.parametrize("best_so_far", [-1.0, 2.0])
def test_averaged_weights_are_the_mean_of_the_snapshots_kept_only_when_val_prefers_them(tmp_path, best_so_far):
    import keras

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(7)])
    (tmp_path / SNAPSHOTS).mkdir()
    snapshots = [[np.full(w.shape, value, np.float32) for w in model.get_weights()] for value in (1.0, 2.0, 6.0)]
    for epoch, weights in enumerate(snapshots, 1):
        np.savez(tmp_path / SNAPSHOTS / f"epoch_{epoch:03d}.npz", *weights)
    state = {"best_val_balanced_accuracy": best_so_far}
    val = np.random.default_rng(0).integers(0, 255, (20, 8, 8, 3)).astype(np.float32), np.arange(20) % 7
    _average_snapshots(model, tmp_path, state, val)
    assert state["average"]["epochs"] == [1, 2, 3] and 0 <= state["average"]["val_balanced_accuracy"] <= 1
    kept = best_so_far < 0
    assert state["average"]["kept"] == kept and (tmp_path / "model.keras").exists() == kept
    if kept:
        saved = keras.saving.load_model(tmp_path / "model.keras").get_weights()
        assert all(np.allclose(w, 3.0) for w in saved)  # the mean of 1, 2 and 6
        assert state["best_val_balanced_accuracy"] == state["average"]["val_balanced_accuracy"]


def test_train_command_refuses_bad_input_and_writes_nothing(run, capsys, tmp_path):
    cases = [
        (["--out", str(run)], f"run folder {run} already exists"),
        (["--input-size", "16", "--out", str(tmp_path / "a")], "cannot take input size 16"),
        (["--arch", "resnet50", "--out", str(tmp_path / "b")], "unknown architecture 'resnet50'"),
    ]
    manifest = pd.read_csv(run / "splits.csv")
    manifest[manifest["split"] != "test"].to_csv(tmp_path / "no_test.csv", index=False)
    cases.append((["--data", str(tmp_path / "no_test.csv"), "--out", str(tmp_path / "c")], "the test split"))
    for extra, message in cases:
        data = [] if "--data" in extra else ["--data", str(HAM)]
        argv = ["train", *data, "--alpha", "0.35", "--weights", "none", "--limit", "60", *extra]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_test.csv"]


NO_TENSORFLOW = """import sys
class NoTensorFlow:  # the GPU machine has JAX and no TensorFlow: importing it must fail there as here
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NoTensorFlow())
"""


def test_the_same_command_trains_under_jax_without_tensorflow(tmp_path):
    out = tmp_path / "jax_run"
    command = [sys.executable, "-m", "toolkit", "train", "--data", str(HAM), "--arch", "mobilenet_v2",
               "--alpha", "0.35", "--input-size", "64", "--weights", "none", "--epochs-head", "1",
               "--epochs-finetune", "1", "--limit", "100", "--out", str(out)]  # fmt: skip
    (tmp_path / "sitecustomize.py").write_text(NO_TENSORFLOW)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=str(tmp_path))
    blocked = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True)
    assert blocked.returncode == 1 and "No module named 'tensorflow'" in blocked.stderr
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["backend"] == "jax"


def test_a_run_trains_in_one_process_at_a_time(tmp_path):
    """A second process resuming a run that is still training would interleave epochs with it (it happened once)."""
    import fcntl

    out = tmp_path / "runs" / "busy"
    out.parent.mkdir()
    with open(out.with_name("busy.lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the training process holds it
        for resume in (False, True):
            with pytest.raises(ToolkitError, match="is being trained by another process"):
                train(TINY, out, resume=resume, force=True)
    assert sorted(p.name for p in out.parent.iterdir()) == ["busy.lock"]  # the refused calls wrote nothing
    with pytest.raises(ToolkitError, match="nothing to resume"):  # free again: the next call gets past the lock
        train(TINY, out, resume=True)
    assert not out.with_name("busy.lock").exists()
