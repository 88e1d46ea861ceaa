"""The embedded demo set: deterministic, labelled as a demo, grouped, and learnable far above chance."""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from toolkit.cli import main
from toolkit.data.demo import ensure_demo_set, write_demo_set
from toolkit.data.images import load_images
from toolkit.data.split import prepare_splits


def test_demo_set_is_deterministic_and_in_ham_layout(tmp_path):
    a, b = write_demo_set(tmp_path / "a", per_class=5, size=32), write_demo_set(tmp_path / "b", per_class=5, size=32)
    assert (a / "metadata.csv").read_bytes() == (b / "metadata.csv").read_bytes()
    assert all((a / "images" / p.name).read_bytes() == p.read_bytes() for p in (b / "images").iterdir())
    assert len(list((a / "images").iterdir())) == 35


def test_demo_is_grouped_by_lesion_and_a_small_model_learns_it(tmp_path):
    prepared = prepare_splits(ensure_demo_set(tmp_path))
    table = prepared.table
    assert table["image_id"].str.startswith("DEMO_").all()
    assert table["lesion_id"].nunique() < len(table)  # some lesions have two shots
    assert table.groupby("lesion_id")["split"].nunique().max() == 1
    features = load_images(table["path"].tolist(), 16).images.reshape(len(table), -1) / 255.0
    labels = table["label"].to_numpy()
    train, test = (table["split"] == "train").to_numpy(), (table["split"] == "test").to_numpy()
    model = LogisticRegression(max_iter=2000).fit(features[train], labels[train])
    assert balanced_accuracy_score(labels[test], model.predict(features[test])) > 0.6  # chance is 1/7


def test_data_demo_command_says_it_is_a_demo(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path))
    assert main(["data", "--demo", "--out", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    assert "DEMO set of synthetic images" in out and "lesions in more than one split: 0" in out
    assert (tmp_path / "s.csv").exists()
