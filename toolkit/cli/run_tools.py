"""The commands on finished runs: refit the decision, soup, pack and evaluate; each one stage call.

Kept apart from :mod:`.commands` so each module stays one screenful of calls.
"""

from __future__ import annotations

import argparse

from toolkit.base.errors import ToolkitError
from toolkit.cli.quiet import load_tensorflow


def cmd_decide(args: argparse.Namespace) -> int:
    load_tensorflow(args)
    from toolkit.train.trainer import refit_decision

    run = refit_decision(args.run, args.decision, args.views)  # prints the decision it fits
    print(f"rewrote {run}: model.keras, decision.json, reference.npz, metrics.json and plots")
    return 0


def cmd_soup(args: argparse.Namespace) -> int:
    load_tensorflow(args)
    from toolkit.train.soup import soup_runs

    out = soup_runs(args.runs, args.out, args.force)  # prints each greedy step and the decision it fits
    print(f"wrote run folder {out}: the greedy soup, its decision rule refit on val (state.json names what it kept)")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    load_tensorflow(args)
    from toolkit.train.runs import pack_run

    out = pack_run(args.run, args.out, args.force)
    size = sum(path.stat().st_size for path in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.1f} MB): the float model without optimizer state, reference, metrics, decision")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    runs = args.ensemble or [args.run]
    if runs == [None]:
        raise ToolkitError("give a run with --run DIR, or several with --ensemble DIR DIR ...")
    load_tensorflow(args)
    from toolkit.train.evaluate import evaluate_runs

    metrics = evaluate_runs(runs, args.split)
    label = "ensemble of " + ", ".join(map(str, runs)) if args.ensemble else str(runs[0])
    print(f"{label}, {args.split} split ({metrics['images']} images)")
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "roc_auc_ovr_macro", "ece"):
        print(f"  {key:18s} {metrics[key]:.4f}")
    print("  recall per class: " + ", ".join(f"{c} {v['recall']:.2f}" for c, v in metrics["per_class"].items()))
    return 0
