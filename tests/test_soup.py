"""Greedy soups: a fine-tune seed that changes only the fine-tune, and weights averaged only where val holds."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from test_train import TINY

from toolkit.cli import main
from toolkit.train.fit import mean_weights
from toolkit.train.runs import open_run
from toolkit.train.soup import greedy_soup
from toolkit.train.trainer import train


@pytest.fixture(scope="module")
def ingredients(tmp_path_factory) -> list[Path]:
    """Two tiny runs that differ only in their fine-tune seed."""
    root = tmp_path_factory.mktemp("soup_runs")
    return [train(replace(TINY, finetune_seed=seed), root / f"ft{seed}") for seed in (0, 1)]


def test_finetune_seed_redraws_the_finetune_over_the_same_split_and_head(ingredients):
    first, second = ingredients
    assert (first / "splits.csv").read_text() == (second / "splits.csv").read_text()
    histories = [pd.read_csv(run / "history.csv").set_index("phase") for run in ingredients]
    assert histories[0].loc["head", "val_loss"] == pytest.approx(histories[1].loc["head", "val_loss"], rel=1e-4)
    assert not np.allclose(histories[0].loc["finetune", "val_loss"], histories[1].loc["finetune", "val_loss"])


def test_greedy_soup_keeps_only_what_does_not_lower_the_score():
    def dense(value: float) -> keras.Model:
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.set_weights([np.full((2, 1), value), np.zeros(1)])
        return model

    def score(model) -> float:  # best at a kernel of 1: 0.8 and 1.4 average to 1.1, 4.0 pulls the mean away
        return -abs(float(model.get_weights()[0].mean()) - 1.0)

    models = [dense(1.4), dense(4.0), dense(0.8)]
    kept, scores, best = greedy_soup(models, ["a", "b", "c"], score)
    assert kept == [2, 0]  # ranked: 0.8 first, then 1.4 (kept: 1.1 scores -0.1 against -0.2), 4.0 left out
    assert scores == pytest.approx([-0.4, -3.0, -0.2]) and best == pytest.approx(-0.1)
    assert models[2].get_weights()[0] == pytest.approx(np.full((2, 1), 1.1))


def test_soup_writes_a_finished_run_no_worse_on_val_than_its_best_ingredient(ingredients, tmp_path):
    out = tmp_path / "soup"
    assert main(["soup", "--runs", *map(str, ingredients), "--out", str(out)]) == 0
    state = json.loads((out / "state.json").read_text())
    soup = state["soup"]
    assert soup["ingredients"] == [str(run.resolve()) for run in ingredients]  # outside a checkout: absolute
    assert state["seconds"]["soup"] > 0
    assert soup["soup_val_balanced_accuracy"] >= max(soup["val_balanced_accuracy"].values())
    kept = [open_run(Path(path)).load_raw_model().get_weights() for path in soup["kept"]]
    for souped, expected in zip(open_run(out).load_raw_model().get_weights(), mean_weights(kept), strict=True):
        assert np.allclose(souped, expected, atol=1e-6)
    assert {"decision.json", "reference.npz", "metrics.json", "splits.csv", "config.json"} <= {
        path.name for path in out.iterdir()
    }
    assert sorted(path.name for path in tmp_path.iterdir()) == ["soup"]  # nothing half-written beside it
    assert main(["soup", "--runs", *map(str, ingredients), "--out", str(out)]) == 2  # exists: --force to replace


def test_soup_refuses_runs_that_cannot_be_averaged(ingredients, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(ingredients[1], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "input_size": 96}))
    assert main(["soup", "--runs", str(ingredients[0]), str(other), "--out", str(tmp_path / "soup")]) == 2
    assert main(["soup", "--runs", str(ingredients[0]), "--out", str(tmp_path / "soup")]) == 2
    resplit = tmp_path / "resplit"
    shutil.copytree(ingredients[1], resplit)
    table = pd.read_csv(resplit / "splits.csv")
    table.loc[table.index[table["split"] == "val"][0], "split"] = "train"  # one val image moved: another split
    table.to_csv(resplit / "splits.csv", index=False)
    assert main(["soup", "--runs", str(ingredients[0]), str(resplit), "--out", str(tmp_path / "soup")]) == 2
    assert main(["evaluate", "--ensemble", str(ingredients[0]), str(resplit), "--split", "val"]) == 2
    errors = capsys.readouterr().err
    assert "input_size" in errors and "at least two runs" in errors
    assert "a soup needs one val set" in errors and "an ensemble needs one val set" in errors
    assert not (tmp_path / "soup").exists()
