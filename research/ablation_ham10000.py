"""What moves the numbers: the MobileNetV2 recipe with one thing changed at a time, on the same split.

The full recipe takes 3 to 4 hours on 2 CPU cores, so the ablations run a shortened version of it
(112 px, 1 head epoch, 2 fine-tuning epochs) and change one ingredient each: the BatchNorm fix,
imbalance handling, the fine-tune boundary, the input size. The decision rule needs no retraining:
``no_decision`` undoes the folded prior shift and temperature of the ``base`` run's predictions.
Float models, test split; numbers compare with each other, not with the full recipe's.

    .venv/bin/python research/ablation_ham10000.py            # writes benchmarks/results/ablation_ham10000.json
    .venv/bin/python research/ablation_ham10000.py --only base no_bn_fix

A research script, not a benchmark: it builds on the accuracy benchmark's recipes and helpers, so it
puts ``benchmarks/`` on the import path; its results go beside the benchmarks' own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from accuracy_ham10000 import RUNS
from common import RESULTS, environment, write_result
from recipes import config_for
from scoring import scores

from toolkit.base.layout import RunLayout

# Two fine-tuning epochs leave a schedule nothing to decay: a constant rate (plateau never fires) keeps it simple.
SHORT = {"input_size": 112, "epochs_head": 1, "epochs_finetune": 2, "schedule": "plateau"}
VARIANTS: dict[str, dict] = {
    "base": {},
    "no_bn_fix": {"bn_fix": False},
    "no_imbalance_handling": {"imbalance": "none", "decision": "none"},
    "shift_only": {"imbalance": "none"},  # plain cross-entropy; the decision rule's prior shift is all that is left
    "boundary_block_13": {"boundary": "block_13"},
    "input_144": {"input_size": 144},
}
RESULT = "ablation_ham10000.json"


def undo_decision(run) -> dict:
    """The base run's test predictions without the folded prior shift and temperature."""
    from scipy.special import softmax

    from toolkit.base.metrics import compute_metrics
    from toolkit.train.runs import open_run

    decision = open_run(run).decision
    with np.load(RunLayout(run).reference) as reference:
        probs, labels = reference["test_probs"], reference["test_labels"]
    logits = np.log(np.clip(probs, 1e-12, 1)) * decision["temperature"] - np.asarray(decision["shift"])
    return compute_metrics(labels, softmax(logits, axis=1))


def main() -> None:
    from toolkit.train.runs import open_run
    from toolkit.train.trainer import train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="run these variants (default: all)")
    args = parser.parse_args()
    previous = RESULTS / RESULT
    result = json.loads(previous.read_text()) if previous.exists() else {"variants": {}}
    base = replace(config_for("mobilenet_v2"), **SHORT)
    run_by = environment()
    for name in args.only or VARIANTS:
        config = replace(base, **VARIANTS[name])
        run = RUNS / "ablation" / name
        started = time.monotonic()
        train(config, run, force=True)
        metrics = json.loads(RunLayout(run).metrics.read_text())
        decision = open_run(run).decision
        result["variants"][name] = {
            "changed": VARIANTS[name],
            "train_seconds": round(time.monotonic() - started, 1),
            "val_balanced_accuracy": round(metrics["val"]["balanced_accuracy"], 4),
            "decision_tau": decision["tau"] if decision else None,
            "test": scores(metrics["test"]),
            "run_by": {key: run_by[key] for key in ("command", "date")},  # a sweep can be rerun in parts
        }
        if name == "base":
            result["variants"]["no_decision"] = {
                "changed": {"decision": "none (the base run's predictions, shift and temperature undone)"},
                "test": scores(undo_decision(run)),
            }
        result.update(run_by, base={**SHORT, "recipe": "mobilenet_v2 in benchmarks/recipes.py"})
        write_result(RESULT, result)  # after every variant: an interrupted sweep keeps what it finished
        print(f"{name}: test balanced accuracy {metrics['test']['balanced_accuracy']:.4f}")


if __name__ == "__main__":
    main()
