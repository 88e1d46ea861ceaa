"""Tiny real training runs: a complete, consistent run folder; resume; both backends; evaluate; bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import keras
import numpy as np
import pandas as pd
import pytest
from conftest import HAM, IMAGENET_FILE, WEIGHTS
from test_calibrate import documented_choice

from toolkit.base.errors import ToolkitError
from toolkit.base.layout import RunLayout
from toolkit.cli import main
from toolkit.model.classifier import backbone_of
from toolkit.train.config import TrainConfig
from toolkit.train.evaluate import evaluate_runs
from toolkit.train.fit import EpochReport, average_snapshots, uses_bn_fix
from toolkit.train.trainer import train

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
    assert decision["tau"] == documented_choice(curve, decision["taus"])
    val = json.loads((run / "metrics.json").read_text())["val"]
    assert val["macro_f1"] == pytest.approx(curve[chosen], abs=0.05)  # folded in: near-ties may flip in float32


def test_decide_refits_the_decision_without_retraining(run, tmp_path):
    from scipy.special import softmax

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
    assert after["objective"] == "balanced_accuracy" and after["tau"] == documented_choice(curve, after["taus"])
    expected = softmax((logits + np.asarray(after["shift"])) / after["temperature"], axis=1)
    assert np.allclose(probs_after, expected, atol=1e-4)
    assert json.loads((copy / "config.json").read_text())["decision"] == "balanced_accuracy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no copy or old folder left behind
    assert main(["decide", "--run", str(tmp_path / "missing")]) == 2


def test_decide_adds_mirror_views_and_refuses_another_count(run, tmp_path):
    from toolkit.model.views import view_count
    from toolkit.train.runs import open_run

    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    assert main(["decide", "--run", str(copy), "--views", "2"]) == 0
    assert json.loads((copy / "config.json").read_text())["views"] == 2
    assert view_count(open_run(copy).load_model()) == 2
    assert main(["decide", "--run", str(copy)]) == 0  # the run's own count again: nothing to add
    assert view_count(open_run(copy).load_model()) == 2
    assert main(["export", "--run", str(copy), "--out", str(tmp_path / "assets"), "--skip-drift"]) == 0
    bundle = tmp_path / "assets" / "tiny"
    assert json.loads((bundle / "manifest.json").read_text())["views"] == 2
    assert "averaging 2 mirror views of the image" in (bundle / "README.md").read_text()
    shutil.rmtree(tmp_path / "assets")
    assert main(["decide", "--run", str(copy), "--views", "4"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # the refused refit left no copy behind
    with pytest.raises(ToolkitError, match="views must be one of 1, 2, 4"):
        replace(TINY, views=3)


def test_from_scratch_batchnorm_learns_its_statistics(run):
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
        train(replace(TINY, schedule="cosine", average_last=2, ema=0.9), out)  # an average resumes too
    partial = out.with_name("resumed.partial")
    assert len(pd.read_csv(partial / "history.csv")) == 2 and not out.exists()
    assert [p.name for p in RunLayout(partial).snapshots.iterdir()] == ["epoch_001.npz"]
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
    assert not RunLayout(out).snapshots.exists()


@pytest.mark.parametrize("best_so_far, always", [(-1.0, False), (2.0, False), (2.0, True)])
def test_averaged_weights_are_the_mean_of_the_snapshots_kept_when_val_prefers_them_or_when_asked(
    tmp_path, best_so_far, always
):
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(7)])
    RunLayout(tmp_path).snapshots.mkdir()
    snapshots = [[np.full(w.shape, value, np.float32) for w in model.get_weights()] for value in (1.0, 2.0, 6.0)]
    for epoch, weights in enumerate(snapshots, 1):
        np.savez(RunLayout(tmp_path).snapshots / f"epoch_{epoch:03d}.npz", *weights)
    state = {"best_val_balanced_accuracy": best_so_far}
    val = np.random.default_rng(0).integers(0, 255, (20, 8, 8, 3)).astype(np.float32), np.arange(20) % 7
    average_snapshots(model, tmp_path, state, val, always=always)
    assert state["average"]["epochs"] == [1, 2, 3] and 0 <= state["average"]["val_balanced_accuracy"] <= 1
    kept = best_so_far < 0 or always  # no score beats 2.0: only --keep-average keeps the mean then
    assert state["average"]["kept"] == kept and (tmp_path / "model.keras").exists() == kept
    if kept:
        saved = keras.saving.load_model(tmp_path / "model.keras").get_weights()
        assert all(np.allclose(w, 3.0) for w in saved)  # the mean of 1, 2 and 6
        assert state["best_val_balanced_accuracy"] == state["average"]["val_balanced_accuracy"]


@pytest.mark.parametrize("average_last", [0, 1])
def test_keeping_an_average_needs_two_epochs_to_average(average_last):
    with pytest.raises(ToolkitError, match=f"keep_average needs average_last of 2 or more epochs, not {average_last}"):
        replace(TINY, keep_average=True, average_last=average_last)


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
    """The logit-adjusted loss trains here too: it is written in keras.ops, not TensorFlow."""
    out = tmp_path / "jax_run"
    command = [sys.executable, "-m", "toolkit", "train", "--data", str(HAM), "--arch", "mobilenet_v2",
               "--alpha", "0.35", "--input-size", "64", "--weights", "none", "--epochs-head", "1",
               "--epochs-finetune", "1", "--limit", "100", "--imbalance", "logit_adjust",
               "--out", str(out)]  # fmt: skip
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


@pytest.mark.parametrize("bn_fix", [True, False])
def test_pretrained_batchnorm_statistics_survive_train_only_with_the_fix(bn_fix, tmp_path, keras_home, cli):
    """Through the command a user runs: what carries the fix is the BatchNorm layers being non-trainable (Keras 3's
    ``fit`` passes ``training=True`` into the nested backbone whatever it was called with)."""
    run = tmp_path / "bn"
    flags = ["--epochs-head", "0", "--epochs-finetune", "1", "--boundary", "all", "--lr-finetune", "1e-3"]
    args = ["train", "--data", str(HAM), "--input-size", "48", "--weights", "imagenet", "--limit", "32", *flags]
    cli(*args, *([] if bn_fix else ["--no-bn-fix"]), "--out", str(run), env={"KERAS_HOME": str(keras_home)})
    backbone = backbone_of(keras.saving.load_model(run / "model.keras"))
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 52  # every BatchNorm of MobileNetV2
    with h5py.File(WEIGHTS / IMAGENET_FILE) as pretrained:
        moved = [
            layer.name
            for layer in norms
            for stat in ("moving_mean", "moving_variance")
            if not np.array_equal(np.asarray(getattr(layer, stat)), pretrained[layer.name][f"{layer.name}/{stat}"][()])
        ]
    if bn_fix:
        assert moved == [] and not any(layer.trainable for layer in norms)
    else:
        assert len(moved) == 2 * len(norms)  # the original failure: every statistic replaced by batch estimates


@pytest.mark.parametrize(
    ("bn_fix", "weights", "expected"),
    [(True, "imagenet", True), (True, "/path/to/weights.h5", True), (False, "imagenet", False), (True, "none", False)],
)
def test_the_fix_applies_when_there_are_pretrained_statistics_to_keep(bn_fix, weights, expected):
    """The decision the test above exercises through ``train``, for every kind of ``--weights``."""
    assert uses_bn_fix(replace(TINY, bn_fix=bn_fix, weights=weights)) is expected


def test_the_small_run_learns_far_above_a_constant_or_shuffled_answer(small_run):
    """The fixture the export, contract and bench tests lean on must have learned something: measured test
    balanced accuracy 0.42 and macro-F1 0.38, against 1/7 and about 0.11 for a constant answer."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    from toolkit.train.runs import open_run

    reference = open_run(small_run).reference()
    labels, predicted = reference["test_labels"], reference["test_probs"].argmax(1)
    assert len(labels) == 600 and len(np.unique(predicted)) >= 4  # not one answer for every image
    constant = np.full_like(labels, np.bincount(labels).argmax())
    shuffled = np.random.default_rng(0).permutation(predicted)
    for score in (balanced_accuracy_score, lambda y, p: f1_score(y, p, average="macro")):
        ours, baselines = score(labels, predicted), (score(labels, constant), score(labels, shuffled))
        assert ours >= max(baselines) + 0.15, (ours, baselines)  # a margin of about half what was measured
    metrics = json.loads((small_run / "metrics.json").read_text())["test"]
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
