"""Greedy model soups: the weights of runs fine-tuned from one head, averaged where validation agrees.

Fine-tunes that start from the same pretrained weights and the same head tend to stay in one basin, so
the mean of their weights can score above each of them at one model's size and latency (Wortsman et al.
2022, "Model soups"); an ensemble would pay for each member in both. The greedy recipe ranks the runs by
validation balanced accuracy and adds each to the soup only if the mean does not score lower, so at the
argmax a soup never scores below its best run on validation. Runs that differ only in ``--finetune-seed``
are the ingredients this is meant for; the soup then refits the decision rule like ``decide``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from toolkit.base.errors import ToolkitError
from toolkit.base.io import write_json
from toolkit.base.layout import RunLayout
from toolkit.base.paths import find_portable, portable_path
from toolkit.data.images import load_images
from toolkit.data.split import write_splits
from toolkit.model.classifier import predict
from toolkit.train.config import TrainConfig
from toolkit.train.decision import objective_score
from toolkit.train.fit import mean_weights
from toolkit.train.runs import Run, check_same_split, open_run
from toolkit.train.trainer import refit_decision

# What ingredients must share for their weights to line up and their validation scores to compare.
SHARED = ("arch", "alpha", "input_size", "resize_mode", "dropout")


def check_ingredients(runs: list[Run]) -> None:
    """Refuse runs whose weights cannot be averaged, or that were validated on different images."""
    if len(runs) < 2:
        raise ToolkitError(f"a soup needs at least two runs; got {len(runs)}")
    first = runs[0]
    for run in runs[1:]:
        for key in SHARED:
            if run.config.get(key) != first.config.get(key):
                raise ToolkitError(
                    f"{run.path} has {key} {run.config.get(key)!r} and {first.path} has {first.config.get(key)!r}: "
                    f"souped runs must share {', '.join(SHARED)}"
                )
    check_same_split(runs, "val", "a soup")


def greedy_soup(models: list, names: list[str], score) -> tuple[list[int], list[float], float]:
    """Indices kept (best first), each model's own score and the soup's; ``models[kept[0]]`` ends up the soup."""
    scores = [score(model) for model in models]
    order = sorted(range(len(models)), key=lambda index: -scores[index])
    originals = [model.get_weights() for model in models]
    soup, kept, best = models[order[0]], [order[0]], scores[order[0]]
    for index in order[1:]:
        soup.set_weights(mean_weights([originals[i] for i in [*kept, index]]))
        tried = score(soup)
        verdict = "kept" if tried >= best else "left out"
        print(f"soup: with {names[index]}, val balanced accuracy {tried:.4f} against {best:.4f}: {verdict}")
        if tried >= best:
            kept, best = [*kept, index], tried
    soup.set_weights(mean_weights([originals[i] for i in kept]))
    return kept, scores, best


def soup_runs(paths: list[Path], out: Path, force: bool = False) -> Path:
    """Average ``paths`` greedily into a new run folder ``out``, its decision rule refit on validation."""
    started = time.monotonic()
    if out.exists() and not force:
        raise ToolkitError(f"{out} already exists: pass --force to replace it")
    runs = [open_run(path) for path in paths]
    check_ingredients(runs)
    rows = runs[0].rows("val")
    images = load_images(rows["path"].tolist(), runs[0].input_size, runs[0].resize_mode, desc="loading val").images
    labels = rows["label_index"].to_numpy()

    def score(model) -> float:
        return objective_score("balanced_accuracy", labels, predict(model, images, "scoring on val").argmax(axis=1))

    models = [run.load_raw_model() for run in runs]
    names = [portable_path(path, out) for path in paths]  # as a committed state.json may name them
    kept, scores, best = greedy_soup(models, names, score)
    top = runs[kept[0]]
    work = out.with_name(f".{out.name}.souping")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        _write_unfinished_run(top, models[kept[0]], work)
        record = {
            "ingredients": names,
            "kept": [names[index] for index in kept],
            "val_balanced_accuracy": {name: round(value, 4) for name, value in zip(names, scores, strict=True)},
            "soup_val_balanced_accuracy": round(best, 4),
        }
        state = {"backend": top.metrics.get("backend"), "device": top.metrics.get("device"), "soup": record}
        write_json(RunLayout(work).state, state)
        refit_decision(work)
        write_json(RunLayout(work).state, {**state, "seconds": {"soup": time.monotonic() - started}})
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    os.replace(work, out)
    return out


def _write_unfinished_run(top: Run, soup, folder: Path) -> None:
    """The soup as a run folder before its decision rule: the top run's config, split and history."""
    config = TrainConfig.from_json(json.loads(top.files.config.read_text()))
    data = str(find_portable(config.data, top.path)) if config.data not in ("", "demo") else config.data
    write_json(RunLayout(folder).config, {**asdict(config), "data": data, "input_size": top.input_size})
    write_splits(top.table, RunLayout(folder).splits)
    shutil.copy2(top.files.history, RunLayout(folder).history)
    soup.save(RunLayout(folder).model)
