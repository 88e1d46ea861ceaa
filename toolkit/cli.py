"""``python -m toolkit``: parses arguments and calls the stage modules; no logic of its own."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from pathlib import Path

from toolkit import __version__
from toolkit.errors import ToolkitError


def _print_splits(prepared, demo: bool) -> None:
    from toolkit.data.split import class_counts

    print(f"source: {prepared.source}")
    if demo:
        print("note: this is the embedded DEMO set of synthetic images, not dermoscopy")
    if not prepared.has_lesion_ids:
        print(
            "warning: no lesion ids in this layout; images are grouped one per lesion, so leakage cannot be ruled out"
        )
    counts = class_counts(prepared.table)
    print("\nimages per split and class:")
    print(counts.to_string())
    shares = counts.drop(columns="total").div(counts["total"], axis=0) * 100
    worst = (shares.drop(index="all") - shares.loc["all"]).abs().max().max()
    print(f"\nlargest class-share difference from the whole: {worst:.2f} percentage points")
    print(f"lesions: {prepared.table['lesion_id'].nunique()}")
    print("\naudit:")
    for line in prepared.audit.lines():
        print(f"  {line}")
    if prepared.skipped:
        print(f"\nskipped {len(prepared.skipped)} bad file(s):")
        for _, reason in prepared.skipped:
            print(f"  {reason}")


def cmd_data(args: argparse.Namespace) -> int:
    from toolkit.data.demo import ensure_demo_set
    from toolkit.data.split import prepare_splits, write_manifest

    if (args.root is None) == (not args.demo):
        raise ToolkitError("give a dataset with --root DIR, or --demo for the embedded demo set")
    prepared = prepare_splits(
        ensure_demo_set() if args.demo else args.root,
        layout=args.layout,
        val=args.val,
        test=args.test,
        seed=args.seed,
        keep_official=args.split == "official",
        skip_bad=args.skip_bad,
        check_images=not args.no_image_check,
    )
    _print_splits(prepared, args.demo)
    if args.out:
        write_manifest(prepared.table, args.out)
        print(f"\nwrote {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from toolkit.data.demo import ensure_demo_set
    from toolkit.data.pipeline import AugmentConfig
    from toolkit.train import TrainConfig, train

    if not args.resume and (args.data is None) == (not args.demo):
        raise ToolkitError("give the training data with --data DIR (or a split manifest), or --demo")
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    given.update(
        data=str(args.data or "demo"),
        input_size=args.input_size or (64 if args.demo else 0),
        augment=None if args.no_augment else AugmentConfig(),
    )
    config = TrainConfig(**given)
    out = train(
        config, args.out, resume=args.resume, force=args.force, demo_root=ensure_demo_set() if args.demo else None
    )
    print(f"wrote run folder {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from toolkit.evaluate import evaluate_runs

    runs = args.ensemble or [args.run]
    if runs == [None]:
        raise ToolkitError("give a run with --run DIR, or several with --ensemble DIR DIR ...")
    metrics = evaluate_runs(runs, args.split)
    label = "ensemble of " + ", ".join(map(str, runs)) if args.ensemble else str(runs[0])
    print(f"{label}, {args.split} split ({metrics['images']} images)")
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "roc_auc_ovr_macro", "ece"):
        print(f"  {key:18s} {metrics[key]:.4f}")
    print("  recall per class: " + ", ".join(f"{c} {v['recall']:.2f}" for c, v in metrics["per_class"].items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m toolkit", description=__doc__.split(":")[0])
    parser.add_argument("--version", action="version", version=f"toolkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="read a dataset, split it by lesion, audit it, write the split manifest")
    data.add_argument(
        "--root", "--data", dest="root", type=Path, help="HAM10000 folder, DermaMNIST npz, or class folders"
    )
    data.add_argument("--demo", action="store_true", help="use the embedded synthetic demo set")
    data.add_argument("--layout", default="auto", choices=["auto", "ham10000", "dermamnist", "folders", "manifest"])
    data.add_argument("--out", type=Path, help="write the split manifest CSV here")
    data.add_argument("--val", type=float, default=0.15, help="share of lesions for validation (default 0.15)")
    data.add_argument("--test", type=float, default=0.15, help="share of lesions for test (default 0.15)")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument(
        "--split",
        default="lesion",
        choices=["lesion", "official"],
        help="our lesion split, or the one shipped (DermaMNIST)",
    )
    data.add_argument("--skip-bad", action="store_true", help="skip missing or undecodable images and list them")
    data.add_argument("--no-image-check", action="store_true", help="do not decode every image to check it")
    data.set_defaults(run=cmd_data)

    train = commands.add_parser("train", help="two-phase transfer learning into a run folder")
    train.add_argument("--data", type=Path, help="a dataset in any layout `data` reads, or a split manifest")
    train.add_argument("--demo", action="store_true", help="train on the embedded synthetic demo set")
    train.add_argument("--arch", default="mobilenet_v2", help="mobilenet_v2, densenet121, densenet169, densenet201")
    train.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width: 0.35, 0.5, 0.75, 1.0, 1.3, 1.4")
    train.add_argument("--input-size", type=int, default=0, help="square input size (default: the backbone's)")
    train.add_argument("--weights", default="imagenet", help="imagenet, none, or a weights file")
    train.add_argument("--resize-mode", default="squash", choices=["squash", "pad"])
    train.add_argument("--boundary", default="", help="fine-tune from: block_13, block_16, conv5, or a layer count")
    train.add_argument("--epochs-head", type=int, default=3)
    train.add_argument("--epochs-finetune", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr-head", type=float, default=1e-3)
    train.add_argument("--lr-finetune", type=float, default=1e-4)
    train.add_argument("--optimizer", default="adam", choices=["adam", "adamw"])
    train.add_argument("--label-smoothing", type=float, default=0.0)
    train.add_argument("--imbalance", default="class_weight", choices=["class_weight", "oversample", "none"])
    train.add_argument("--class-weight-power", type=float, default=1.0, help="0.5 for square-root class weights")
    train.add_argument("--no-augment", action="store_true")
    train.add_argument("--limit", type=int, default=0, help="at most N images per split, stratified")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, required=True, help="run folder, e.g. runs/NAME")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    train.add_argument("--force", action="store_true", help="replace an existing run folder")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="metrics of a run, or of an ensemble of runs")
    evaluate.add_argument("--run", type=Path)
    evaluate.add_argument("--ensemble", nargs="+", type=Path, help="average the probabilities of these runs")
    evaluate.add_argument("--split", default="test", choices=["val", "test"])
    evaluate.set_defaults(run=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices are not the user's concern
    try:
        return args.run(args)
    except ToolkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
