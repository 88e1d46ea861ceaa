"""The accuracy benchmark reuses a run trained on another machine (a GPU box) only for the same recipe and data."""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, replace

from conftest import REPO


def test_a_run_brought_back_is_reused_for_the_same_recipe_on_this_machines_data(tmp_path, monkeypatch):
    """The GPU box recorded its own absolute data path; what counts is that the split's images resolve here."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    bench = importlib.import_module("accuracy_ham10000")
    data = tmp_path / "shared" / "data" / "ham10000"
    (data / "images").mkdir(parents=True)
    (data / "images" / "ISIC_0000001.jpg").write_bytes(b"")
    run = tmp_path / "repo" / "runs" / "ham10000_mobilenet_v2"
    run.mkdir(parents=True)
    wanted = replace(bench.config_for("mobilenet_v2"), data=str(data))
    trained_elsewhere = {**asdict(replace(wanted, data="/gpu-box/shared/data/ham10000")), "distribution": {}}
    (run / "config.json").write_text(json.dumps(trained_elsewhere))
    (run / "splits.csv").write_text(
        "image_id,path,label,split,lesion_id\n"
        "ISIC_0000001,../../../shared/data/ham10000/images/ISIC_0000001.jpg,nv,train,HAM_0000001\n"
    )

    assert bench.same_recipe(run, wanted)
    assert not bench.same_recipe(run, replace(wanted, epochs_finetune=wanted.epochs_finetune + 1))
    other = tmp_path / "other"
    other.mkdir()
    assert not bench.same_recipe(run, replace(wanted, data=str(other)))
