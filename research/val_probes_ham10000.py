"""Cheap levers tried on finished MobileNetV2 runs, scored on the validation split (where choices are made).

None of these needs training, so they are worth ruling in or out before another multi-hour run:
- test-time flips and transposes (they could be exported into the bundle as extra views);
- a uniform weight soup of the runs (one model, so it would still fit the 3 MB bundle);
- the mean of the runs' probabilities (an ensemble: n times the bundle size and latency).
Each run's folded decision rule is undone first, so the runs compare on their raw softmax: fair between
runs trained with class weights (whose rule kept no shift), not for a run that leans on its prior shift.
Each set of views is also scored after the first run's decision rule is refit on its mean probabilities,
which is what a bundle with those views would answer.
Each view is also scored alone: the run's checkpoint and decision rule were chosen on the identity view,
so the mirrored views show how much that choice flatters the run's validation scores; and again with
that rule applied, which is what the run's bundle answers on each view.

    .venv/bin/python research/val_probes_ham10000.py runs/ham10000_mobilenet_v2 runs/ham10000_mobilenet_v2_224

A research script, not a benchmark: it builds on the accuracy benchmark's recipes and helpers, so it
puts ``benchmarks/`` on the import path; its results go beside the benchmarks' own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from accuracy_ham10000 import epoch_history
from common import environment, write_result
from scoring import REPORTED

RESULT = "val_probes_ham10000.json"
VIEWS = {  # the dihedral group of a square image, as (transpose, flip rows, flip columns)
    "identity": (False, False, False),
    "flip_h": (False, False, True),
    "flip_v": (False, True, False),
    "flip_hv": (False, True, True),
    "transpose": (True, False, False),
    "transpose_h": (True, False, True),
    "transpose_v": (True, True, False),
    "transpose_hv": (True, True, True),
}
VIEW_SETS = {  # the first n views
    "1 view": list(VIEWS)[:1],
    "2 views (h flip)": list(VIEWS)[:2],
    "4 views (flips)": list(VIEWS)[:4],
    "8 views (dihedral)": list(VIEWS),
}


def view(images: np.ndarray, transpose: bool, flip_rows: bool, flip_columns: bool) -> np.ndarray:
    out = images.transpose(0, 2, 1, 3) if transpose else images
    out = out[:, ::-1] if flip_rows else out
    return np.ascontiguousarray(out[:, :, ::-1] if flip_columns else out)


def headline(labels: np.ndarray, probs: np.ndarray) -> dict:
    from toolkit.base.metrics import compute_metrics

    metrics = compute_metrics(labels, probs)
    return {key: round(metrics[key], 4) for key in REPORTED}


def after_decision(labels: np.ndarray, probs: np.ndarray, train_labels: np.ndarray, objective: str) -> dict:
    """Headline scores once a decision rule of ``objective`` is refit on ``probs`` (its shift and temperature)."""
    from toolkit.train.decision import fit_decision

    decision = fit_decision(probs, labels, train_labels, objective)
    return {"tau": decision.tau, **headline(labels, decided(probs, decision))}


def decided(probs: np.ndarray, decision) -> np.ndarray:
    """``probs`` (a raw softmax) as the model answers once ``decision``'s shift and temperature are folded in."""
    from scipy.special import softmax

    logits = np.log(np.clip(probs, 1e-12, 1.0)) + np.asarray(decision.shift)
    return softmax(logits / decision.temperature, axis=1)


def main() -> None:
    from toolkit.data.images import load_images
    from toolkit.model.classifier import predict
    from toolkit.train.decision import Decision
    from toolkit.train.fit import mean_weights
    from toolkit.train.runs import check_same_split, open_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished MobileNetV2 run folders on the same split")
    parser.add_argument("--soup-size", type=int, help="input size for the weight soup (default: the first run's)")
    parser.add_argument("--out", default=RESULT, help=f"result file name in benchmarks/results/ (default {RESULT})")
    args = parser.parse_args()
    runs = [open_run(path) for path in args.runs]
    check_same_split(runs, "val", "the probe")
    rows = runs[0].rows("val")
    labels = rows["label_index"].to_numpy()
    images = {}  # by input size: each run is scored at its own

    def val_images(size: int) -> np.ndarray:
        if size not in images:
            images[size] = load_images(rows["path"].tolist(), size, runs[0].resize_mode).images
        return images[size]

    result: dict = {"val_images": len(labels), "runs": {}}
    probs, models = {}, []
    for run in runs:
        model = run.load_raw_model()
        models.append(model)
        probs[run.name] = predict(model, val_images(run.input_size), f"{run.name} on val")
        state = json.loads(run.files.state.read_text())
        result["runs"][run.name] = {
            "input_size": run.input_size,
            "schedule": run.config["schedule"],
            **headline(labels, probs[run.name]),
            "finetune_seconds": round(state["seconds"]["finetune"]),
            "weight_average": state.get("average"),
            "history": epoch_history(run.path),
        }

    first = runs[0].name
    view_probs = {"identity": probs[first]}
    for name, flags in list(VIEWS.items())[1:]:
        view_probs[name] = predict(models[0], view(val_images(runs[0].input_size), *flags), f"{first}, {name}")
    result["test_time_views"] = {
        "run": first,
        "each_view": {name: headline(labels, p) for name, p in view_probs.items()},
    }
    if runs[0].decision:  # what the bundle answers on each view: the rule the run fitted on the identity view
        rule = Decision(**runs[0].decision)
        result["test_time_views"]["each_view_after_own_decision"] = {
            name: headline(labels, decided(p, rule)) for name, p in view_probs.items()
        }
    train_labels, objective = runs[0].rows("train")["label_index"].to_numpy(), runs[0].config["decision"]
    for label, views in VIEW_SETS.items():
        mean = np.mean([view_probs[v] for v in views], axis=0)
        result["test_time_views"][label] = {
            **headline(labels, mean),
            f"after_{objective}_decision": after_decision(labels, mean, train_labels, objective),
        }
    if len(runs) > 1:
        result["probability_ensemble"] = headline(labels, np.mean(list(probs.values()), axis=0))
        size = args.soup_size or runs[0].input_size
        models[0].set_weights(mean_weights([model.get_weights() for model in models]))
        soup_probs = predict(models[0], val_images(size), "weight soup on val")
        result["uniform_weight_soup"] = {"input_size": size, **headline(labels, soup_probs)}
    print(json.dumps(result, indent=2))
    path = write_result(args.out, {**environment(), **result})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
